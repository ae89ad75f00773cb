/**
 * A view refresh: {@link syncView} (rows in step with the source), then a backfill of each UDF column
 * of the view, which computes exactly the rows left NULL by the sync (added and changed rows) — or
 * every row of a column whose UDF version changed. Both halves are idempotent, so a refresh that
 * died is finished by running it again. A refresh holds the view's refresh lock throughout: two
 * refreshes of one view never run at once.
 */
import { backfill } from "../jobs/backfill.ts";
import { lancedb } from "../arrow.ts";
import type { BackfillOptions } from "../options.ts";
import type { JobStatus } from "../jobs/record.ts";
import { resolveTable } from "../table.ts";
import { BINDING_KEY } from "../udf/binding.ts";
import { syncViewLocked, withViewLock } from "./sync.ts";

/** Options of {@link refreshView}: the source version, and the backfill knobs that apply to a view. */
export interface RefreshViewOptions
  extends Pick<BackfillOptions, "concurrency" | "intraApplierConcurrency" | "checkpointSize" | "commitGranularity" | "errorPolicy" | "executor" | "logger" | "env"> {
  /** Source version to refresh to, forwards or backwards. @default the source's latest version */
  srcVersion?: number;
}

/** What {@link refreshView} did. */
export interface RefreshViewResult {
  readonly status: JobStatus;
  readonly sourceVersion: number;
  readonly rowsAdded: number;
  readonly rowsDeleted: number;
  readonly rowsUpdated: number;
  /** UDF values computed, over all UDF columns of the view. */
  readonly rowsComputed: number;
  /** The backfill job of each UDF column. */
  readonly jobs: readonly { readonly column: string; readonly jobId: string; readonly status: JobStatus }[];
}

/**
 * Refreshes view `name` in database `db` to its source's latest version (or `options.srcVersion`).
 * @throws ConfigError as {@link syncView}; a failed UDF column backfill throws as {@link backfill}.
 */
export async function refreshView(db: string, name: string, options: RefreshViewOptions = {}): Promise<RefreshViewResult> {
  return withViewLock(db, name, () => refreshLocked(db, name, options));
}

async function refreshLocked(db: string, name: string, options: RefreshViewOptions): Promise<RefreshViewResult> {
  const { srcVersion, ...knobs } = options;
  const synced = await syncViewLocked(db, name, srcVersion === undefined ? {} : { srcVersion });
  const ref = resolveTable({ db, table: name });
  const conn = await lancedb.connect(ref.dbDir, { readConsistencyInterval: 0 });
  const schema = await (await conn.openTable(name)).schema();
  const udfColumns = schema.fields.filter((f) => f.metadata.has(BINDING_KEY)).map((f) => f.name);
  const jobs: { column: string; jobId: string; status: JobStatus }[] = [];
  let rowsComputed = 0;
  let status: JobStatus = "finished";
  for (const column of udfColumns) {
    const rec = await backfill({ db: ref.dbDir, table: name }, column, knobs);
    jobs.push({ column, jobId: rec.id, status: rec.status });
    rowsComputed += rec.metrics.rowsComputed;
    if (rec.status !== "finished") status = rec.status;
  }
  return { status, ...synced, rowsComputed, jobs };
}
