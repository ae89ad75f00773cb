/**
 * The row step of a UDTF view's refresh. A UDTF is N:M — its output for a partition depends on all of
 * the partition's rows — so a refresh recomputes every partition and replaces the view's rows at once:
 *
 * 1. nothing to do when neither the source version nor the UDTF version changed since the last
 *    refresh (`skipped`);
 * 2. the partitions (distinct values of `partitionBy` among the source rows matching `where`, or the
 *    whole source) are computed on workers by a job of kind `udtf`, each into a staging table in the
 *    view's store (`DB/_lancet/VIEW/udtf/`), tagged with its `__partition`; a partition is marked done
 *    once staged. The staging table and the marks belong to one target (source version, UDTF version):
 *    a refresh killed part-way, run again for the same target, computes only the partitions not done;
 * 3. the view's rows are replaced by the staged rows in one commit (an overwrite of the view, schema,
 *    bindings and definition kept): readers see the old rows or the new ones, never a mix;
 * 4. the watermark (source version and UDTF version) is written, then the staging area removed.
 *
 * Limits: the replacement is one LanceDB overwrite, which holds the new rows in the coordinator's
 * memory while it writes them, and writes them as LanceDB's own fragments (`maxRowsPerFragment` sizes
 * the workers' appends to the staging table, not the view's fragments).
 */
import { createHash, randomUUID } from "node:crypto";
import * as path from "node:path";
import { arrow} from "../arrow.ts";
import type { ArrowNs, LanceNs } from "../arrow.ts";
import { ConfigError, isBackfillError } from "../errors.ts";
import { sqlString } from "../sql.ts";
import { failpoint } from "../failpoints.ts";
import type { JobController } from "../jobs/job.ts";
import type { ColumnLock } from "../jobs/lock.ts";
import type { Logger } from "../log.ts";
import type { ResolvedBackfillOptions } from "../options.ts";
import type { PlannedTask } from "../plan/plan.ts";
import { parseDataType } from "../udf/types.ts";
import { computedWith } from "../udf/table-fn.ts";
import { readUdtfBinding, type UdtfBinding } from "../udf/udtf.ts";
import { refragment, type RefragmentResult } from "../commit/refragment.ts";
import { readManifest } from "../read/manifest.ts";
import type { ResolvedTable } from "../table.ts";
import { openRefresh, requireSourceColumns, VIEW_REFRESH_LOCK, writeWatermark } from "./sync.ts";
import { PARTITION } from "./view.ts";
import { runViewJob, viewWorkerConfig } from "./view-job.ts";
import { connectDb, storeAt } from "../storage/location.ts";

/** What the row step of a UDTF view's refresh did. */
export interface UdtfSyncResult {
  readonly sourceVersion: number;
  /** Rows in the view after the refresh (all new). */
  readonly rowsAdded: number;
  /** Rows the view had before (all replaced). */
  readonly rowsDeleted: number;
  readonly rowsUpdated: 0;
  readonly read: "all";
  /** Nothing changed since the last refresh: nothing was computed or written. */
  readonly skipped: boolean;
  readonly partitions: { readonly total: number; readonly computed: number };
  /** The UDTF job, when any partition was computed. */
  readonly jobId: string | null;
}

const digest = (s: string): string => createHash("sha256").update(s).digest("hex").slice(0, 16);

/** A partition's key (its value as JSON; bigints as their digits) and the SQL filter selecting its rows. */
function partitionOf(column: string, v: unknown): { key: string; filter: string } {
  const col = `\`${column.replaceAll("`", "``")}\``;
  if (v === null || v === undefined) return { key: "null", filter: `${col} IS NULL` };
  if (typeof v === "bigint") return { key: v.toString(), filter: `${col} = ${v.toString()}` };
  if (typeof v === "number") return { key: JSON.stringify(v), filter: `${col} = ${String(v)}` };
  if (typeof v === "boolean") return { key: String(v), filter: `${col} = ${String(v)}` };
  if (typeof v === "string") return { key: JSON.stringify(v), filter: `${col} = ${sqlString(v)}` };
  throw new ConfigError("CONFIG_INVALID", `UDTF partition column ${column} has a value of type ${typeof v}; partition by a string, integer, floating-point or boolean column`);
}

/**
 * Recomputes UDTF view `name` (or skips it when nothing changed). The caller holds the view's refresh
 * lock and runs the refresh job `refresh`.
 */
export async function syncUdtfView(db: string, name: string, opts: ResolvedBackfillOptions & { srcVersion?: number; full?: boolean; maxRowsPerFragment?: number }, lock: ColumnLock, refresh: JobController, log: Logger): Promise<UdtfSyncResult> {
  const { def, watermark, viewRef, conn, source, view: opened, sourceVersion } = await openRefresh(db, name, opts.srcVersion);
  let view = opened;
  const viewSchema = await view.schema();
  const binding = readUdtfBinding(viewSchema.fields.find((f) => f.name === PARTITION)?.metadata, name);
  await requireSourceColumns(source, [...binding.inputs, ...(binding.partitionBy !== null ? [binding.partitionBy] : [])], (col) => new ConfigError("INPUT_COLUMN_NOT_FOUND", `UDTF view ${name} needs column ${col}, which source table ${def.source} does not have at version ${sourceVersion}`, { table: def.source, column: col }));
  const maxRows = opts.maxRowsPerFragment ?? DEFAULT_MAX_ROWS;
  if (watermark !== null && watermark.sourceVersion === sourceVersion && watermark.version === computedWith(binding) && opts.full !== true) {
    // The rows are current; a refresh that died between its swap and its split left them in fragments
    // larger than the bound: split them now (nothing when the layout is within it).
    await splitView(viewRef, name, maxRows, { lock, refresh, force: false }, log);
    return { sourceVersion, rowsAdded: 0, rowsDeleted: 0, rowsUpdated: 0, read: "all", skipped: true, partitions: { total: 0, computed: 0 }, jobId: null };
  }

  // The staging area of this target; those of other targets are stale.
  const target = `v${sourceVersion}-${digest(computedWith(binding))}`;
  const stageDir = path.join(viewRef.storeDir, "udtf");
  const doneDir = path.join(stageDir, `done-${target}`);
  const marks = storeAt(doneDir);
  const stageConn = await connectDb(stageDir, { readConsistencyInterval: 0 });
  const stageName = `stage-${target}`;
  for (const t of await stageConn.tableNames()) if (t !== stageName) await stageConn.dropTable(t);
  const stageStore = storeAt(stageDir);
  const stale = new Set((await stageStore.list("done-")).map((k) => k.split("/")[0]!).filter((d) => d !== `done-${target}`));
  for (const d of stale) await stageStore.deletePrefix(`${d}/`);
  const stageSchema = new arrow.Schema([new arrow.Field(PARTITION, new arrow.Utf8(), false), ...Object.entries(binding.outputs).map(([k, t]) => new arrow.Field(k, parseDataType(t), true))]);
  const stage = (await stageConn.tableNames()).includes(stageName) ? await stageConn.openTable(stageName) : await stageConn.createEmptyTable(stageName, stageSchema, { existOk: true } as never);

  // The partitions, and those already staged for this target.
  const partitions = await listPartitions(source, binding, def.where);
  const done = new Set<string>();
  for (const f of await marks.list("")) {
    try {
      done.add((JSON.parse(new TextDecoder().decode((await marks.get(f))!)) as { key: string }).key);
    } catch {
      // a mark being written when a run died: the partition is computed again
    }
  }
  const pending = partitions.filter((p) => !done.has(p.key));
  let jobId: string | null = null;
  if (pending.length > 0) {
    jobId = randomUUID();
    await compute(viewRef.dbDir, name, binding, def.source, def.where, pending, sourceVersion, stageDir, stageName, doneDir, opts, lock, refresh, jobId, log);
  }
  failpoint("udtf.before-swap");

  // One commit replaces the view's rows: the staged rows, in the view's schema (its definition,
  // bindings and UDF columns kept; UDF columns NULL until the refresh's backfills fill them).
  const staged = await stage.query().toArrow();
  const rowsDeleted = await view.countRows();
  await view.add(inViewSchema(viewSchema, staged) as never, { mode: "overwrite" } as never);
  view = await conn.openTable(name);
  await writeWatermark(view, { sourceVersion, refreshedAt: new Date().toISOString(), version: computedWith(binding) });
  await stageConn.dropTable(stageName).catch(() => undefined);
  await marks.deletePrefix("");
  failpoint("udtf.before-split");
  // Every fragment the overwrite wrote is new: no checkpoint can refer to one (`force` discards those
  // of the replaced fragments, which no backfill can use again).
  await splitView(viewRef, name, maxRows, { lock, refresh, force: true }, log);
  log.info(`UDTF view ${name}: ${staged.numRows} row(s) from ${partitions.length} partition(s) replaced ${rowsDeleted}`);
  return { sourceVersion, rowsAdded: staged.numRows, rowsDeleted, rowsUpdated: 0, read: "all", skipped: false, partitions: { total: partitions.length, computed: pending.length }, jobId };
}

/** Rows per fragment of a UDTF view (and per staging append) without `maxRowsPerFragment`. */
const DEFAULT_MAX_ROWS = 65_536;

/**
 * Splits the view's fragments into fragments of at most `maxRows` rows when one is larger (the swap's
 * overwrite writes up to LanceDB's ~1M rows per fragment): one atomic re-layout by refragment, which
 * keeps the rows, their order, the schema and field metadata (definition, bindings, watermark) and
 * indexes; readers see the old layout or the new one, both complete. Nothing when every fragment is
 * within the bound. Runs inside the refresh (its lock and its job do not count as a running backfill),
 * before the refresh's backfills of the view's UDF columns, so that those run one task per fragment.
 */
async function splitView(viewRef: ResolvedTable, name: string, maxRows: number, held: { lock: ColumnLock; refresh: JobController; force: boolean }, log: Logger): Promise<void> {
  const sizes = (await readManifest(viewRef.tableDir)).fragments.map((f) => f.physicalRows);
  if (sizes.every((n) => n <= maxRows)) return;
  let r: RefragmentResult;
  try {
    r = await refragment({ db: viewRef.dbDir, table: name }, { maxRowsPerFragment: maxRows, force: held.force, beside: { lock: held.lock, lockName: VIEW_REFRESH_LOCK, jobId: held.refresh.record.id } });
  } catch (e) {
    // Another job of the view runs (or a dead one still reads as running), or checkpoints of its UDF
    // columns are pending: the rows are complete, only their layout waits for the next refresh.
    if (!isBackfillError(e, "TABLE_BUSY")) throw e;
    log.warn(`UDTF view ${name}: fragments of up to ${Math.max(...sizes)} rows were not split to ${maxRows} (${(e as Error).message}); the next refresh splits them`);
    return;
  }
  held.refresh.event("commit", `view ${name}: ${r.rows} row(s) in ${r.fragmentsBefore} fragment(s) split into ${r.fragmentsAfter} fragment(s) of at most ${maxRows} rows (version ${r.swapVersion}, by refragment)`);
}

/** The distinct values of the partition column among the rows matching `where` (one partition without it). */
async function listPartitions(source: LanceNs.Table, binding: UdtfBinding, where: string | null): Promise<{ key: string; filter: string | null }[]> {
  if (binding.partitionBy === null) return [{ key: "null", filter: null }];
  let q = source.query().select([binding.partitionBy]);
  if (where !== null) q = q.where(where);
  const seen = new Map<string, { key: string; filter: string }>();
  for await (const batch of q) {
    const col = batch.getChild(binding.partitionBy)!;
    for (let i = 0; i < batch.numRows; i++) {
      const p = partitionOf(binding.partitionBy, col.get(i));
      if (!seen.has(p.key)) seen.set(p.key, p);
    }
  }
  return [...seen.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}

/** `staged` (partition + outputs) as a table of the view's schema: every view column, NULL where staging has none. */
function inViewSchema(viewSchema: ArrowNs.Schema, staged: ArrowNs.Table): ArrowNs.Table {
  // An empty staging table still gives one (empty) batch: LanceDB refuses to write none.
  const source = staged.batches.length > 0 ? staged.batches : [new arrow.RecordBatch(staged.schema, arrow.makeData({ type: new arrow.Struct(staged.schema.fields), length: 0, nullCount: 0, children: staged.schema.fields.map((f) => arrow.vectorFromArray([], f.type).data[0]!) }))];
  const batches = source.map((b) => {
    const children = viewSchema.fields.map((f) => b.getChild(f.name)?.data[0] ?? arrow.vectorFromArray(new Array<null>(b.numRows).fill(null), f.type).data[0]!);
    return new arrow.RecordBatch(viewSchema, arrow.makeData({ type: new arrow.Struct(viewSchema.fields), length: b.numRows, nullCount: 0, children }));
  });
  return new arrow.Table(viewSchema, ...(batches as never[]));
}

async function compute(
  dbDir: string,
  name: string,
  binding: UdtfBinding,
  sourceName: string,
  where: string | null,
  pending: readonly { key: string; filter: string | null }[],
  sourceVersion: number,
  stageDir: string,
  stageTable: string,
  doneDir: string,
  opts: ResolvedBackfillOptions & { maxRowsPerFragment?: number },
  lock: ColumnLock,
  refresh: JobController,
  jobId: string,
  log: Logger,
): Promise<void> {
  const maxRows = opts.maxRowsPerFragment ?? DEFAULT_MAX_ROWS;
  const tasks: PlannedTask[] = pending.map((p, i) => ({ id: `partition-${i}`, fragmentId: i, globalOffset: 0, start: 0, end: 1, gaps: [{ start: 0, end: 1 }], selection: "", batchKey: `udtf-${jobId}-${i}`, partition: p }));
  const config = await viewWorkerConfig(dbDir, name, PARTITION, binding, opts, {
    udtf: { source: sourceName, where, outputs: binding.outputs, stageDir, stageTable, maxRowsPerFragment: maxRows },
  });
  const staged = new Map<number, { key: string; rows: number }>();
  await runViewJob({
    jobId,
    kind: "udtf",
    dbDir,
    table: name,
    column: PARTITION,
    binding,
    config,
    tasks,
    readVersion: sourceVersion,
    options: { maxRowsPerFragment: maxRows, concurrency: opts.concurrency },
    opts,
    lock,
    refresh,
    log,
    events: {
      started: `UDTF ${binding.exportName} (version ${binding.version}) over ${pending.length} partition(s) of ${sourceName} at version ${sourceVersion} started for view ${name}`,
      planned: `plan: ${pending.length} partition(s)${binding.partitionBy !== null ? ` by ${binding.partitionBy}` : ""}, one task each`,
    },
    onBatch: (task, r) => {
      if (r.partition) staged.set(task.fragmentId, r.partition);
    },
    // Finished partitions are marked done for this target (a mark is written whole: temp file + rename, or one PUT).
    writeGroup: async (group) => {
      for (const f of group) {
        const p = staged.get(f.id);
        if (!p) continue;
        await storeAt(doneDir).put(digest(p.key), JSON.stringify(p));
      }
    },
  });
}
