/**
 * The row-synchronisation step of a view refresh, on public LanceDB APIs only. Against the source
 * pinned at version V:
 *
 * 1. live = ids of source rows matching the view's `where`; candidates = those of them whose hash of
 *    selected values must be compared: all of them on a first or backwards refresh, else only rows
 *    written since the watermark W (`_row_last_updated_at_version > W`, which any write bumps, so the
 *    hash still decides);
 * 2. deleted = view ids − live ids → `delete("__source_row_id IN (...)")` in batches;
 * 3. changed = ids in both whose hash differs → replaced: deleted with step 2's rows and appended
 *    again in step 4 with the new values and hash and NULL UDF columns (recomputed by the next
 *    backfill in new fragments the graft fills, instead of rewriting a whole fragment's column);
 * 4. added = live ids − view ids → appended with their values and hash, other columns NULL (shuffled
 *    by source id when the view has a seed);
 * 5. the watermark (V) is written last. A backwards refresh first lowers the watermark to V, so a
 *    crash part-way never leaves rows changed after the recorded watermark.
 *
 * Every step is a set difference against what the view holds, so re-running after a crash at any
 * point converges to the same view, without duplicate or missing rows. A source write that changes
 * none of the selected columns leaves the hash, and so the view row, untouched.
 */
import { arrow, lancedb } from "../arrow.ts";
import type { ArrowNs, LanceNs } from "../arrow.ts";
import { setImmediate as yieldToLoop } from "node:timers/promises";
import { ConfigError } from "../errors.ts";
import { holdingLock } from "../jobs/lock.ts";
import { resolveTable } from "../table.ts";
import { failpoint } from "../failpoints.ts";
import { takeRows } from "../udf/values.ts";
import { rowHash, shuffleKey } from "./hash.ts";
import { assertStableRowIds, INPUT_HASH, readView, SOURCE_ROW_ID, WATERMARK_KEY, type ViewDefinition, type ViewWatermark } from "./view.ts";

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
  return withViewLock(db, name, () => syncViewLocked(db, name, options));
}

/** The lock a refresh of a view holds (in the view's Lancet store): two refreshes of one view never run at once. */
export const VIEW_REFRESH_LOCK = ".view-refresh";

/**
 * Runs `fn` holding view `name`'s refresh lock (the column lock's mechanism: complete lock files,
 * a renewed lease, takeover of a dead holder's lock).
 * @throws ConfigError TABLE_BUSY when another process refreshes the view
 */
export async function withViewLock<T>(db: string, name: string, fn: () => Promise<T>): Promise<T> {
  await readView(db, name); // a clear error for a table that is not a view, before any lock file is written
  return holdingLock(resolveTable({ db, table: name }).storeDir, name, VIEW_REFRESH_LOCK, `view ${name} is being refreshed`, fn);
}

/** {@link syncView}, for a caller that holds the view's refresh lock. */
export async function syncViewLocked(db: string, name: string, options: SyncViewOptions = {}): Promise<SyncViewResult> {
  const { definition: def, watermark } = await readView(db, name);
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

  // Rows written at or before the watermark W are as the view holds them, when moving forwards.
  const since = watermark !== null && sourceVersion >= watermark.sourceVersion ? watermark.sourceVersion : null;
  const live = since === null ? null : await liveIds(source, def);
  const held = await viewRows(view);
  const { hashes: hashed, scan } = await hashedRows(source, def, since, held);
  const deleted: number[] = [];
  const present = live ?? hashed;
  await eachYielding(held.keys(), (id) => {
    if (!present.has(id)) deleted.push(id);
  });
  const added: number[] = [];
  const changed: number[] = [];
  await eachYielding(live ?? hashed.keys(), (id) => {
    if (!held.has(id)) added.push(id);
  });
  await eachYielding(hashed, ([id, hash]) => {
    const h = held.get(id);
    if (h !== undefined && h !== hash) changed.push(id);
  });
  if (watermark !== null && sourceVersion < watermark.sourceVersion && deleted.length + added.length + changed.length > 0) {
    await writeWatermark(view, { sourceVersion, refreshedAt: watermark.refreshedAt });
  }

  // A changed row is replaced: removed with the deleted ones and appended again with the added ones,
  // its UDF values NULL. (Resetting it in place would rewrite the UDF columns of its whole fragment
  // through mergeInsert; appended rows land in new fragments the graft fills. If a refresh dies in
  // between, the next one sees the row missing from the view and appends it.)
  const removed = [...deleted, ...changed];
  for (let i = 0; i < removed.length; i += DELETE_BATCH) {
    await view.delete(`${SOURCE_ROW_ID} IN (${removed.slice(i, i + DELETE_BATCH).join(", ")})`);
  }
  failpoint("view.mid-sync");
  const viewSchema = await view.schema();
  const toAppend = [...added, ...changed];
  if (def.shuffleSeed !== null) {
    const seed = def.shuffleSeed;
    const keys = new Map(toAppend.map((id) => [id, shuffleKey(seed, BigInt(id))]));
    toAppend.sort((a, b) => cmpBig(keys.get(a)!, keys.get(b)!) || a - b);
  }
  // In source order, the rows to add are in the scan already: written from it, in few large
  // fragments; with a shuffle (or a row the scan missed) they are taken by stable row id.
  const rest = def.shuffleSeed === null ? await appendFromScan(view, def, viewSchema, scan, toAppend) : toAppend;
  for (let i = 0; i < rest.length; i += WRITE_BATCH) {
    await view.add((await viewBatch(source, def, viewSchema, rest.slice(i, i + WRITE_BATCH), def.shuffleSeed !== null)) as never);
  }
  if (added.length > 0 && !(await view.listIndices()).some((ix) => ix.columns.includes(SOURCE_ROW_ID))) {
    await view.createIndex(SOURCE_ROW_ID, { config: lancedb.Index.btree() });
  }
  await writeWatermark(view, { sourceVersion, refreshedAt: new Date().toISOString() });
  return { sourceVersion, rowsAdded: added.length, rowsDeleted: deleted.length, rowsUpdated: changed.length };
}

async function writeWatermark(view: LanceNs.Table, w: ViewWatermark): Promise<void> {
  await view.updateFieldMetadata([{ path: SOURCE_ROW_ID, metadata: { [WATERMARK_KEY]: JSON.stringify(w) } }] as never);
}

/** An Arrow value as plain JS (lists as arrays, structs as objects), which vectorFromArray rebuilds for any type. */
function plain(x: unknown): unknown {
  if (x === null || typeof x !== "object" || x instanceof Date || x instanceof Uint8Array) return x;
  if (x instanceof arrow.Vector) return Array.from(x as Iterable<unknown>, plain);
  if (ArrayBuffer.isView(x)) return Array.from(x as unknown as ArrayLike<unknown>, plain);
  const json = typeof (x as { toJSON?: unknown }).toJSON === "function" ? (x as { toJSON(): unknown }).toJSON() : x;
  if (json !== null && typeof json === "object" && !Array.isArray(json)) return Object.fromEntries(Object.entries(json).map(([k, y]) => [k, plain(y)]));
  return json;
}

const cmpBig = (a: bigint, b: bigint): number => (a < b ? -1 : a > b ? 1 : 0);

/** Calls `fn` on every item, yielding to the event loop every 65,536 items (sets of a million ids). */
async function eachYielding<T>(items: Iterable<T>, fn: (x: T) => void): Promise<void> {
  let k = 0;
  for (const x of items) {
    fn(x);
    if (++k % 65_536 === 0) await yieldToLoop();
  }
}

/**
 * Row ids as JS numbers: Maps and Sets of bigints are ~10× slower. Stable row ids are a counter of
 * rows ever written, far below 2^53.
 */
function idsOf(v: ArrowNs.Vector | null, column: string): ArrayLike<number> {
  const raw = v!.toArray() as BigInt64Array | BigUint64Array;
  const out = new Float64Array(raw.length);
  for (let i = 0; i < raw.length; i++) {
    const x = raw[i]!;
    if (x > 9007199254740991n || x < 0n) throw new ConfigError("TABLE_UNSUPPORTED", `${column} ${x} is outside the row ids Lancet's views support (0 .. 2^53-1)`);
    out[i] = Number(x);
  }
  return out;
}

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

/** Ids of the pinned source's rows matching the view's filter. */
async function liveIds(source: LanceNs.Table, def: ViewDefinition): Promise<Set<number>> {
  let q = source.query().withRowId().select([]);
  if (def.where !== null) q = q.where(def.where);
  const data = await q.toArrow(SCAN);
  const out = new Set<number>();
  for (const batch of data.batches) {
    await yieldToLoop(); // one scan batch (≤ 65,536 rows) at a time: the event loop keeps its heartbeats
    const ids = idsOf(batch.getChild("_rowid"), "_rowid");
    for (let i = 0; i < ids.length; i++) out.add(ids[i]!);
  }
  return out;
}

/**
 * Rows of the pinned source matching the view's filter (and written after version `since`, if set),
 * each with its input hash when the view holds the row (0n otherwise: a row to add, hashed when taken).
 */
async function hashedRows(source: LanceNs.Table, def: ViewDefinition, since: number | null, held: ReadonlyMap<number, bigint>): Promise<{ hashes: Map<number, bigint>; scan: ArrowNs.Table }> {
  const filters = [def.where === null ? null : `(${def.where})`, since === null ? null : `_row_last_updated_at_version > ${since}`].filter((f) => f !== null);
  let q = source.query().withRowId().select([...def.select]);
  if (filters.length > 0) q = q.where(filters.join(" AND "));
  const data = await q.toArrow(SCAN);
  const out = new Map<number, bigint>();
  for (const batch of data.batches) {
    await yieldToLoop(); // one scan batch (≤ 65,536 rows) at a time: the event loop keeps its heartbeats
    const ids = idsOf(batch.getChild("_rowid"), "_rowid");
    const cols = def.select.map((c) => batch.getChild(c)!);
    for (let i = 0; i < ids.length; i++) out.set(ids[i]!, held.has(ids[i]!) ? rowHash(cols.map((c) => c.get(i))) : 0n);
  }
  return { hashes: out, scan: data };
}

/** The view's rows: source row id → stored input hash. */
async function viewRows(view: LanceNs.Table): Promise<Map<number, bigint>> {
  const data = await view.query().select([SOURCE_ROW_ID, INPUT_HASH]).toArrow(SCAN);
  const out = new Map<number, bigint>();
  for (const batch of data.batches) {
    await yieldToLoop(); // one scan batch (≤ 65,536 rows) at a time: the event loop keeps its heartbeats
    const ids = idsOf(batch.getChild(SOURCE_ROW_ID), SOURCE_ROW_ID);
    const hashes = batch.getChild(INPUT_HASH)!.toArray() as BigInt64Array;
    for (let i = 0; i < ids.length; i++) out.set(ids[i]!, hashes[i]!);
  }
  return out;
}

/** A view append of at most this many rows, or about this many bytes: one fragment each. */
const APPEND_ROWS = 262_144;
const APPEND_BYTES = 16 * 1024 * 1024;

/**
 * Appends the rows of `ids` found in `scan` (the pinned source's selected columns with `_rowid`, in
 * source order) to the view, a few large appends, each row with its input hash and NULL UDF
 * columns; returns the ids the scan did not hold.
 */
async function appendFromScan(view: LanceNs.Table, def: ViewDefinition, viewSchema: ArrowNs.Schema, scan: ArrowNs.Table, ids: readonly number[]): Promise<number[]> {
  const wanted = new Set<number>();
  await eachYielding(ids, (id) => void wanted.add(id));
  let parts: ArrowNs.Table[] = [];
  let rows = 0;
  let bytes = 0;
  const flush = async (): Promise<void> => {
    if (rows === 0) return;
    const names = parts[0]!.schema.fields.map((f) => f.name);
    await view.add(new arrow.Table(Object.fromEntries(names.map((n) => [n, parts.map((p) => p.getChild(n)!).reduce((a, b) => a.concat(b))]))) as never);
    parts = [];
    rows = 0;
    bytes = 0;
  };
  for (const batch of scan.batches) {
    await yieldToLoop();
    const ids = idsOf(batch.getChild("_rowid"), "_rowid");
    const at: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      if (wanted.delete(ids[i]!)) at.push(i);
    }
    if (at.length === 0) continue;
    const selected = def.select.map((c) => takeRows(batch.getChild(c)! as ArrowNs.Vector, at));
    const cols: Record<string, ArrowNs.Vector> = {};
    for (const f of viewSchema.fields) {
      if (f.name === SOURCE_ROW_ID) cols[f.name] = arrow.vectorFromArray(at.map((i) => BigInt(ids[i]!)), new arrow.Int64());
      else if (f.name === INPUT_HASH) cols[f.name] = arrow.vectorFromArray(at.map((_, k) => rowHash(selected.map((v) => v.get(k)))), new arrow.Int64());
      else if (def.select.includes(f.name)) cols[f.name] = selected[def.select.indexOf(f.name)]!;
      // UDF columns are left out: the appended fragment has no file for them (they read NULL), so
      // the graft can write them (a file of explicit NULLs would send them through mergeInsert).
    }
    const part = new arrow.Table(cols);
    parts.push(part);
    rows += at.length;
    bytes += part.data.reduce((sum, d) => sum + d.byteLength, 0);
    if (rows >= APPEND_ROWS || bytes >= APPEND_BYTES) await flush();
  }
  await flush();
  return [...wanted];
}

/**
 * View rows for source ids `ids`: their selected values read from the pinned source by stable row
 * id, their input hash (computed from the values taken), and NULL in every other view column. LanceDB returns taken rows in id order; with
 * `keepOrder` they are put back in the order of `ids` (a shuffled append).
 */
async function viewBatch(source: LanceNs.Table, def: ViewDefinition, viewSchema: ArrowNs.Schema, ids: number[], keepOrder: boolean): Promise<ArrowNs.Table> {
  const taken = await source.takeRowIds(ids).withRowId().select([...def.select]).toArrow();
  if (taken.numRows !== ids.length) {
    throw new ConfigError("TABLE_UNSUPPORTED", `source table ${def.source} returned ${taken.numRows} of ${ids.length} rows by stable row id; its row ids are not stable`, { table: def.source });
  }
  const takenIds: number[] = Array.from(idsOf(taken.getChild("_rowid"), "_rowid"));
  let order: number[] | null = null;
  if (keepOrder) {
    const at = new Map(takenIds.map((id, i) => [id, i]));
    order = ids.map((id) => at.get(id)!);
  }
  const rowIds = order ? order.map((j) => takenIds[j]!) : takenIds;
  const takenCols = def.select.map((c) => taken.getChild(c)!);
  const hashes = (order ?? takenIds.map((_, j) => j)).map((j) => rowHash(takenCols.map((c) => c.get(j))));
  const cols: Record<string, ArrowNs.Vector> = {};
  for (const f of viewSchema.fields) {
    if (f.name === SOURCE_ROW_ID) cols[f.name] = arrow.vectorFromArray(rowIds.map(BigInt), new arrow.Int64());
    else if (f.name === INPUT_HASH) cols[f.name] = arrow.vectorFromArray(hashes, new arrow.Int64());
    else if (def.select.includes(f.name)) {
      const v = taken.getChild(f.name)!;
      cols[f.name] = order ? arrow.vectorFromArray(order.map((j) => plain(v.get(j))), f.type) : v;
    } // UDF columns are left out (no file in the new fragment: they read NULL until backfilled).
  }
  return new arrow.Table(cols);
}
