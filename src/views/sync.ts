/**
 * The row-synchronisation step of a view refresh, on public LanceDB APIs only. Against the source
 * pinned at version V:
 *
 * 1. live = ids of source rows matching the view's `where`, each with the hash of its selected values;
 * 2. deleted = view ids − live ids → `delete("__source_row_id IN (...)")` in batches;
 * 3. changed = ids in both whose hash differs → `mergeInsert` on `__source_row_id` writing the new
 *    values and hash and NULL in every other column (the UDF columns, recomputed by the next backfill);
 * 4. added = live ids − view ids → appended with their values and hash, other columns NULL (shuffled
 *    by source id when the view has a seed);
 * 5. the watermark (V) is written last.
 *
 * Every step is a set difference against what the view holds, so re-running after a crash at any
 * point converges to the same view, without duplicate or missing rows. A source write that changes
 * none of the selected columns leaves the hash, and so the view row, untouched.
 */
import { arrow, lancedb } from "../arrow.ts";
import type { ArrowNs, LanceNs } from "../arrow.ts";
import { ConfigError } from "../errors.ts";
import { resolveTable } from "../table.ts";
import { rowHash, shuffleKey } from "./hash.ts";
import { assertStableRowIds, INPUT_HASH, readView, SOURCE_ROW_ID, WATERMARK_KEY, type ViewDefinition } from "./view.ts";

/** Options of {@link syncView}. */
export interface SyncViewOptions {
  /** Source version to refresh to, forwards or backwards. @default the source's latest version */
  srcVersion?: number;
}

/** What {@link syncView} changed. */
export interface SyncViewResult {
  /** The source version the view now reflects. */
  readonly sourceVersion: number;
  readonly rowsAdded: number;
  readonly rowsDeleted: number;
  /** Rows whose selected values changed: updated, their UDF columns reset to NULL. */
  readonly rowsUpdated: number;
}

const DELETE_BATCH = 10_000;
const WRITE_BATCH = 50_000;
const SCAN = { maxBatchLength: 65_536 } as never;

/**
 * Brings view `name`'s rows in step with its source at `options.srcVersion` (default: latest),
 * leaving UDF columns NULL on added and changed rows; {@link refreshView} then fills them.
 * @throws ConfigError TABLE_NOT_FOUND (view or source missing), TABLE_UNSUPPORTED (not a view, or a
 * source without stable row ids), CONFIG_INVALID (a srcVersion the source does not have),
 * COLUMN_NOT_FOUND (a selected column the source no longer has).
 */
export async function syncView(db: string, name: string, options: SyncViewOptions = {}): Promise<SyncViewResult> {
  const { definition: def } = await readView(db, name);
  const viewRef = resolveTable({ db, table: name });
  const srcRef = resolveTable({ db, table: def.source });
  await assertStableRowIds(srcRef, `refresh view ${name} from it`);
  const conn = await lancedb.connect(viewRef.dbDir, { readConsistencyInterval: 0 });
  const source = await conn.openTable(def.source);
  const view = await conn.openTable(name);
  const sourceVersion = await pinSource(source, def.source, options.srcVersion);
  const srcSchema = await source.schema();
  for (const col of def.select) {
    if (!srcSchema.fields.some((f) => f.name === col)) {
      throw new ConfigError("COLUMN_NOT_FOUND", `view ${name} selects column ${col}, which source table ${def.source} does not have at version ${sourceVersion}`, { table: def.source, column: col });
    }
  }

  const live = await liveRows(source, def);
  const held = await viewRows(view);
  const deleted: bigint[] = [];
  for (const id of held.keys()) if (!live.has(id)) deleted.push(id);
  const added: bigint[] = [];
  const changed: bigint[] = [];
  for (const [id, hash] of live) {
    const h = held.get(id);
    if (h === undefined) added.push(id);
    else if (h !== hash) changed.push(id);
  }

  for (let i = 0; i < deleted.length; i += DELETE_BATCH) {
    await view.delete(`${SOURCE_ROW_ID} IN (${deleted.slice(i, i + DELETE_BATCH).join(", ")})`);
  }
  const viewSchema = await view.schema();
  changed.sort(cmp);
  for (let i = 0; i < changed.length; i += WRITE_BATCH) {
    const data = await viewBatch(source, def, viewSchema, changed.slice(i, i + WRITE_BATCH), live, false);
    await view.mergeInsert(SOURCE_ROW_ID).whenMatchedUpdateAll().execute(data as never);
  }
  if (def.shuffleSeed !== null) {
    const seed = def.shuffleSeed;
    const keys = new Map(added.map((id) => [id, shuffleKey(seed, id)]));
    added.sort((a, b) => cmp(keys.get(a)!, keys.get(b)!) || cmp(a, b));
  } else {
    added.sort(cmp);
  }
  for (let i = 0; i < added.length; i += WRITE_BATCH) {
    await view.add((await viewBatch(source, def, viewSchema, added.slice(i, i + WRITE_BATCH), live, def.shuffleSeed !== null)) as never);
  }
  if (added.length > 0 && !(await view.listIndices()).some((ix) => ix.columns.includes(SOURCE_ROW_ID))) {
    await view.createIndex(SOURCE_ROW_ID, { config: lancedb.Index.btree() });
  }
  await view.updateFieldMetadata([{ path: SOURCE_ROW_ID, metadata: { [WATERMARK_KEY]: JSON.stringify({ sourceVersion, refreshedAt: new Date().toISOString() }) } }] as never);
  return { sourceVersion, rowsAdded: added.length, rowsDeleted: deleted.length, rowsUpdated: changed.length };
}

const cmp = (a: bigint, b: bigint): number => (a < b ? -1 : a > b ? 1 : 0);

/** Checks out `srcVersion` (or stays at the latest) and returns the pinned version. */
async function pinSource(source: LanceNs.Table, name: string, srcVersion: number | undefined): Promise<number> {
  const latest = await source.version();
  if (srcVersion === undefined) {
    await source.checkout(latest);
    return latest;
  }
  if (!Number.isSafeInteger(srcVersion) || srcVersion < 1 || srcVersion > latest) {
    throw new ConfigError("CONFIG_INVALID", `srcVersion must be a version of source table ${name}, an integer from 1 to ${latest} (got ${JSON.stringify(srcVersion)})`, { table: name });
  }
  try {
    await source.checkout(srcVersion);
  } catch (e) {
    throw new ConfigError("CONFIG_INVALID", `srcVersion ${srcVersion} of source table ${name} cannot be read (cleaned up?): ${(e as Error).message.split("\n")[0]}`, { table: name, cause: e });
  }
  return srcVersion;
}

/** Ids of the pinned source's rows matching the view's filter, each with its input hash. */
async function liveRows(source: LanceNs.Table, def: ViewDefinition): Promise<Map<bigint, bigint>> {
  let q = source.query().withRowId().select([...def.select]);
  if (def.where !== null) q = q.where(def.where);
  const data = await q.toArrow(SCAN);
  const out = new Map<bigint, bigint>();
  for (const batch of data.batches) {
    const ids = batch.getChild("_rowid")!;
    const cols = def.select.map((c) => batch.getChild(c)!);
    for (let i = 0; i < batch.numRows; i++) out.set(BigInt(ids.get(i) as bigint), rowHash(cols.map((c) => c.get(i))));
  }
  return out;
}

/** The view's rows: source row id → stored input hash. */
async function viewRows(view: LanceNs.Table): Promise<Map<bigint, bigint>> {
  const data = await view.query().select([SOURCE_ROW_ID, INPUT_HASH]).toArrow(SCAN);
  const out = new Map<bigint, bigint>();
  for (const batch of data.batches) {
    const ids = batch.getChild(SOURCE_ROW_ID)!;
    const hashes = batch.getChild(INPUT_HASH)!;
    for (let i = 0; i < batch.numRows; i++) out.set(ids.get(i) as bigint, hashes.get(i) as bigint);
  }
  return out;
}

/**
 * View rows for source ids `ids`: their selected values read from the pinned source by stable row
 * id, their hash, and NULL in every other view column. LanceDB returns taken rows in id order; with
 * `keepOrder` they are put back in the order of `ids` (a shuffled append).
 */
async function viewBatch(source: LanceNs.Table, def: ViewDefinition, viewSchema: ArrowNs.Schema, ids: bigint[], hashes: Map<bigint, bigint>, keepOrder: boolean): Promise<ArrowNs.Table> {
  const taken = await source.takeRowIds(ids).withRowId().select([...def.select]).toArrow();
  if (taken.numRows !== ids.length) {
    throw new ConfigError("TABLE_UNSUPPORTED", `source table ${def.source} returned ${taken.numRows} of ${ids.length} rows by stable row id; its row ids are not stable`, { table: def.source });
  }
  const takenIds: bigint[] = Array.from(taken.getChild("_rowid")!.toArray() as ArrayLike<bigint>, (x) => BigInt(x));
  const n = ids.length;
  let order: number[] | null = null;
  if (keepOrder) {
    const at = new Map(takenIds.map((id, i) => [id, i]));
    order = ids.map((id) => at.get(id)!);
  }
  const rowIds = order ? order.map((j) => takenIds[j]!) : takenIds;
  const cols: Record<string, ArrowNs.Vector> = {};
  for (const f of viewSchema.fields) {
    if (f.name === SOURCE_ROW_ID) cols[f.name] = arrow.vectorFromArray(rowIds, new arrow.Int64());
    else if (f.name === INPUT_HASH) cols[f.name] = arrow.vectorFromArray(rowIds.map((id) => hashes.get(id)!), new arrow.Int64());
    else if (def.select.includes(f.name)) {
      const v = taken.getChild(f.name)!;
      cols[f.name] = order ? arrow.vectorFromArray(order.map((j) => v.get(j)), f.type) : v;
    } else cols[f.name] = arrow.vectorFromArray(new Array<null>(n).fill(null), f.type);
  }
  return new arrow.Table(cols);
}
