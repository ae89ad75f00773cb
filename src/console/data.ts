/**
 * What the console shows, gathered with the library's own readers: tables (columnStatus, the Lance
 * manifest), jobs (listJobs/getJob/listErrors and the record's diagnosis), views (listViews), and
 * live workers and queue counts on Redis (listWorkers, BullMQ's job counts). No twin of any of them.
 */
import { availableParallelism } from "node:os";
import { Queue } from "bullmq";
import { columnStatus, userColumns, type ColumnStatus } from "../columns.ts";
import { withRedis } from "../exec/bullmq/executor.ts";
import { queueName, type ResourceClass } from "../exec/bullmq/queue.ts";
import { listWorkers, type WorkerInfo } from "../exec/bullmq/registry.ts";
import { getJob } from "../jobs/api.ts";
import { diagnose } from "../jobs/diagnose.ts";
import { resolveBackfillOptions } from "../options.ts";
import { countErrors, listErrors, type ErrorRecord } from "../jobs/errors-table.ts";
import type { Diagnosis, JobRecord } from "../jobs/record.ts";
import { readManifest } from "../read/manifest.ts";
import { connectDb, dbLocation } from "../storage/location.ts";
import { openLanceTable, resolveTable } from "../table.ts";
import { formatDataType } from "../udf/types.ts";
import type { Binding } from "../udf/binding.ts";

/** Error records a job's page gets at most (the count says how many there are). */
export const JOB_ERRORS_LIMIT = 200;

/** One fragment of a table, from its latest manifest. */
export interface FragmentEntry {
  readonly id: number;
  /** Live rows (not deleted). */
  readonly rows: number;
  /** Rows deleted from it (absent when none). */
  readonly deletedRows?: number;
}

/** One column of a table; `udf` and the fill counts only for UDF columns. */
export interface ColumnEntry {
  readonly name: string;
  readonly type: string;
  readonly udf?: Binding;
  readonly filled?: number;
  readonly total?: number;
  /** filled / total (1 for an empty table). */
  readonly fraction?: number;
  /** The bound module on disk: `ok` (bundles to the bound snapshot), `changed`, `missing`, `unbundleable`, `sql` (computed by LanceDB). */
  readonly udfFile?: "ok" | "changed" | "missing" | "unbundleable" | "sql";
}

export interface TableEntry {
  readonly name: string;
  readonly rows: number;
  readonly version: number;
  readonly fragments: readonly FragmentEntry[];
  readonly columns: readonly ColumnEntry[];
  /** What to look at: few fragments for the backfill's writers, a UDF module changed or missing on disk. */
  readonly warnings: readonly string[];
}

/** A job with its (capped) error records and diagnosis. */
export interface JobDetail {
  readonly job: JobRecord;
  readonly errors: readonly ErrorRecord[];
  /** Error records of the job in all (the list holds the first {@link JOB_ERRORS_LIMIT}). */
  readonly errorsTotal: number;
  readonly diagnosis: Diagnosis | null;
}

export interface QueueCounts {
  readonly name: string;
  readonly waiting: number;
  readonly active: number;
  readonly delayed: number;
  readonly failed: number;
  readonly completed: number;
}

/** User tables of the database (Lancet's `_lancet_*` system tables left out), by name. */
export async function tableNames(db: string): Promise<string[]> {
  const conn = await connectDb(dbLocation(db), { readConsistencyInterval: 0 });
  return (await conn.tableNames()).filter((n) => !n.startsWith("_lancet")).sort();
}

/**
 * The fragment writers a local backfill of this machine gets by default (`writerConcurrency`, from the
 * default `concurrency`): a table with fewer fragments writes through fewer serial writers than that.
 * (UDF tasks split fragments; writers do not.)
 */
export function defaultWriters(): number {
  return resolveBackfillOptions({}).writerConcurrency;
}

const FILE_STATE: Record<ColumnStatus["moduleState"], NonNullable<ColumnEntry["udfFile"]>> = { current: "ok", changed: "changed", missing: "missing", unbundleable: "unbundleable", sql: "sql" };

/**
 * One table: rows, fragments (latest manifest), columns with UDF bindings and fill state
 * ({@link columnStatus}), and warnings.
 * @throws ConfigError TABLE_NOT_FOUND when there is no such table
 */
export async function tableEntry(db: string, name: string): Promise<TableEntry> {
  const t = resolveTable({ db, table: name });
  const { table } = await openLanceTable(t);
  const [schema, rows, manifest, status] = await Promise.all([table.schema(), table.countRows(), readManifest(t.tableDir), columnStatus({ db, table: name })]);
  const byName = new Map(status.map((s) => [s.column, s]));
  const columns: ColumnEntry[] = [];
  for (const col of userColumns(schema)) {
    const field = schema.fields.find((f) => f.name === col)!;
    let type: string;
    try {
      type = formatDataType(field.type);
    } catch {
      type = String(field.type);
    }
    const s = byName.get(col);
    if (!s) {
      columns.push({ name: col, type });
      continue;
    }
    columns.push({ name: col, type, udf: s.binding, filled: s.filledRows, total: s.totalRows, fraction: s.totalRows === 0 ? 1 : s.filledRows / s.totalRows, udfFile: FILE_STATE[s.moduleState] });
  }
  const fragments: FragmentEntry[] = manifest.fragments.map((f) => (f.physicalRows > f.liveRows ? { id: f.id, rows: f.liveRows, deletedRows: f.physicalRows - f.liveRows } : { id: f.id, rows: f.liveRows }));
  const warnings: string[] = [];
  const writers = defaultWriters();
  // Only worth saying while a UDF column still has rows to compute.
  if (rows > 0 && fragments.length < writers && columns.some((c) => c.udf && c.udf.kind !== "sql" && c.filled! < c.total!)) {
    warnings.push(
      `${fragments.length} fragment${fragments.length === 1 ? "" : "s"} for ${writers} fragment writers: each fragment has one serial writer, so a backfill's writes are not parallel; split the table with \`lancet refragment --db ${shellQuote(db)} --table ${shellQuote(name)} --max-rows-per-fragment ${Math.max(1, Math.ceil(rows / writers))}\``,
    );
  }
  for (const c of columns) {
    if (c.udfFile === "changed") warnings.push(`column ${c.name}: module ${c.udf!.module} changed on disk since it was bound; the next backfill still runs the bound snapshot (rebind with \`lancet alter-column\` to use the new code)`);
    if (c.udfFile === "missing") warnings.push(`column ${c.name}: module ${c.udf!.module} is missing on disk; backfills run the bound snapshot, but it cannot be rebound until the file is back`);
    if (c.udfFile === "unbundleable") warnings.push(`column ${c.name}: module ${c.udf!.module} on disk no longer bundles; fix it before rebinding`);
  }
  return { name, rows, version: manifest.version, fragments, columns, warnings };
}

/** A job's record, its first error records, and its diagnosis (the record's, else one computed from its metrics). */
export async function jobDetail(db: string, id: string): Promise<JobDetail> {
  const job = await getJob(db, id);
  // A skip-policy job can have a record per row: read the first ones and count the rest.
  const [errors, errorsTotal] = await Promise.all([listErrors(db, { jobId: id, limit: JOB_ERRORS_LIMIT }), countErrors(db, { jobId: id })]);
  return { job, errors, errorsTotal, diagnosis: job.diagnosis ?? diagnoseRecord(job) };
}

/** A diagnosis from a record's metrics and the options it ran with (for records that carry none yet). */
function diagnoseRecord(r: JobRecord): Diagnosis | null {
  if (r.kind !== "backfill") return null;
  const num = (k: string, dflt: number): number => (typeof r.options[k] === "number" ? (r.options[k] as number) : dflt);
  const concurrency = num("concurrency", 1);
  return diagnose(r.metrics, { concurrency, intraApplierConcurrency: num("intraApplierConcurrency", 1), writerConcurrency: num("writerConcurrency", Math.min(4, concurrency)), cores: availableParallelism() });
}

/** Live workers of the base queue and the job counts of its queues (one per resource class). QUEUE_UNAVAILABLE when Redis does not answer. */
export async function workersAndQueues(redisUrl: string, queue: string): Promise<{ workers: WorkerInfo[]; queues: QueueCounts[] }> {
  return withRedis(redisUrl, {}, async (client) => {
    const workers = await listWorkers(client, queue);
    const queues: QueueCounts[] = [];
    for (const cls of ["cpu", "gpu"] as ResourceClass[]) {
      const name = queueName(queue, cls);
      // The one-shot connection is shared: closing the Queue leaves it open for withRedis to close.
      const q = new Queue(name, { connection: client });
      q.on("error", () => {});
      try {
        const c = await q.getJobCounts("waiting", "prioritized", "active", "delayed", "failed", "completed");
        queues.push({ name, waiting: (c.waiting ?? 0) + (c.prioritized ?? 0), active: c.active ?? 0, delayed: c.delayed ?? 0, failed: c.failed ?? 0, completed: c.completed ?? 0 });
      } finally {
        await q.close();
      }
    }
    return { workers, queues };
  });
}

/** `s` as one shell word (quoted only when it needs to be). */
function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`;
}
