/** `lancet jobs …`: list, show, cancel and watch jobs from any process. */
import { cancelJob, getJob, listJobs } from "../index.ts";
import type { JobRecord, JobStatus } from "../index.ts";
import { formatShares } from "../jobs/diagnose.ts";
import { FINAL_STATUSES } from "../jobs/record.ts";
import { DB, STORAGE_OPTION, flagText, formatHelp, intOpt, JSON_FLAG, parseFlags, report, suggest, TABLE, UsageError, type CliIo, type CommandSpec } from "./shared.ts";
import { ProgressView } from "./progress.ts";

const STATUSES: JobStatus[] = ["pending", "running", "finished", "failed", "cancelled"];

const SHOW: CommandSpec = {
  name: "jobs show",
  summary: "print one job: status, options, plan, metrics, diagnosis, error and events",
  synopsis: "ID --db DIR [--json]",
  positionals: ["ID"],
  flags: [DB, STORAGE_OPTION, { ...JSON_FLAG, help: "print the job record as getJob() returns it" }],
  example: "jobs show 3f1c… --db ./data",
};

const CANCEL: CommandSpec = {
  name: "jobs cancel",
  summary: "ask a running job (in any process) to stop, and wait until it has; exit 0 when it ended cancelled",
  synopsis: "ID --db DIR [--timeout-ms N] [--json]",
  positionals: ["ID"],
  flags: [DB, STORAGE_OPTION, { name: "timeout-ms", type: "string", value: "N", integer: true, option: "timeoutMs", help: "how long to wait for the job to stop", default: "60000" }, { ...JSON_FLAG, help: "print the job record once it has stopped" }],
  example: "jobs cancel 3f1c… --db ./data",
};

const WATCH: CommandSpec = {
  name: "jobs watch",
  summary: "follow a job's progress live until it ends; exit 0 when it finished",
  synopsis: "ID --db DIR",
  positionals: ["ID"],
  flags: [DB],
  example: "jobs watch 3f1c… --db ./data",
};

/** `jobs show`, `jobs cancel`, `jobs watch`. */
export const JOBS_SUBCOMMANDS: readonly CommandSpec[] = [SHOW, CANCEL, WATCH];

/** `jobs` (also `jobs list`): the job list; its help lists the subcommands too. */
export const JOBS: CommandSpec = {
  name: "jobs",
  summary: "list jobs, newest first",
  synopsis: "--db DIR [--table NAME] [--status S] [--json]",
  flags: [
    DB,
    STORAGE_OPTION,
    { ...TABLE, required: false, help: "only this table's jobs" },
    { name: "status", type: "string", value: "S", help: `only jobs in this state: ${STATUSES.join(" | ")}` },
    { ...JSON_FLAG, help: "print a JSON array of job records, as listJobs() returns them" },
  ],
  subcommands: JOBS_SUBCOMMANDS,
  example: "jobs --db ./data --status running",
};

function fmtMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function statusText(r: JobRecord): string {
  return r.abandoned ? "failed (abandoned)" : r.status;
}

/** A job record as `lancet jobs show` prints it. */
export function formatJob(r: JobRecord): string {
  const m = r.metrics;
  const lines = [
    `job ${r.id}: ${statusText(r)}`,
    r.kind === "refresh"
      ? `  refresh of view ${r.table}${r.refresh ? ` (source ${r.refresh.source} version ${r.refresh.sourceVersion}): ${r.refresh.rowsAdded} added, ${r.refresh.rowsDeleted} removed, ${r.refresh.rowsUpdated} updated${r.refresh.parents ? ` (parents: ${r.refresh.parents.added} added, ${r.refresh.parents.deleted} removed, ${r.refresh.parents.updated} changed; expansion job ${r.refresh.jobId ?? "none"})` : ""}${r.refresh.partitions ? ` (${r.refresh.skipped ? "skipped: nothing changed" : `${r.refresh.partitions.computed} of ${r.refresh.partitions.total} partition(s) computed by job ${r.refresh.jobId ?? "none"}`})` : ""}; column jobs ${r.refresh.columnJobs.map((j) => `${j.column} ${j.jobId} (${j.status})`).join(", ") || "none"}` : ""}`
      : r.kind === "chunk" || r.kind === "udtf"
        ? `  ${r.kind === "chunk" ? "expansion of source rows into chunk view" : "partitions of UDTF view"} ${r.table} by ${r.kind === "chunk" ? "chunker" : "UDTF"} ${r.binding ? `${r.binding.module}#${r.binding.exportName}` : "?"} version ${r.udfVersion ?? "?"}`
        : `  ${r.kind} of ${r.table}.${r.column}, UDF ${r.binding ? `${r.binding.module}#${r.binding.exportName}` : "?"} version ${r.udfVersion ?? "?"}`,
    `  launched by pid ${r.pid} on ${r.host}; created ${r.createdAt}, started ${r.startedAt ?? "-"}, finished ${r.finishedAt ?? "-"}, last heartbeat ${r.heartbeatAt}`,
    `  options ${JSON.stringify(r.options)}`,
  ];
  if (r.plan) lines.push(`  plan: version ${r.plan.readVersion}, ${r.plan.fragmentsToWrite} fragment(s) to write, ${r.plan.tasks} task(s), up to ${r.plan.rowsPlanned} rows; ${r.plan.selection}`);
  lines.push(
    `  rows: planned ${m.rowsPlanned}, computed ${m.rowsComputed}, checkpointed ${m.rowsCheckpointed}, committed ${m.rowsCommitted} (${m.rowsPerSec} rows/s)`,
    `  fragments: planned ${m.fragmentsPlanned}, written ${m.fragmentsWritten}, committed ${m.fragmentsCommitted}; tasks ${m.tasksDone}/${m.tasksTotal}; commits ${m.commits} (retries ${m.commitRetries}); worker crashes ${m.workerCrashes}`,
    `  time: udf ${fmtMs(m.udfMs)} (cpu ${fmtMs(m.udfCpuMs)}), read ${fmtMs(m.readMs)}, checkpoint ${fmtMs(m.checkpointMs)} [summed over workers]; write ${fmtMs(m.writeMs)}, commit ${fmtMs(m.commitMs)}; elapsed ${fmtMs(m.elapsedMs)}`,
  );
  if (r.diagnosis) {
    lines.push(`  diagnosis: ${flagText(r.diagnosis.summary)}${r.diagnosis.hint ? ` — ${flagText(r.diagnosis.hint)}` : ""}`);
    lines.push(`  critical path: ${formatShares(r.diagnosis)}`);
  }
  if (r.error) lines.push(`  error ${r.error.code ?? r.error.name}: ${r.error.message}`);
  lines.push("  events:");
  for (const e of r.events) lines.push(`    ${e.at}  ${e.type.padEnd(16)} ${e.message}`);
  return lines.join("\n") + "\n";
}

export async function jobsCommand(args: readonly string[], io: CliIo): Promise<number> {
  const json = args.includes("--json");
  let spec: CommandSpec = JOBS;
  try {
    const first = args[0];
    let rest = args;
    if (first !== undefined && !first.startsWith("-")) {
      const sub = JOBS_SUBCOMMANDS.find((s) => s.name === `jobs ${first}`);
      if (sub) spec = sub;
      else if (first !== "list") {
        const near = suggest(first, ["list", ...JOBS_SUBCOMMANDS.map((s) => s.name.slice("jobs ".length))]);
        throw new UsageError(`unknown jobs command ${JSON.stringify(first)}${near ? `; did you mean ${near}?` : "; use list, show, cancel or watch"}`, "jobs");
      }
      rest = args.slice(1);
    }
    const { values: v, positionals, help } = parseFlags(spec, rest);
    if (help) {
      io.stdout.write(formatHelp(spec));
      return 0;
    }
    const db = v.db as string;
    switch (spec) {
      case JOBS: {
        const status = v.status as string | undefined;
        if (status !== undefined && !STATUSES.includes(status as JobStatus)) {
          const near = suggest(status, STATUSES);
          throw new UsageError(`--status must be one of ${STATUSES.join(", ")} (got ${JSON.stringify(status)})${near ? `; did you mean ${near}?` : ""}`, "jobs");
        }
        const jobs = await listJobs(db, { ...(typeof v.table === "string" ? { table: v.table } : {}), ...(status ? { status: status as JobStatus } : {}) });
        if (v.json === true) {
          io.stdout.write(JSON.stringify(jobs) + "\n");
          return 0;
        }
        if (jobs.length === 0) io.stdout.write("no jobs\n");
        for (const j of jobs) {
          io.stdout.write(`${j.id}  ${statusText(j).padEnd(18)} ${`${j.table}.${j.column}`.padEnd(24)} computed ${String(j.metrics.rowsComputed).padStart(9)}  committed ${String(j.metrics.rowsCommitted).padStart(9)}  ${j.createdAt}\n`);
        }
        return 0;
      }
      case SHOW: {
        const r = await getJob(db, positionals[0]!);
        io.stdout.write(v.json === true ? JSON.stringify(r) + "\n" : formatJob(r));
        return 0;
      }
      case CANCEL: {
        const id = positionals[0]!;
        const timeout = intOpt(v, "timeout-ms", CANCEL.name);
        const r = await cancelJob(db, id, timeout === undefined ? {} : { timeoutMs: timeout });
        if (v.json === true) io.stdout.write(JSON.stringify(r) + "\n");
        else io.stdout.write(`job ${id}: ${statusText(r)} (${r.metrics.fragmentsCommitted} fragment(s) committed; a later backfill resumes the rest)\n`);
        return r.status === "cancelled" ? 0 : 1;
      }
      default: {
        const id = positionals[0]!;
        const view = new ProgressView(io, io.isTTY ? "bar" : "lines");
        for (;;) {
          const r = await getJob(db, id);
          view.update({ ...r.metrics, phase: r.status === "pending" ? "planning" : r.status === "running" ? "running" : r.status, status: r.status, diagnosis: r.diagnosis }, true);
          if (FINAL_STATUSES.has(r.status)) {
            view.done();
            io.stdout.write(`job ${id}: ${statusText(r)}\n`);
            return r.status === "finished" ? 0 : 1;
          }
          await new Promise((res) => setTimeout(res, 1000));
        }
      }
    }
  } catch (e) {
    return report(e, io, { json, spec });
  }
}
