/**
 * A view refresh is a job of kind `refresh`: a record in the jobs table (`lancet jobs`, `jobs show`,
 * `jobs cancel` from any process), events and progress like a backfill's. It runs {@link syncView}
 * (rows in step with the source) and then a backfill of each UDF column of the view, which computes
 * exactly the rows the sync left NULL (added and changed rows) — or every row of a column whose UDF
 * version changed; each of those is a backfill job of its own, named in the refresh's record. Both
 * halves are idempotent, so a refresh that died is finished by running it again. A refresh holds the
 * view's refresh lock throughout: two refreshes of one view never run at once.
 */
import { randomUUID } from "node:crypto";
import { CancelledError, isBackfillError } from "../errors.ts";
import { redactRedisUrl } from "../exec/redis-url.ts";
import { backfillAsync } from "../jobs/backfill.ts";
import { BackfillJob, JobController } from "../jobs/job.ts";
import type { JobMetrics, JobStatus, RefreshSummary } from "../jobs/record.ts";
import { JobsTable } from "../jobs/store.ts";
import { silentLogger } from "../log.ts";
import type { BackfillOptions } from "../options.ts";
import { resolveTable } from "../table.ts";
import { BINDING_KEY } from "../udf/binding.ts";
import { syncViewLocked, withViewLock } from "./sync.ts";
import { syncChunkView, type ChunkSyncResult } from "./chunk.ts";
import { syncUdtfView, type UdtfSyncResult } from "./udtf.ts";
import { resolveBackfillOptions } from "../options.ts";
import { ConfigError } from "../errors.ts";
import { readView } from "./view.ts";
import { connectDb } from "../storage/location.ts";

/** Options of {@link refreshView}: the source version, and the backfill knobs that apply to a view. */
export interface RefreshViewOptions
  extends Pick<BackfillOptions, "concurrency" | "intraApplierConcurrency" | "checkpointSize" | "commitGranularity" | "errorPolicy" | "executor" | "logger" | "env" | "statusIntervalMs" | "onProgress"> {
  /** Source version to refresh to, forwards or backwards. @default the source's latest version */
  srcVersion?: number;
  /** Compare every row of the source and the view, not only the rows changed since the last refresh. @default false */
  full?: boolean;
  /** Chunk views: source rows (parents) per work item. @default 1024 */
  sourceTaskSize?: number;
  /** Chunk views: children a worker buffers before appending them to the view. @default 65,536 */
  maxRowsPerFragment?: number;
}

/** What {@link refreshView} did. */
export interface RefreshViewResult {
  readonly status: JobStatus;
  /** The refresh job's id (its record is in the jobs table: `lancet jobs show ID`). */
  readonly jobId: string;
  readonly sourceVersion: number;
  readonly rowsAdded: number;
  readonly rowsDeleted: number;
  readonly rowsUpdated: number;
  /** UDF values computed, over all UDF columns of the view. */
  readonly rowsComputed: number;
  /** The backfill job of each UDF column. */
  readonly jobs: readonly { readonly column: string; readonly jobId: string; readonly status: JobStatus }[];
  /** Chunk views: parents (source rows) added, deleted, and changed (their children replaced); rowsAdded / rowsDeleted count child rows. */
  readonly parents?: { readonly added: number; readonly deleted: number; readonly updated: number };
  /** UDTF views: partitions in the source, and those computed by this refresh (the others were staged by an earlier, interrupted one). */
  readonly partitions?: { readonly total: number; readonly computed: number };
  /** UDTF views: true when neither the source nor the UDTF changed since the last refresh (nothing computed or written). */
  readonly skipped?: boolean;
}

/**
 * Refreshes view `name` in database `db` to its source's latest version (or `options.srcVersion`) and
 * waits for it: {@link refreshViewAsync} + wait.
 * @throws ConfigError as {@link syncView}; a failed UDF column backfill throws as {@link backfill}; CANCELLED when cancelled.
 */
export async function refreshView(db: string, name: string, options: RefreshViewOptions = {}): Promise<RefreshViewResult> {
  const rec = await refreshViewAsync(db, name, options).wait();
  const r = rec.refresh!;
  return { status: rec.status, jobId: rec.id, sourceVersion: r.sourceVersion, rowsAdded: r.rowsAdded, rowsDeleted: r.rowsDeleted, rowsUpdated: r.rowsUpdated, rowsComputed: rec.metrics.rowsComputed, jobs: r.columnJobs, ...(r.parents ? { parents: r.parents } : {}), ...(r.partitions ? { partitions: r.partitions, skipped: r.skipped ?? false } : {}) };
}

/** Starts a refresh of view `name` and returns its job handle at once (`id`, `status()`, `progress()`, `wait()`, `cancel()`). */
export function refreshViewAsync(db: string, name: string, options: RefreshViewOptions = {}): BackfillJob {
  const log = (options.logger ?? silentLogger).child({ view: name });
  const ctl = new JobController({ id: randomUUID(), kind: "refresh", table: String(name), column: "*", options: serializable(options), statusIntervalMs: options.statusIntervalMs ?? 2000, log });
  if (options.onProgress) {
    const cb = options.onProgress;
    ctl.onChange = (r) => cb({ ...r.metrics, phase: r.status === "running" ? "running" : r.status === "pending" ? "planning" : (r.status as "finished"), status: r.status, diagnosis: r.diagnosis } as never);
  }
  setImmediate(() => {
    runRefresh(db, name, options, ctl).catch((e: unknown) => void ctl.finish(isBackfillError(e, "CANCELLED") ? "cancelled" : "failed", e));
  });
  return new BackfillJob(ctl);
}

/** The options a refresh's record keeps: plain values only (no logger, no Redis password, no env values). */
function serializable(o: RefreshViewOptions): Record<string, unknown> {
  const { logger: _l, onProgress: _p, env, executor, ...rest } = o;
  return {
    ...rest,
    ...(env ? { env: Object.keys(env) } : {}),
    ...(executor && executor !== "local" ? { executor: { ...executor, redis: redactRedisUrl(executor.redis) } } : {}),
  };
}

async function runRefresh(db: string, name: string, options: RefreshViewOptions, ctl: JobController): Promise<void> {
  await withViewLock(db, name, async (lock) => {
    const ref = resolveTable({ db, table: name });
    ctl.attach(await JobsTable.open(ref.dbDir), ref.dbDir);
    const { definition } = await readView(db, name);
    ctl.event("started", `refresh of view ${name} (source ${definition.source}) started`);
    ctl.setStatus("running");
    const { srcVersion, full, sourceTaskSize, maxRowsPerFragment, onProgress: _p, statusIntervalMs: _s, ...knobs } = options;
    for (const [k, v] of Object.entries({ sourceTaskSize, maxRowsPerFragment })) {
      if (v !== undefined && (!Number.isSafeInteger(v) || v < 1)) throw new ConfigError("CONFIG_INVALID", `options.${k} must be a positive integer (got ${JSON.stringify(v)})`, { table: name });
      if (v !== undefined && definition.chunker === null && !(k === "maxRowsPerFragment" && definition.udtf !== null)) throw new ConfigError("CONFIG_INVALID", `options.${k} applies to ${k === "maxRowsPerFragment" ? "chunk and UDTF views" : "chunk views"}; view ${name} is neither`, { table: name });
    }
    const pinned = { ...(srcVersion === undefined ? {} : { srcVersion }), ...(full ? { full } : {}) };
    const viewLog = (options.logger ?? silentLogger).child({ view: name });
    const synced =
      definition.udtf !== null
        ? await syncUdtfView(db, name, { ...resolveBackfillOptions(knobs), ...pinned, ...(maxRowsPerFragment ? { maxRowsPerFragment } : {}) }, lock, ctl, viewLog)
        : definition.chunker === null
          ? await syncViewLocked(db, name, pinned)
          : await syncChunkView(db, name, { ...resolveBackfillOptions(knobs), ...pinned, ...(sourceTaskSize ? { sourceTaskSize } : {}), ...(maxRowsPerFragment ? { maxRowsPerFragment } : {}) }, lock, ctl, viewLog);
    const columnJobs: { column: string; jobId: string; status: JobStatus }[] = [];
    const summary = (): RefreshSummary => ({ view: name, source: definition.source, ...synced, columnJobs: [...columnJobs] });
    ctl.record.refresh = summary();
    const p = "parents" in synced ? (synced as ChunkSyncResult).parents : undefined;
    const u = "partitions" in synced ? (synced as UdtfSyncResult) : undefined;
    const parentsText = p ? ` (parents: ${p.added} added, ${p.deleted} removed, ${p.updated} changed)` : u ? (u.skipped ? " (skipped: the source and the UDTF are unchanged)" : ` (${u.partitions.computed} of ${u.partitions.total} partition(s) computed; rows replaced at once)`) : "";
    ctl.event("synced", `rows in step with ${definition.source} version ${synced.sourceVersion}: ${synced.rowsAdded} added, ${synced.rowsDeleted} removed, ${synced.rowsUpdated} updated${parentsText} (read ${synced.read === "all" ? "every row" : "the changes since the last refresh"})`);
    ctl.changed(true);
    const conn = await connectDb(ref.dbDir, { readConsistencyInterval: 0 });
    const udfColumns = (await (await conn.openTable(name)).schema()).fields.filter((f) => f.metadata.has(BINDING_KEY)).map((f) => f.name);
    for (const column of udfColumns) {
      if (ctl.signal.aborted) throw new CancelledError(`refresh ${ctl.record.id} of view ${name} was cancelled after its row sync; run it again to compute the UDF columns`, { jobId: ctl.record.id, table: name });
      const job = backfillAsync({ db: ref.dbDir, table: name }, column, knobs);
      const stop = (): void => void job.cancel().catch(() => {});
      ctl.signal.addEventListener("abort", stop);
      try {
        const rec = await job.wait();
        addMetrics(ctl.record.metrics, rec.metrics);
        columnJobs.push({ column, jobId: rec.id, status: rec.status });
        ctl.event("column", `column ${column}: ${rec.metrics.rowsComputed} value(s) computed by backfill job ${rec.id}`);
      } catch (e) {
        addMetrics(ctl.record.metrics, job.record().metrics);
        columnJobs.push({ column, jobId: job.id, status: job.status() });
        ctl.record.refresh = summary();
        throw e;
      } finally {
        ctl.signal.removeEventListener("abort", stop);
      }
      ctl.record.refresh = summary();
      ctl.changed(true);
    }
    ctl.event("finished", `finished: ${synced.rowsAdded} added, ${synced.rowsDeleted} removed, ${synced.rowsUpdated} updated; ${ctl.record.metrics.rowsComputed} UDF value(s) computed`);
    await ctl.finish("finished");
  });
}

/** Adds a column job's counters and times to the refresh's (its own elapsed time and rate it keeps). */
function addMetrics(into: JobMetrics, from: JobMetrics): void {
  for (const [k, v] of Object.entries(from) as [keyof JobMetrics, number][]) {
    if (k === "elapsedMs" || k === "rowsPerSec" || typeof v !== "number") continue;
    (into as unknown as Record<string, number>)[k] = ((into as unknown as Record<string, number>)[k] ?? 0) + v;
  }
}
