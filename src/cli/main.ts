/**
 * The `lancet` CLI. Commands take injected I/O and return an exit code, so they are testable as
 * functions; this is the only module that prints.
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { readFileSync } from "node:fs";
import { addColumns, alterColumns, backfill, columnStatus, isBackfillError, listErrors, refragment, stderrLogger } from "../index.ts";
import type { BackfillOptions, BackfillProgress, JobRecord } from "../index.ts";
import { jobsCommand, recordJson } from "./jobs.ts";
import { flagOrEnv, fmt, intOpt, opt, report, UsageError, type CliIo } from "./shared.ts";

export type { CliIo } from "./shared.ts";
import { ProgressView } from "./progress.ts";
import { workerCommand, workersCommand } from "./worker.ts";


const USAGE = `lancet — computed columns for LanceDB tables

Usage:
  lancet add-column   --db DIR --table NAME --column COL (--udf MODULE#EXPORT | --sql EXPR)
  lancet alter-column --db DIR --table NAME --column COL --udf MODULE#EXPORT
  lancet backfill     --db DIR --table NAME --column COL [options]
  lancet status       --db DIR --table NAME [--json]
  lancet jobs         --db DIR [--table NAME] [--status S] [--json]
  lancet jobs show    ID --db DIR [--json]
  lancet jobs cancel  ID --db DIR [--json]
  lancet jobs watch   ID --db DIR
  lancet refragment   --db DIR --table NAME --max-rows-per-fragment N [--conflict-retries N] [--force] [--json]
  lancet errors       --db DIR [--job ID] [--table NAME] [--column COL] [--json]
  lancet worker       --redis URL [--queue NAME] [--concurrency N] [--resources cpu=4,gpu=1,memory=MiB]
                      [--metrics-port P] [--lock-duration-ms N] [--stalled-interval-ms N] [--max-stalled-count N]
                      [--exit-when-idle-ms N] [--allow-db DIR]... [--pass-env NAME[,NAME]]...
  lancet workers      --redis URL [--queue NAME] [--json]

Backfill options:
  --concurrency N                 worker processes (default: min(8, cores))
  --intra-applier-concurrency N   UDF calls in flight per worker (async UDFs; default 1)
  --checkpoint-size N             rows per checkpoint batch (default max(100, 8 × intra), growing adaptively)
  --max-checkpoint-size N         upper bound of adaptive checkpoint batches (default 65536)
  --task-size N                   rows per task (default: rows / (concurrency × 2))
  --commit-granularity N          fragments per commit (default min(64, max(1, fragments / 20)))
  --writer-concurrency N          fragment writers at once (default min(4, concurrency))
  --status-interval-ms N          how often the job record is saved / heartbeats (default 2000)
  --error-policy P                fail | skip | retry:N (overrides the UDF's errorPolicy)
  --commit-mode M                 auto | graft | merge (default auto: graft where safe)
  --task-timeout-ms N             kill a worker that finishes no batch for N ms (default 1800000)
  --worker-memory-mb N            heap limit of each worker process (default: the UDF's memory hint)
  --where SQL                     recompute rows matching SQL; other rows keep their values
  --num-frags N                   only the first N fragments (a pilot run)
  --max-task-attempts N           attempts per task when its worker dies (default 3)
  --env KEY=VALUE                 environment variable for the UDF's worker processes (repeatable)
  --redis URL                     run tasks on \`lancet worker\`s through a BullMQ queue on Redis
  --queue NAME                    base queue name with --redis (default lancet; tasks go to NAME-cpu / NAME-gpu)
  --admission-timeout-ms N        with --redis: wait this long for a live worker that can run the UDF (default 600000)
  --plan                          print the plan and run nothing
  --json                          machine-readable output: the last stdout line is a JSON object
  --verbose                       log to stderr

--redis and --queue default to the environment variables LANCET_REDIS_URL and LANCET_QUEUE.

Other:
  lancet --help | --version
`;




const COMMON: ParseArgsConfig["options"] = {
  sql: { type: "string" },
  db: { type: "string" },
  table: { type: "string" },
  column: { type: "string" },
  udf: { type: "string" },
  json: { type: "boolean" },
  verbose: { type: "boolean" },
};

const BACKFILL: ParseArgsConfig["options"] = {
  ...COMMON,
  concurrency: { type: "string" },
  "intra-applier-concurrency": { type: "string" },
  "checkpoint-size": { type: "string" },
  "max-checkpoint-size": { type: "string" },
  "task-size": { type: "string" },
  "commit-granularity": { type: "string" },
  where: { type: "string" },
  "num-frags": { type: "string" },
  "writer-concurrency": { type: "string" },
  "status-interval-ms": { type: "string" },
  "error-policy": { type: "string" },
  "commit-mode": { type: "string" },
  "task-timeout-ms": { type: "string" },
  "worker-memory-mb": { type: "string" },
  "max-task-attempts": { type: "string" },
  env: { type: "string", multiple: true },
  redis: { type: "string" },
  queue: { type: "string" },
  "admission-timeout-ms": { type: "string" },
  plan: { type: "boolean" },
};

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string };
  return pkg.version;
}


/** Runs the CLI; returns the process exit code (0 ok, 1 failed, 2 usage). */
export async function run(argv: readonly string[], io: CliIo): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === "--help" || command === "-h" || command === "help") {
    io.stdout.write(USAGE);
    return command === undefined ? 2 : 0;
  }
  if (command === "--version" || command === "-v") {
    io.stdout.write(`${version()}\n`);
    return 0;
  }
  let json = false;
  try {
    switch (command) {
      case "add-column":
      case "alter-column": {
        const values = parseArgs({ args: [...rest], options: COMMON, strict: true }).values as Record<string, unknown>;
        json = values.json === true;
        const ref = { db: opt(values, "db"), table: opt(values, "table") };
        const column = opt(values, "column");
        if (typeof values.sql === "string" && command === "add-column") {
          const out = await addColumns(ref, { [column]: { sql: values.sql } });
          for (const { binding } of out) io.stdout.write(json ? JSON.stringify({ status: "ok", column, binding }) + "\n" : `added SQL column ${column} = ${binding.sql} (${binding.dataType}), computed by LanceDB\n`);
          return 0;
        }
        const cols = { [column]: opt(values, "udf") };
        const out = command === "add-column" ? await addColumns(ref, cols) : await alterColumns(ref, cols);
        for (const { column, binding } of out) {
          if (json) io.stdout.write(JSON.stringify({ status: "ok", column, binding }) + "\n");
          else io.stdout.write(`${command === "add-column" ? "added" : "rebound"} column ${column} → ${binding.module}#${binding.exportName} (${binding.dataType}, version ${binding.version})\n`);
        }
        return 0;
      }
      case "status": {
        const values = parseArgs({ args: [...rest], options: COMMON, strict: true }).values as Record<string, unknown>;
        json = values.json === true;
        const cols = await columnStatus({ db: opt(values, "db"), table: opt(values, "table") });
        if (json) {
          io.stdout.write(JSON.stringify(cols) + "\n");
          return 0;
        }
        if (cols.length === 0) io.stdout.write(`table ${String(values.table)} has no UDF columns\n`);
        for (const c of cols) {
          const note = { current: "", changed: "  [module changed on disk since binding; alter-column to use it]", missing: "  [module file missing]", unbundleable: "  [module on disk no longer bundles]", sql: `  [SQL: ${c.binding.sql}, computed by LanceDB]` }[c.moduleState];
          io.stdout.write(
            `${c.column}  ${c.binding.dataType}  ${c.binding.module}#${c.binding.exportName}  version ${c.binding.version}  filled ${fmt(c.filledRows)} / ${fmt(c.totalRows)}${note}\n`,
          );
        }
        return 0;
      }
      case "backfill":
        return await backfillCommand(rest, io);
      case "jobs":
        return await jobsCommand(rest, io);
      case "worker":
        return await workerCommand(rest, io);
      case "workers":
        return await workersCommand(rest, io);
      case "errors": {
        const values = parseArgs({ args: [...rest], options: { db: { type: "string" }, job: { type: "string" }, table: { type: "string" }, column: { type: "string" }, json: { type: "boolean" } }, strict: true }).values as Record<string, unknown>;
        json = values.json === true;
        const filter = { ...(typeof values.job === "string" ? { jobId: values.job } : {}), ...(typeof values.table === "string" ? { table: values.table } : {}), ...(typeof values.column === "string" ? { column: values.column } : {}) };
        const errs = await listErrors(opt(values, "db"), filter);
        if (json) io.stdout.write(JSON.stringify(errs) + "\n");
        else if (errs.length === 0) io.stdout.write("no errors\n");
        else for (const e of errs) io.stdout.write(`${e.at}  job ${e.jobId}  ${e.table}.${e.column}  fragment ${e.fragment} row ${e.rowOffset} (address ${e.rowAddress})  attempt ${e.attempt}  ${e.name}: ${e.message}\n`);
        return 0;
      }
      case "refragment": {
        const values = parseArgs({ args: [...rest], options: { db: { type: "string" }, table: { type: "string" }, "max-rows-per-fragment": { type: "string" }, "conflict-retries": { type: "string" }, force: { type: "boolean" }, json: { type: "boolean" } }, strict: true }).values as Record<string, unknown>;
        json = values.json === true;
        const max = intOpt(values, "max-rows-per-fragment");
        if (max === undefined) throw new UsageError("--max-rows-per-fragment is required");
        const retries = intOpt(values, "conflict-retries");
        const r = await refragment({ db: opt(values, "db"), table: opt(values, "table") }, { maxRowsPerFragment: max, force: values.force === true, ...(retries === undefined ? {} : { conflictRetries: retries }) });
        if (json) io.stdout.write(JSON.stringify({ status: "ok", ...r }) + "\n");
        else {
          const notes = [r.resumed ? "resumed an interrupted run" : "", r.conflicts > 0 ? `restarted ${r.conflicts}× after other writers committed` : ""].filter(Boolean);
          io.stdout.write(
            `refragmented ${r.table}: ${fmt(r.rows)} rows, ${r.fragmentsBefore} → ${r.fragmentsAfter} fragments (version ${r.fromVersion} → ${r.swapVersion}` +
              `${r.indexes.length > 0 ? `; ${r.indexes.length} index(es) rebuilt: ${r.indexes.join(", ")} → version ${r.toVersion}` : ""})${notes.length > 0 ? ` — ${notes.join("; ")}` : ""}\n`,
          );
        }
        return 0;
      }
      default:
        throw new UsageError(`unknown command ${JSON.stringify(command)}`);
    }
  } catch (e) {
    return report(e, io, json);
  }
}


async function backfillCommand(args: readonly string[], io: CliIo): Promise<number> {
  let json = false;
  let last: BackfillProgress | undefined;
  try {
    const values = parseArgs({ args: [...args], options: BACKFILL, strict: true }).values as Record<string, unknown>;
    json = values.json === true;
    const ref = { db: opt(values, "db"), table: opt(values, "table") };
    const column = opt(values, "column");
    const view = new ProgressView(io, json || values.plan === true ? "none" : io.isTTY ? "bar" : "lines");
    const options: BackfillOptions = {
      onProgress: (p) => {
        last = p;
        view.update(p);
      },
    };
    const ints: [string, keyof BackfillOptions][] = [
      ["concurrency", "concurrency"],
      ["intra-applier-concurrency", "intraApplierConcurrency"],
      ["checkpoint-size", "checkpointSize"],
      ["max-checkpoint-size", "maxCheckpointSize"],
      ["task-size", "taskSize"],
      ["commit-granularity", "commitGranularity"],
      ["num-frags", "numFrags"],
      ["writer-concurrency", "writerConcurrency"],
      ["status-interval-ms", "statusIntervalMs"],
      ["task-timeout-ms", "taskTimeoutMs"],
      ["worker-memory-mb", "workerMemoryMb"],
      ["max-task-attempts", "maxTaskAttempts"],
    ];
    for (const [flag, key] of ints) {
      const v = intOpt(values, flag);
      if (v !== undefined) (options as Record<string, unknown>)[key] = v;
    }
    if (typeof values.where === "string") options.where = values.where;
    if (typeof values["error-policy"] === "string") options.errorPolicy = values["error-policy"];
    if (typeof values["commit-mode"] === "string") options.commitMode = values["commit-mode"] as "auto";
    if (values.plan === true) options.planOnly = true;
    if (Array.isArray(values.env)) {
      const env: Record<string, string> = {};
      for (const kv of values.env as string[]) {
        const i = kv.indexOf("=");
        if (i <= 0) throw new UsageError(`--env ${JSON.stringify(kv)} must be KEY=VALUE`);
        env[kv.slice(0, i)] = kv.slice(i + 1);
      }
      options.env = env;
    }
    const redis = flagOrEnv(values, "redis", "LANCET_REDIS_URL");
    if (redis !== undefined && redis !== "") {
      const admission = intOpt(values, "admission-timeout-ms");
      const queue = flagOrEnv(values, "queue", "LANCET_QUEUE");
      options.executor = { redis, ...(queue ? { queue } : {}), ...(admission !== undefined ? { admissionTimeoutMs: admission } : {}) };
    } else if (values.queue !== undefined || values["admission-timeout-ms"] !== undefined) {
      throw new UsageError("--queue and --admission-timeout-ms need --redis URL (or LANCET_REDIS_URL)");
    }
    if (values.verbose === true) options.logger = stderrLogger("debug");
    else options.logger = stderrLogger("warn");
    const r = await backfill(ref, column, options);
    view.done();
    if (r.metrics.rowsSkipped > 0) {
      io.stderr.write(`lancet: warning: ${r.metrics.rowsSkipped} row(s) were skipped by the error policy and left null; see \`lancet errors --db ${ref.db} --job ${r.id}\`. A re-run retries them.\n`);
    }
    if (options.planOnly) printPlan(r, io, json);
    else printSummary(r, io, json);
    return 0;
  } catch (e) {
    const jobId = (e as { context?: { jobId?: string } })?.context?.jobId;
    return report(e, io, json, {
      ...(jobId !== undefined ? { id: jobId, jobId } : {}),
      ...(isBackfillError(e, "CANCELLED") ? { status: "cancelled" } : {}),
      rowsComputed: last?.rowsComputed ?? 0,
      rowsCheckpointed: last?.rowsCheckpointed ?? 0,
      rowsCommitted: last?.rowsCommitted ?? 0,
      fragmentsCommitted: last?.fragmentsCommitted ?? 0,
    });
  }
}

function printPlan(r: JobRecord, io: CliIo, json: boolean): void {
  const p = r.plan!;
  if (json) {
    io.stdout.write(JSON.stringify({ ...recordJson(r), status: "planned", plan: p }) + "\n");
    return;
  }
  io.stdout.write(
    `plan for ${r.table}.${r.column} at version ${p.readVersion} (UDF version ${r.udfVersion}):\n` +
      `  selection: ${p.selection}\n` +
      `  fragments: ${p.fragmentsToWrite} to write, ${p.fragmentsDone} already complete, ${p.fragmentsDeferred} deferred by --num-frags\n` +
      `  tasks: ${p.tasks} of up to ${fmt(p.taskSize)} rows; commit every ${p.commitGranularity} fragment(s)\n` +
      `  rows to compute: up to ${fmt(p.rowsPlanned)}\n`,
  );
  for (const f of p.fragments) io.stdout.write(`    fragment ${f.id}: ${fmt(f.liveRows)} rows, ${fmt(f.rowsToCompute)} to compute in ${f.tasks} task(s), selection ${f.selection}\n`);
}

function printSummary(r: JobRecord, io: CliIo, json: boolean): void {
  if (json) {
    io.stdout.write(JSON.stringify(recordJson(r)) + "\n");
    return;
  }
  const m = r.metrics;
  const secs = m.elapsedMs / 1000;
  io.stdout.write(
    `backfill of ${r.table}.${r.column} finished in ${secs.toFixed(1)} s (job ${r.id})\n` +
      `  rows computed ${fmt(m.rowsComputed)} (${fmt(m.rowsPerSec)} rows/s), committed ${fmt(m.rowsCommitted)} in ${m.commits} commit(s) over ${m.fragmentsCommitted} fragment(s)\n` +
      `  table version ${r.plan?.readVersion} → latest; fragments already complete: ${r.plan?.fragmentsDone ?? 0}` +
      (m.workerCrashes > 0 ? `; worker crashes survived: ${m.workerCrashes}` : "") +
      `\n  time in UDF ${(m.udfMs / 1000).toFixed(1)} s, reads ${(m.readMs / 1000).toFixed(1)} s, checkpoints ${(m.checkpointMs / 1000).toFixed(1)} s (summed over workers), writes ${(m.writeMs / 1000).toFixed(1)} s, commits ${(m.commitMs / 1000).toFixed(1)} s\n` +
      (r.diagnosis && r.diagnosis.bound !== "none" ? `  diagnosis: ${r.diagnosis.summary}${r.diagnosis.hint ? ` — ${r.diagnosis.hint}` : ""}\n` : ""),
  );
}
