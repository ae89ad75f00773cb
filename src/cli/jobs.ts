/** `lancet jobs …`: list, show, cancel and watch jobs from any process. */
import { parseArgs } from "node:util";
import { cancelJob, getJob, listJobs } from "../index.ts";
import type { JobRecord, JobStatus } from "../index.ts";
import { formatShares } from "../jobs/diagnose.ts";
import { FINAL_STATUSES } from "../jobs/record.ts";
import { opt, report, UsageError, type CliIo } from "./shared.ts";
import { ProgressView } from "./progress.ts";

const STATUSES: JobStatus[] = ["pending", "running", "finished", "failed", "cancelled"];

/** A record as one flat JSON object: the metrics at the top level (`rowsComputed`, …), `id` and `jobId` both set. */
export function recordJson(r: JobRecord): Record<string, unknown> {
  const { metrics, plan, events: _e, ...rest } = r;
  return { ...rest, jobId: r.id, ...metrics, plan: plan ? { ...plan, fragments: undefined } : null };
}

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
    `  ${r.kind} of ${r.table}.${r.column}, UDF ${r.binding ? `${r.binding.module}#${r.binding.exportName}` : "?"} version ${r.udfVersion ?? "?"}`,
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
    lines.push(`  diagnosis: ${r.diagnosis.summary}${r.diagnosis.hint ? ` — ${r.diagnosis.hint}` : ""}`);
    lines.push(`  critical path: ${formatShares(r.diagnosis)}`);
  }
  if (r.error) lines.push(`  error ${r.error.code ?? r.error.name}: ${r.error.message}`);
  lines.push("  events:");
  for (const e of r.events) lines.push(`    ${e.at}  ${e.type.padEnd(16)} ${e.message}`);
  return lines.join("\n") + "\n";
}

export async function jobsCommand(args: readonly string[], io: CliIo): Promise<number> {
  let json = false;
  try {
    const sub = args[0] !== undefined && !args[0].startsWith("-") ? args[0] : "list";
    const rest = sub === "list" && (args[0] === undefined || args[0].startsWith("-")) ? args : args.slice(1);
    const { values, positionals } = parseArgs({
      args: [...rest],
      options: { db: { type: "string" }, table: { type: "string" }, status: { type: "string" }, json: { type: "boolean" }, "timeout-ms": { type: "string" } },
      allowPositionals: true,
      strict: true,
    });
    const v = values as Record<string, unknown>;
    json = v.json === true;
    const db = opt(v, "db");
    switch (sub) {
      case "list": {
        const status = v.status as string | undefined;
        if (status !== undefined && !STATUSES.includes(status as JobStatus)) throw new UsageError(`--status must be one of ${STATUSES.join(", ")} (got ${JSON.stringify(status)})`);
        const jobs = await listJobs(db, { ...(typeof v.table === "string" ? { table: v.table } : {}), ...(status ? { status: status as JobStatus } : {}) });
        if (json) {
          io.stdout.write(JSON.stringify(jobs.map(recordJson)) + "\n");
          return 0;
        }
        if (jobs.length === 0) io.stdout.write("no jobs\n");
        for (const j of jobs) {
          io.stdout.write(`${j.id}  ${statusText(j).padEnd(18)} ${`${j.table}.${j.column}`.padEnd(24)} computed ${String(j.metrics.rowsComputed).padStart(9)}  committed ${String(j.metrics.rowsCommitted).padStart(9)}  ${j.createdAt}\n`);
        }
        return 0;
      }
      case "show": {
        const id = positionals[0];
        if (!id) throw new UsageError("jobs show needs a job id");
        const r = await getJob(db, id);
        io.stdout.write(json ? JSON.stringify({ ...recordJson(r), events: r.events }) + "\n" : formatJob(r));
        return 0;
      }
      case "cancel": {
        const id = positionals[0];
        if (!id) throw new UsageError("jobs cancel needs a job id");
        const timeout = v["timeout-ms"] === undefined ? undefined : Number(v["timeout-ms"]);
        const r = await cancelJob(db, id, timeout === undefined ? {} : { timeoutMs: timeout });
        if (json) io.stdout.write(JSON.stringify(recordJson(r)) + "\n");
        else io.stdout.write(`job ${id}: ${statusText(r)} (${r.metrics.fragmentsCommitted} fragment(s) committed; a later backfill resumes the rest)\n`);
        return r.status === "cancelled" ? 0 : 1;
      }
      case "watch": {
        const id = positionals[0];
        if (!id) throw new UsageError("jobs watch needs a job id");
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
      default:
        throw new UsageError(`unknown jobs command ${JSON.stringify(sub)}; use list, show, cancel or watch`);
    }
  } catch (e) {
    return report(e, io, json);
  }
}
