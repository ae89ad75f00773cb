/**
 * The row step of a chunk view's refresh: its children in step with the source, exactly.
 *
 * A chunk view keeps, in its Lancet store, a record of the parents it has expanded (`parents`: a
 * LanceDB table of `__source_row_id`, `__input_hash` of the chunker's inputs and the inherited
 * columns, `children`, `version` of the chunker). Against the source pinned at V it works out which
 * parents appeared, disappeared or changed ({@link sourceDelta}, as a view's row sync: only the changes
 * since the watermark where the source's history allows), then:
 *
 * 1. removed and changed parents lose their records, then their children (in that order: a crash in
 *    between leaves children of an unrecorded parent, which the next refresh expands again after
 *    deleting them);
 * 2. new and changed parents are expanded on workers, in work items of `sourceTaskSize` parents, by a
 *    job of kind `chunk` on the shared coordinator (`runJob`: executors, retries of dead workers,
 *    events, errors table, cancellation). A worker deletes an item's existing children first, appends
 *    children every `maxRowsPerFragment` rows and reports parents once all their children are in;
 *    the coordinator records them (zero-child parents too) a group of items at a time;
 * 3. the watermark (V) is written last.
 *
 * A new chunker version (a rebind with `alterView`) drops every record and child first, so every
 * parent is expanded again. Re-running after a kill at any point converges to the same children.
 */
import { randomUUID } from "node:crypto";
import { arrow} from "../arrow.ts";
import type { LanceNs } from "../arrow.ts";
import { ConfigError } from "../errors.ts";
import { inFilters, sqlString } from "../sql.ts";
import type { ExpandedParent } from "../exec/protocol.ts";
import type { JobController } from "../jobs/job.ts";
import type { ColumnLock } from "../jobs/lock.ts";
import type { Logger } from "../log.ts";
import type { ResolvedBackfillOptions } from "../options.ts";
import type { PlannedTask } from "../plan/plan.ts";
import { resolveTable } from "../table.ts";
import { readChunkerBinding } from "../udf/chunker.ts";
import { computedWith } from "../udf/table-fn.ts";
import { ensureSourceRowIndex, lowerWatermarkFirst, openRefresh, requireSourceColumns, sinceOf, sourceDelta, writeWatermark } from "./sync.ts";
import { runViewJob, viewWorkerConfig } from "./view-job.ts";
import { assertStableRowIds, CHILD_INDEX, INPUT_HASH, SOURCE_ROW_ID } from "./view.ts";
import { connectDb } from "../storage/location.ts";

/** Options of a chunk view's refresh that only chunk views have. */
export interface ChunkRefreshOptions {
  /** Source rows (parents) per work item. @default 1024 */
  readonly sourceTaskSize?: number;
  /** Children a worker buffers before it appends them to the view. @default 65,536 */
  readonly maxRowsPerFragment?: number;
}

/** What the row step of a chunk view's refresh did. */
export interface ChunkSyncResult {
  readonly sourceVersion: number;
  /** Child rows appended. */
  readonly rowsAdded: number;
  /** Child rows removed (of parents gone or changed). */
  readonly rowsDeleted: number;
  readonly rowsUpdated: 0;
  readonly read: "changes" | "all";
  readonly parents: { readonly added: number; readonly deleted: number; readonly updated: number };
  /** The expansion job (kind `chunk`), when there was anything to expand. */
  readonly jobId: string | null;
}

const PARENTS = "parents";

/** Opens (or creates) the record of expanded parents of chunk view `name`. */
async function parentsTable(storeDir: string): Promise<LanceNs.Table> {
  const conn = await connectDb(storeDir, { readConsistencyInterval: 0 });
  if ((await conn.tableNames()).includes(PARENTS)) return conn.openTable(PARENTS);
  const schema = new arrow.Schema([
    new arrow.Field(SOURCE_ROW_ID, new arrow.Int64(), false),
    new arrow.Field(INPUT_HASH, new arrow.Int64(), false),
    new arrow.Field("children", new arrow.Int32(), false),
    new arrow.Field("version", new arrow.Utf8(), false),
  ]);
  return conn.createEmptyTable(PARENTS, schema, { existOk: true } as never);
}


/**
 * Brings chunk view `name`'s children in step with its source, expanding parents on workers. The
 * caller holds the view's refresh lock (`lock`) and runs the refresh job `refresh` (cancelling it
 * cancels the expansion).
 */
export async function syncChunkView(
  db: string,
  name: string,
  opts: ResolvedBackfillOptions & ChunkRefreshOptions & { srcVersion?: number; full?: boolean },
  lock: ColumnLock,
  refresh: JobController,
  log: Logger,
): Promise<ChunkSyncResult> {
  const { def, watermark, viewRef, srcRef, conn, source, view, sourceVersion } = await openRefresh(db, name, opts.srcVersion);
  await assertStableRowIds(srcRef, `refresh chunk view ${name} from it`);
  const binding = readChunkerBinding((await view.schema()).fields.find((f) => f.name === CHILD_INDEX)?.metadata, name);
  const hashColumns = [...def.select, ...binding.inputs.filter((c) => !def.select.includes(c))];
  await requireSourceColumns(source, hashColumns, (col) => new ConfigError("COLUMN_NOT_FOUND", `chunk view ${name} ${def.select.includes(col) ? "selects" : "takes as chunker input"} column ${col}, which source table ${def.source} does not have at version ${sourceVersion}`, { table: def.source, column: col }));
  const parents = await parentsTable(viewRef.storeDir);

  // A new chunker version: every record and child goes, and every parent is expanded again.
  const stale = (await parents.countRows(`version != ${sqlString(computedWith(binding))}`)) > 0;
  /** Parents expanded by the old version, and their children, when regenerating: reported as updated and deleted. */
  let regenerated: Set<number> | null = null;
  let childrenDropped = 0;
  if (stale) {
    log.info(`chunker ${binding.module}#${binding.exportName} is at version ${binding.version}: regenerating every child of view ${name}`);
    regenerated = new Set<number>();
    for (const batch of (await parents.query().select([SOURCE_ROW_ID]).toArrow()).batches) {
      for (const id of batch.getChild(SOURCE_ROW_ID)!.toArray() as BigInt64Array) regenerated.add(Number(id));
    }
    childrenDropped = await view.countRows();
    await parents.delete("true");
    await view.delete("true");
  }
  const delta = await sourceDelta(conn, source, parents, srcRef, { source: def.source, where: def.where, select: hashColumns }, sinceOf(watermark, sourceVersion, stale || opts.full === true), sourceVersion);
  const { deleted, changed, added } = delta;
  await lowerWatermarkFirst(view, watermark, sourceVersion, delta);
  const removed = inFilters(SOURCE_ROW_ID, [...deleted, ...changed]);
  let rowsDeleted = 0;
  for (const f of removed) rowsDeleted += await view.countRows(f);
  for (const f of removed) await parents.delete(f);
  for (const f of removed) await view.delete(f);

  const toExpand = [...added, ...changed].sort((a, b) => a - b);
  let rowsAdded = 0;
  let jobId: string | null = null;
  if (toExpand.length > 0) {
    jobId = randomUUID();
    rowsAdded = await expand(viewRef.dbDir, name, def.source, def.select, hashColumns, binding, toExpand, sourceVersion, opts, lock, refresh, jobId, log);
  }
  if (toExpand.length > 0) await ensureSourceRowIndex(view);
  await writeWatermark(view, { sourceVersion, refreshedAt: new Date().toISOString() });
  const again = regenerated === null ? 0 : added.filter((id) => regenerated.has(id)).length;
  return {
    sourceVersion,
    rowsAdded,
    rowsDeleted: rowsDeleted + childrenDropped,
    rowsUpdated: 0,
    read: stale ? "all" : delta.read,
    parents: { added: added.length - again, deleted: deleted.length + (regenerated === null ? 0 : regenerated.size - again), updated: changed.length + again },
    jobId,
  };
}

/** Runs the expansion job: work items of parents on the executor, their records written as they finish. Returns the children written. */
async function expand(
  dbDir: string,
  name: string,
  sourceName: string,
  select: readonly string[],
  hashColumns: readonly string[],
  binding: ReturnType<typeof readChunkerBinding>,
  ids: readonly number[],
  sourceVersion: number,
  opts: ResolvedBackfillOptions & ChunkRefreshOptions,
  lock: ColumnLock,
  refresh: JobController,
  jobId: string,
  log: Logger,
): Promise<number> {
  const viewRef = resolveTable({ db: dbDir, table: name });
  const itemSize = opts.sourceTaskSize ?? 1024;
  const maxRows = opts.maxRowsPerFragment ?? 65_536;
  const tasks: PlannedTask[] = [];
  for (let i = 0, item = 0; i < ids.length; i += itemSize, item++) {
    const parents = ids.slice(i, i + itemSize);
    tasks.push({ id: `item-${item}`, fragmentId: item, globalOffset: 0, start: 0, end: parents.length, gaps: [{ start: 0, end: parents.length }], selection: "", batchKey: `chunk-${jobId}-${item}`, parents });
  }
  const config = await viewWorkerConfig(dbDir, name, CHILD_INDEX, binding, opts, {
    chunker: { source: sourceName, select: [...select], hashColumns: [...hashColumns], outputs: binding.outputs, maxRowsPerFragment: maxRows },
  });
  const finished = new Map<number, ExpandedParent[]>();
  let children = 0;
  const parents = await parentsTable(viewRef.storeDir);
  await runViewJob({
    jobId,
    kind: "chunk",
    dbDir,
    table: name,
    column: CHILD_INDEX,
    binding,
    config,
    tasks,
    readVersion: sourceVersion,
    options: { sourceTaskSize: itemSize, maxRowsPerFragment: maxRows, concurrency: opts.concurrency },
    opts,
    lock,
    refresh,
    log,
    events: {
      started: `expansion of ${ids.length} parent(s) of ${sourceName} into chunk view ${name} started (chunker ${binding.exportName}, version ${binding.version}) at source version ${sourceVersion}`,
      planned: `plan: ${tasks.length} work item(s) of up to ${itemSize} parent(s); children appended every ${maxRows} row(s)`,
    },
    onBatch: (task, r) => {
      if (!r.parents) return;
      const list = finished.get(task.fragmentId) ?? [];
      list.push(...r.parents);
      finished.set(task.fragmentId, list);
      children += r.rowsComputed;
    },
    // A group of finished items: their parents are recorded as expanded (children counted, zero included).
    writeGroup: async (group) => {
      const records = group.flatMap((f) => finished.get(f.id) ?? []);
      if (records.length > 0) {
        await parents.add(
          new arrow.Table({
            [SOURCE_ROW_ID]: arrow.makeVector(BigInt64Array.from(records, (p) => BigInt(p.id))),
            [INPUT_HASH]: arrow.makeVector(BigInt64Array.from(records, (p) => BigInt(p.hash))),
            children: arrow.makeVector(Int32Array.from(records, (p) => p.children)),
            version: arrow.vectorFromArray(records.map(() => computedWith(binding)), new arrow.Utf8()),
          }) as never,
        );
      }
      for (const f of group) finished.delete(f.id);
    },
  });
  return children;
}
