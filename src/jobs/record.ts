/**
 * What a job is, as every process sees it: status, metrics, events, diagnosis. A job record is plain
 * JSON, stored in the jobs table and returned by handles.
 */
import type { SerializedError } from "../errors.ts";
import type { QueueEventType } from "../exec/bullmq/queue.ts";
import type { Binding } from "../udf/binding.ts";

/** LanceDB's job states, plus `pending` before the job starts running. */
export type JobStatus = "pending" | "running" | "finished" | "failed" | "cancelled";

export const FINAL_STATUSES: ReadonlySet<JobStatus> = new Set(["finished", "failed", "cancelled"]);

/** Stage timings and counters of a job. Times in ms; `udf`, `read`, `checkpoint` are summed over workers, `write` over writers. */
export interface JobMetrics {
  fragmentsPlanned: number;
  /** Fragments whose values were assembled and written by their writer. */
  fragmentsWritten: number;
  fragmentsCommitted: number;
  tasksTotal: number;
  tasksDone: number;
  rowsPlanned: number;
  /** Rows of the planned ranges processed (computed, or skipped by the row selection). */
  rowsProcessed: number;
  rowsComputed: number;
  rowsCheckpointed: number;
  rowsCommitted: number;
  /** Rows left null by the error policy (stored in the errors table; a re-run retries them). */
  rowsSkipped: number;
  /** Fragments that could not be committed (changed by another writer since the plan). */
  fragmentsFailed: number;
  udfMs: number;
  /** CPU time the worker processes spent in the UDF (much lower than udfMs: the UDF waits on I/O). */
  udfCpuMs: number;
  readMs: number;
  checkpointMs: number;
  /** Writers: assembling a fragment's checkpoints and writing its column data. */
  writeMs: number;
  /** Commit bookkeeping outside the data write: key/index maintenance, layout checks, markers. */
  commitMs: number;
  commits: number;
  commitRetries: number;
  workersActive: number;
  workerCrashes: number;
  rowsPerSec: number;
  elapsedMs: number;
}

export function emptyMetrics(): JobMetrics {
  return {
    fragmentsPlanned: 0, fragmentsWritten: 0, fragmentsCommitted: 0, tasksTotal: 0, tasksDone: 0,
    rowsPlanned: 0, rowsProcessed: 0, rowsComputed: 0, rowsCheckpointed: 0, rowsCommitted: 0, rowsSkipped: 0, fragmentsFailed: 0,
    udfMs: 0, udfCpuMs: 0, readMs: 0, checkpointMs: 0, writeMs: 0, commitMs: 0, commits: 0, commitRetries: 0,
    workersActive: 0, workerCrashes: 0, rowsPerSec: 0, elapsedMs: 0,
  };
}

export interface JobEvent {
  /** ISO time. */
  readonly at: string;
  readonly type: "started" | "planned" | "synced" | "column" | "commit" | "commit-failed" | "commit-fallback" | "retry" | "worker-died" | "skipped" | "cancel-requested" | "cancelled" | "finished" | "failed" | QueueEventType;
  readonly message: string;
}

export type Stage = "read" | "udf" | "checkpoint" | "writer" | "commit";

export interface Diagnosis {
  /** The stage on the critical path, or `none` when there is too little to judge. */
  readonly bound: Stage | "none";
  /** Each stage's share of the critical-path time (0..1). */
  readonly shares: Readonly<Record<Stage, number>>;
  /** One line: what bounds the job. */
  readonly summary: string;
  /** What to change, or "" when nothing obvious. */
  readonly hint: string;
}

/** A plan as reported to users. */
export interface PlanSummary {
  readonly readVersion: number;
  readonly fragmentsTotal: number;
  readonly fragmentsToWrite: number;
  readonly fragmentsDone: number;
  readonly fragmentsDeferred: number;
  readonly tasks: number;
  readonly rowsPlanned: number;
  readonly taskSize: number;
  readonly commitGranularity: number;
  /** How rows are selected: "rows not yet computed", "all rows (…)", or the user's where. */
  readonly selection: string;
  readonly fragments: readonly { id: number; liveRows: number; rowsToCompute: number; tasks: number; selection: string }[];
}

/** What a view refresh's row sync did (a `refresh` job's record). */
export interface RefreshSummary {
  readonly view: string;
  readonly source: string;
  readonly sourceVersion: number;
  readonly rowsAdded: number;
  readonly rowsDeleted: number;
  readonly rowsUpdated: number;
  /** `changes`: only source rows written or deleted since the last refresh were read; `all`: every id. */
  readonly read?: "changes" | "all";
  /** Chunk views: parents added, deleted and changed; the expansion job's id. */
  readonly parents?: { readonly added: number; readonly deleted: number; readonly updated: number };
  /** UDTF views: partitions total and computed; whether the refresh was skipped (nothing changed). */
  readonly partitions?: { readonly total: number; readonly computed: number };
  readonly skipped?: boolean;
  readonly jobId?: string | null;
  /** The backfill job of each UDF column of the view. */
  readonly columnJobs: readonly { readonly column: string; readonly jobId: string; readonly status: JobStatus }[];
}

export interface JobRecord {
  readonly id: string;
  /** `backfill` fills one column of a table; `refresh` brings a view up to date (column `*`). */
  readonly kind: "backfill" | "refresh" | "chunk" | "udtf";
  readonly table: string;
  readonly column: string;
  status: JobStatus;
  /** Set when the job's process stopped heartbeating: shown as failed. */
  abandoned?: boolean;
  udfVersion: string | null;
  binding: Binding | null;
  /** The options the job was started with (serialisable ones). */
  readonly options: Readonly<Record<string, unknown>>;
  readonly host: string;
  readonly pid: number;
  readonly createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  heartbeatAt: string;
  readonly heartbeatIntervalMs: number;
  error: SerializedError | null;
  plan: PlanSummary | null;
  /** The table version this job's last commit created (`plan.readVersion` is where it started); absent until it commits. */
  committedVersion?: number;
  metrics: JobMetrics;
  events: JobEvent[];
  diagnosis: Diagnosis | null;
  /** Fragments whose commit failed, with the reason; a re-run fills them. */
  failedFragments: { id: number; reason: string }[];
  /** A `refresh` job's row sync and UDF column jobs. */
  refresh?: RefreshSummary;
  /** Progress over time, one sample per write of the record (at most {@link MAX_HISTORY}, thinned evenly). */
  history?: JobHistory;
}

/** Samples of a job's progress: parallel arrays, `t` in ms since the job started running. */
export interface JobHistory {
  t: number[];
  rowsProcessed: number[];
  rowsCommitted: number[];
}

/** Samples a record keeps; when full, they are thinned to about half, evenly spread over the whole job. */
export const MAX_HISTORY = 120;

/** Adds the record's current progress to its history (replacing the last sample when no time passed). */
export function sampleHistory(r: JobRecord, nowMs = Date.now()): void {
  if (r.startedAt === null) return;
  const t = Math.max(0, Math.round(nowMs - Date.parse(r.startedAt)));
  const h = (r.history ??= { t: [], rowsProcessed: [], rowsCommitted: [] });
  const last = h.t.length - 1;
  if (last >= 0 && t <= h.t[last]!) {
    h.rowsProcessed[last] = r.metrics.rowsProcessed;
    h.rowsCommitted[last] = r.metrics.rowsCommitted;
    return;
  }
  h.t.push(t);
  h.rowsProcessed.push(r.metrics.rowsProcessed);
  h.rowsCommitted.push(r.metrics.rowsCommitted);
  if (h.t.length > MAX_HISTORY) {
    // Keep the first and the last samples, and between them one at least every span / (MAX / 2) ms: about
    // half as many, evenly spread over the whole job.
    const step = (h.t[h.t.length - 1]! - h.t[0]!) / (MAX_HISTORY / 2);
    const kept: number[] = [0];
    for (let i = 1; i < h.t.length - 1; i++) if (h.t[i]! - h.t[kept[kept.length - 1]!]! >= step) kept.push(i);
    kept.push(h.t.length - 1);
    h.t = kept.map((i) => h.t[i]!);
    h.rowsProcessed = kept.map((i) => h.rowsProcessed[i]!);
    h.rowsCommitted = kept.map((i) => h.rowsCommitted[i]!);
  }
}

/**
 * The record as a reader should see it: a pending or running job whose heartbeat is older than
 * three intervals plus 2 s belongs to a process that died — it is reported failed (abandoned).
 */
export function effectiveRecord(r: JobRecord, now = Date.now()): JobRecord {
  if (FINAL_STATUSES.has(r.status)) return r;
  const age = now - Date.parse(r.heartbeatAt);
  if (age <= 3 * r.heartbeatIntervalMs + 2000) return r;
  return {
    ...r,
    status: "failed",
    abandoned: true,
    error: {
      name: "BackfillError",
      code: "JOB_ABANDONED",
      message: `job ${r.id} was abandoned: its process (pid ${r.pid} on ${r.host}) stopped reporting at ${r.heartbeatAt}; run the backfill again to resume from its checkpoints`,
    },
  };
}
