/**
 * The row-synchronisation step of a view refresh, on public LanceDB APIs and the source's manifests.
 * Against the source pinned at version V, it works out a delta and applies it:
 *
 * 1. the delta — deleted: view rows whose source row is gone or no longer matches the view's `where`;
 *    changed: view rows whose selected values differ (by input hash); added: matching source rows
 *    the view lacks. Moving forwards from watermark W it reads only what changed
 *    ({@link changesSince}): rows written after W (`_row_last_updated_at_version > W`, which any
 *    write bumps, so the hash still decides), looked up in the view by id, and rows deleted after W,
 *    from the fragments whose deletions grew. Otherwise (first or backwards refresh, a source
 *    compacted or rewritten since W) it reads every id of the source and the view ({@link everyRow});
 * 2. deleted and changed rows are removed (`delete("__source_row_id IN (...)")` in batches);
 * 3. added and changed rows are appended with their values and hash, UDF columns absent (NULL; the
 *    next backfill fills them in the new fragments, through the graft), shuffled by source id when
 *    the view has a seed;
 * 4. the watermark (V) is written last. A backwards refresh first lowers the watermark to V, so a
 *    crash part-way never leaves rows changed after the recorded watermark.
 *
 * Every step compares with what the view holds, so re-running after a crash at any point converges
 * to the same view, without duplicate or missing rows. A source write that changes none of the
 * selected columns leaves the hash, and so the view row, untouched.
 */
import { arrow, lancedb } from "../arrow.ts";
import type { ArrowNs, LanceNs } from "../arrow.ts";
import { setImmediate as yieldToLoop } from "node:timers/promises";
import { ConfigError } from "../errors.ts";
import { holdingLock, type ColumnLock } from "../jobs/lock.ts";
import { readManifest, type ManifestInfo } from "../read/manifest.ts";
import { resolveTable, type ResolvedTable } from "../table.ts";
import { failpoint } from "../failpoints.ts";
import { inFilters } from "../sql.ts";
import { takeRows } from "../udf/values.ts";
import { hashRows, shuffleKey } from "./hash.ts";
import { assertStableRowIds, INPUT_HASH, readView, SOURCE_ROW_ID, WATERMARK_KEY, watermarkField, type ViewDefinition, type ViewWatermark } from "./view.ts";
import { connectDb } from "../storage/location.ts";

/** Options of {@link syncView}. */
export interface SyncViewOptions {
  /** Source version to refresh to, forwards or backwards. @default the source's latest version */
  srcVersion?: number;
  /** Compare every row of the source and the view, not only the rows changed since the last refresh (a check, or a repair of a view written by hand). @default false */
  full?: boolean;
}

/** What {@link syncView} changed. */
export interface SyncViewResult {
  /** The source version the view now reflects. */
  readonly sourceVersion: number;
  readonly rowsAdded: number;
  readonly rowsDeleted: number;
  /** Rows whose selected values changed: updated, their UDF columns reset to NULL. */
  readonly rowsUpdated: number;
  /**
   * What the sync read: `changes` — only the source rows written or deleted since the last refresh
   * (looked up in the view by id); `all` — every id of the source and the view (a first or backwards
   * refresh, or a source compacted, overwritten or restored since, or too many changes).
   */
  readonly read: "changes" | "all";
}

/** An incremental sync looks rows up by id while the changes are at most this share of the view's rows (or LOOKUP_MIN rows); past that, reading every id is cheaper. */
const LOOKUP_SHARE = 0.125;
const LOOKUP_MIN = 50_000;
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
export async function withViewLock<T>(db: string, name: string, fn: (lock: ColumnLock) => Promise<T>): Promise<T> {
  await readView(db, name); // a clear error for a table that is not a view, before any lock file is written
  return holdingLock(resolveTable({ db, table: name }).storeDir, name, VIEW_REFRESH_LOCK, `view ${name} is being refreshed`, fn);
}

/** {@link syncView}, for a caller that holds the view's refresh lock. */
export async function syncViewLocked(db: string, name: string, options: SyncViewOptions = {}): Promise<SyncViewResult> {
  const { def, watermark, srcRef, conn, source, view, sourceVersion } = await openRefresh(db, name, options.srcVersion);
  if (def.chunker !== null || def.udtf !== null) throw new ConfigError("TABLE_UNSUPPORTED", `view ${name} is a ${def.chunker !== null ? "chunk" : "UDTF"} view: its rows are computed on workers; refresh it with refreshView / lancet refresh`, { table: name });
  await assertStableRowIds(srcRef, `refresh view ${name} from it`);
  await requireSourceColumns(source, def.select, (col) => new ConfigError("COLUMN_NOT_FOUND", `view ${name} selects column ${col}, which source table ${def.source} does not have at version ${sourceVersion}`, { table: def.source, column: col }));

  const delta = await sourceDelta(conn, source, view, srcRef, def, sinceOf(watermark, sourceVersion, options.full === true), sourceVersion);
  const { deleted, changed, added } = delta;
  await lowerWatermarkFirst(view, watermark, sourceVersion, delta);

  // A changed row is replaced: removed with the deleted ones and appended again with the added ones,
  // its UDF values NULL. (Resetting it in place would rewrite the UDF columns of its whole fragment
  // through mergeInsert; appended rows land in new fragments the graft fills. If a refresh dies in
  // between, the next one sees the row missing from the view and appends it.)
  for (const f of inFilters(SOURCE_ROW_ID, [...deleted, ...changed])) await view.delete(f);
  failpoint("view.mid-sync");
  const viewSchema = await view.schema();
  const toAppend = [...added, ...changed];
  if (def.shuffleSeed !== null) {
    const seed = def.shuffleSeed;
    const keys = new Map(toAppend.map((id) => [id, shuffleKey(seed, BigInt(id))]));
    toAppend.sort((a, b) => cmpBig(keys.get(a)!, keys.get(b)!) || a - b);
  }
  // In source order, the rows to add are in the scan already: written from it, in few large
  // fragments; with a shuffle they are taken by stable row id, in the shuffled order.
  if (def.shuffleSeed === null) await appendFromScan(view, def, viewSchema, delta.scan, delta.append);
  else {
    for (let i = 0; i < toAppend.length; i += WRITE_BATCH) await view.add((await viewBatch(source, def, viewSchema, toAppend.slice(i, i + WRITE_BATCH))) as never);
  }
  if (added.length > 0) await ensureSourceRowIndex(view);
  await writeWatermark(view, { sourceVersion, refreshedAt: new Date().toISOString() });
  return { sourceVersion, rowsAdded: added.length, rowsDeleted: deleted.length, rowsUpdated: changed.length, read: delta.read };
}

/** What a view's row step starts from: its definition and watermark, the source pinned at `srcVersion` (default: latest) and the view. */
export async function openRefresh(db: string, name: string, srcVersion: number | undefined): Promise<{ def: ViewDefinition; watermark: ViewWatermark | null; viewRef: ResolvedTable; srcRef: ResolvedTable; conn: LanceNs.Connection; source: LanceNs.Table; view: LanceNs.Table; sourceVersion: number }> {
  const { definition: def, watermark } = await readView(db, name);
  const viewRef = resolveTable({ db, table: name });
  const srcRef = resolveTable({ db, table: def.source });
  const conn = await connectDb(viewRef.dbDir, { readConsistencyInterval: 0 });
  const source = await conn.openTable(def.source);
  const view = await conn.openTable(name);
  const sourceVersion = await pinSource(source, def.source, srcVersion);
  return { def, watermark, viewRef, srcRef, conn, source, view, sourceVersion };
}

/** Throws `missing(col)` for the first of `columns` the pinned source does not have. */
export async function requireSourceColumns(source: LanceNs.Table, columns: readonly string[], missing: (col: string) => Error): Promise<void> {
  const fields = (await source.schema()).fields;
  const col = columns.find((c) => !fields.some((f) => f.name === c));
  if (col !== undefined) throw missing(col);
}

/**
 * The watermark W a sync reads the changes since: when moving forwards from it (and not asked to
 * compare every row); null — read every row — on a first or backwards refresh.
 */
export function sinceOf(watermark: ViewWatermark | null, sourceVersion: number, full: boolean): number | null {
  return watermark !== null && sourceVersion >= watermark.sourceVersion && !full ? watermark.sourceVersion : null;
}

/** A backwards refresh with changes lowers the watermark to V first, so a crash part-way never leaves rows changed after the recorded watermark. */
export async function lowerWatermarkFirst(view: LanceNs.Table, watermark: ViewWatermark | null, sourceVersion: number, d: Pick<Delta, "deleted" | "changed" | "added">): Promise<void> {
  if (watermark !== null && sourceVersion < watermark.sourceVersion && d.deleted.length + d.added.length + d.changed.length > 0) {
    await writeWatermark(view, { sourceVersion, refreshedAt: watermark.refreshedAt });
  }
}

/** The BTREE on `__source_row_id` that a view's deletes and lookups by id use, created once. */
export async function ensureSourceRowIndex(view: LanceNs.Table): Promise<void> {
  if (!(await view.listIndices()).some((ix) => ix.columns.includes(SOURCE_ROW_ID))) await view.createIndex(SOURCE_ROW_ID, { config: lancedb.Index.btree() });
}

/**
 * What changed in the pinned source (at `version`) against `held` — a table of `__source_row_id` and
 * `__input_hash` per source row it reflects (a view, or a chunk view's record of expanded parents):
 * read from the changes since `since` where the source's history allows, else from every row.
 * `def.select` names the hashed columns.
 */
export async function sourceDelta(conn: LanceNs.Connection, source: LanceNs.Table, held: LanceNs.Table, srcRef: ResolvedTable, def: Pick<ViewDefinition, "source" | "where" | "select">, since: number | null, version: number): Promise<Delta> {
  return (since !== null ? await changesSince(conn, source, held, srcRef, def, since, version) : null) ?? (await everyRow(source, held, def));
}

/** What a sync changes in the view, and the source rows it appends from. */
export interface Delta {
  /** View rows to remove: their source rows are gone or no longer match the view's filter. */
  readonly deleted: number[];
  /** View rows whose selected values changed (replaced). */
  readonly changed: number[];
  /** Source rows the view lacks. */
  readonly added: number[];
  /** The pinned source's selected columns and `_rowid`, in source order, holding every added and changed row. */
  readonly scan: ArrowNs.Table;
  /** Per row of `scan`: 1 when it is to be appended (added or changed). */
  readonly append: Uint8Array;
  readonly read: SyncViewResult["read"];
}

/**
 * The delta from every id: the pinned source's matching rows (their values, hashed) against every
 * row the view holds. For a first or backwards refresh, or when {@link changesSince} cannot tell.
 */
async function everyRow(source: LanceNs.Table, view: LanceNs.Table, def: Pick<ViewDefinition, "source" | "where" | "select">): Promise<Delta> {
  let q = source.query().withRowId().select([...def.select]);
  if (def.where !== null) q = q.where(def.where);
  const scan = await q.toArrow(SCAN);
  return { ...(await classify(scan, def.select, await viewRows(view))), scan, read: "all" };
}

/**
 * Sorts the rows of `scan` (source rows with `_rowid` and the hashed columns `select`) against `held`
 * (source row id → stored input hash, the rows the view holds that the scan decides on): added (not
 * held), changed (hash differs), and, of the held ones, deleted (not in the scan). `append` flags the
 * scan's added and changed rows.
 */
async function classify(scan: ArrowNs.Table, select: readonly string[], held: ReadonlyMap<number, bigint>): Promise<Pick<Delta, "deleted" | "changed" | "added" | "append">> {
  const added: number[] = [];
  const changed: number[] = [];
  const seen = new Set<number>();
  const append = new Uint8Array(scan.numRows);
  let at = 0;
  for (const batch of scan.batches) {
    await yieldToLoop(); // one scan batch (≤ 65,536 rows) at a time: the event loop keeps its heartbeats
    const ids = idsOf(batch.getChild("_rowid"), "_rowid");
    if (held.size === 0) {
      // Nothing held (a first refresh): every row is added, no hash to compare.
      for (let i = 0; i < ids.length; i++) added.push(ids[i]!);
      append.fill(1, at, at + ids.length);
      at += ids.length;
      continue;
    }
    const hashes = hashRows(select.map((c) => batch.getChild(c)!));
    for (let i = 0; i < ids.length; i++, at++) {
      const id = ids[i]!;
      seen.add(id);
      const h = held.get(id);
      if (h === undefined) added.push(id);
      else if (h !== hashes[i]) changed.push(id);
      else continue;
      append[at] = 1;
    }
  }
  const deleted: number[] = [];
  await eachYielding(held.keys(), (id) => void (seen.has(id) || deleted.push(id)));
  return { deleted, changed, added, append };
}

/**
 * The delta from what changed in the source between versions `since` (W) and `version` (V), without
 * reading every id: rows written after W (`_row_last_updated_at_version > W`: inserted, updated, or
 * moved by an update) are looked up in the view by id; rows deleted after W are found in the
 * fragments whose deletions grew (their ids at W less their ids at V). Returns null — read every
 * id instead — when the source's manifests do not allow that: version W cleaned up, a fragment of W
 * gone or rewritten (compaction, a delete of whole fragments, an overwrite), a fragment with fewer
 * deletions than at W or rows not written after W (a restore), or too many changes for lookups by
 * id to pay off.
 */
async function changesSince(conn: LanceNs.Connection, source: LanceNs.Table, view: LanceNs.Table, srcRef: ResolvedTable, def: Pick<ViewDefinition, "source" | "where" | "select">, since: number, version: number): Promise<Delta | null> {
  let mW: ManifestInfo;
  let mV: ManifestInfo;
  try {
    [mW, mV] = await Promise.all([readManifest(srcRef.tableDir, since), readManifest(srcRef.tableDir, version)]);
  } catch {
    return null; // version W cleaned up (or the store is not a local directory)
  }
  const atV = new Map(mV.fragments.map((f) => [f.id, f]));
  const atW = new Set(mW.fragments.map((f) => f.id));
  /** Fragments of W with rows deleted or moved since (an update moves a row to a new fragment, keeping its id). */
  const shrunk: { id: number; offsetW: number; offsetV: number; rowsW: number; rowsV: number }[] = [];
  /** Fragments of W gone since: every row deleted or moved (updated, or compacted). */
  const vanished: { id: number; offsetW: number; rowsW: number }[] = [];
  for (const f of mW.fragments) {
    const g = atV.get(f.id);
    if (g === undefined) {
      if (f.liveRows > 0) vanished.push({ id: f.id, offsetW: offsetOf(mW, f.id), rowsW: f.liveRows });
    } else if (g.physicalRows !== f.physicalRows || g.liveRows > f.liveRows || !f.files.every((x) => g.files.some((y) => y.path === x.path))) {
      // Rewritten in place, rows brought back, or a data file of W gone (a restore to before a
      // column was written: its rows keep their old update versions) — compare every row.
      return null;
    } else if (g.liveRows < f.liveRows) {
      shrunk.push({ id: f.id, offsetW: offsetOf(mW, f.id), offsetV: offsetOf(mV, f.id), rowsW: f.liveRows, rowsV: g.liveRows });
    }
  }
  const budget = Math.max(LOOKUP_MIN, Math.floor((await view.countRows()) * LOOKUP_SHARE));
  if (shrunk.reduce((s, f) => s + f.rowsW - f.rowsV, 0) + vanished.reduce((s, f) => s + f.rowsW, 0) > budget) return null;

  // Rows written after W, wherever they are.
  const touchedQ = source.query().withRowId().select({ _rowaddr: "_rowaddr" } as never).where(`_row_last_updated_at_version > ${since}`);
  const touchedData = await touchedQ.toArrow(SCAN);
  if (touchedData.numRows > budget) return null;
  const touched = new Set<number>();
  const perFragment = new Map<number, number>();
  for (const batch of touchedData.batches) {
    const ids = idsOf(batch.getChild("_rowid"), "_rowid");
    const addrs = batch.getChild("_rowaddr")!.toArray() as BigUint64Array;
    for (let i = 0; i < ids.length; i++) {
      touched.add(ids[i]!);
      const frag = Number(addrs[i]! >> 32n);
      perFragment.set(frag, (perFragment.get(frag) ?? 0) + 1);
    }
  }
  /** Rows of fragments new since W that were not written since W: moved there by a compaction (or brought back by a restore). */
  let untouchedInNew = 0;
  for (const g of mV.fragments) if (!atW.has(g.id)) untouchedInNew += g.liveRows - (perFragment.get(g.id) ?? 0);

  // Rows deleted after W: ids of W's shrunk or vanished fragments that are neither still there nor
  // written since (moved by an update) nor moved by a compaction.
  const gone: number[] = [];
  if (shrunk.length + vanished.length > 0) {
    const atWTable = await conn.openTable(def.source);
    await atWTable.checkout(since);
    for (const f of shrunk) {
      const idsW = await fragmentIds(atWTable, f.id, f.offsetW, f.rowsW);
      const idsV = await fragmentIds(source, f.id, f.offsetV, f.rowsV);
      if (idsW === null || idsV === null) return null;
      let j = 0;
      for (let i = 0; i < idsW.length; i++) {
        if (j < idsV.length && idsW[i] === idsV[j]) j++;
        else if (!touched.has(idsW[i]!)) gone.push(idsW[i]!);
      }
      if (j !== idsV.length) return null; // not the same rows less some: cannot tell
      await yieldToLoop();
    }
    const candidates: number[] = [];
    for (const f of vanished) {
      const idsW = await fragmentIds(atWTable, f.id, f.offsetW, f.rowsW);
      if (idsW === null) return null;
      for (let i = 0; i < idsW.length; i++) if (!touched.has(idsW[i]!)) candidates.push(idsW[i]!);
    }
    const live = await liveIds(source, candidates);
    for (const id of candidates) if (!live.has(id)) gone.push(id);
    if (live.size !== untouchedInNew) return null; // rows that were not live at W are back (a restore)
  } else if (untouchedInNew !== 0) {
    return null;
  }

  // The rows written after W that match the view's filter, with their values.
  const q = source.query().withRowId().select([...def.select]).where(def.where === null ? `_row_last_updated_at_version > ${since}` : `(_row_last_updated_at_version > ${since}) AND (${def.where})`);
  const scan = await q.toArrow(SCAN);
  // Held rows that are gone, or were written and no longer match, are the held ones the scan lacks.
  return { ...(await classify(scan, def.select, await viewHashes(view, [...touched, ...gone]))), scan, read: "changes" };
}

/** A fragment's offset among the live rows of its version (the scan order is the manifest's fragment order). */
function offsetOf(m: ManifestInfo, id: number): number {
  let at = 0;
  for (const f of m.fragments) {
    if (f.id === id) return at;
    at += f.liveRows;
  }
  throw new Error(`fragment ${id} is not in version ${m.version}`);
}

/** The ids of fragment `id`'s live rows, in order, read by offset on a pinned handle; null when the rows read are not that fragment's. */
async function fragmentIds(table: LanceNs.Table, id: number, offset: number, rows: number): Promise<Float64Array | null> {
  if (rows === 0) return new Float64Array(0);
  const data = await table.query().withRowId().select({ _rowaddr: "_rowaddr" } as never).offset(offset).limit(rows).toArrow(SCAN);
  if (data.numRows !== rows) return null;
  const addrs = data.getChild("_rowaddr")!;
  if (Number((addrs.get(0) as bigint) >> 32n) !== id || Number((addrs.get(rows - 1) as bigint) >> 32n) !== id) return null;
  return idsOf(data.getChild("_rowid"), "_rowid");
}

/** Which of `ids` are rows of the pinned source, looked up by stable row id. */
async function liveIds(source: LanceNs.Table, ids: readonly number[]): Promise<Set<number>> {
  const out = new Set<number>();
  for (const f of inFilters("_rowid", ids)) {
    const data = await source.query().withRowId().select([]).where(f).toArrow(SCAN);
    for (const batch of data.batches) for (const id of idsOf(batch.getChild("_rowid"), "_rowid")) out.add(id);
  }
  return out;
}

/** Stored input hashes of the view rows of source ids `ids` (those the view holds), looked up by id. */
async function viewHashes(view: LanceNs.Table, ids: readonly number[]): Promise<Map<number, bigint>> {
  const out = new Map<number, bigint>();
  for (const f of inFilters(SOURCE_ROW_ID, ids)) await readHashes(await view.query().where(f).select([SOURCE_ROW_ID, INPUT_HASH]).toArrow(SCAN), out);
  return out;
}

export async function writeWatermark(view: LanceNs.Table, w: ViewWatermark): Promise<void> {
  await view.updateFieldMetadata([{ path: watermarkField(await view.schema()), metadata: { [WATERMARK_KEY]: JSON.stringify(w) } }] as never);
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
 * Row ids (a 64-bit integer column) as JS numbers, read from the two 32-bit halves without making a
 * bigint per id: Maps and Sets of bigints are ~10× slower. Stable row ids are a counter of rows ever
 * written, far below 2^53.
 */
function idsOf(v: ArrowNs.Vector | null, column: string): Float64Array {
  const raw = v!.toArray() as BigInt64Array | BigUint64Array;
  const words = new Uint32Array(raw.buffer, raw.byteOffset, raw.length * 2);
  const out = new Float64Array(raw.length);
  for (let i = 0; i < raw.length; i++) {
    const hi = words[2 * i + 1]!;
    if (hi >= 0x200000) throw new ConfigError("TABLE_UNSUPPORTED", `${column} ${raw[i]} is outside the row ids Lancet's views support (0 .. 2^53-1)`);
    out[i] = hi * 4294967296 + words[2 * i]!;
  }
  return out;
}

/** Checks out `srcVersion` (or stays at the latest) and returns the pinned version. */
export async function pinSource(source: LanceNs.Table, name: string, srcVersion: number | undefined): Promise<number> {
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

/** The view's rows: source row id → stored input hash. */
async function viewRows(view: LanceNs.Table): Promise<Map<number, bigint>> {
  const out = new Map<number, bigint>();
  await readHashes(await view.query().select([SOURCE_ROW_ID, INPUT_HASH]).toArrow(SCAN), out);
  return out;
}

/** Adds the (source row id → input hash) pairs of a query of `__source_row_id, __input_hash` to `out`. */
async function readHashes(data: ArrowNs.Table, out: Map<number, bigint>): Promise<void> {
  for (const batch of data.batches) {
    await yieldToLoop(); // one scan batch (≤ 65,536 rows) at a time: the event loop keeps its heartbeats
    const ids = idsOf(batch.getChild(SOURCE_ROW_ID), SOURCE_ROW_ID);
    const hashes = batch.getChild(INPUT_HASH)!.toArray() as BigInt64Array;
    for (let i = 0; i < ids.length; i++) out.set(ids[i]!, hashes[i]!);
  }
}

/** A view append of at most this many rows, or about this many bytes: one fragment each. */
const APPEND_ROWS = 262_144;
const APPEND_BYTES = 16 * 1024 * 1024;

/**
 * Appends the rows of `scan` (the pinned source's selected columns with `_rowid`, in source order)
 * flagged in `append` to the view, in a few large appends, each row with its input hash and NULL UDF
 * columns.
 */
async function appendFromScan(view: LanceNs.Table, def: ViewDefinition, viewSchema: ArrowNs.Schema, scan: ArrowNs.Table, append: Uint8Array): Promise<void> {
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
  let first = 0;
  for (const batch of scan.batches) {
    await yieldToLoop();
    const at: number[] = [];
    for (let i = 0; i < batch.numRows; i++) if (append[first + i] === 1) at.push(i);
    first += batch.numRows;
    if (at.length === 0) continue;
    const all = at.length === batch.numRows;
    const selected = def.select.map((c) => (all ? batch.getChild(c)! : takeRows(batch.getChild(c)! as ArrowNs.Vector, at)));
    const cols: Record<string, ArrowNs.Vector> = {};
    for (const f of viewSchema.fields) {
      if (f.name === SOURCE_ROW_ID) cols[f.name] = arrow.makeVector(rowIdsAt(batch.getChild("_rowid")!, at));
      else if (f.name === INPUT_HASH) cols[f.name] = arrow.makeVector(hashRows(selected));
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
}

/** `_rowid` values at rows `at` of a batch, as the view's int64 `__source_row_id` (same bits: ids are below 2^53). */
function rowIdsAt(v: ArrowNs.Vector, at: readonly number[]): BigInt64Array {
  const raw = v.toArray() as BigUint64Array | BigInt64Array;
  const src = new Uint32Array(raw.buffer, raw.byteOffset, raw.length * 2);
  const out = new BigInt64Array(at.length);
  const dst = new Uint32Array(out.buffer);
  for (let k = 0; k < at.length; k++) {
    dst[2 * k] = src[2 * at[k]!]!;
    dst[2 * k + 1] = src[2 * at[k]! + 1]!;
  }
  return out;
}

/**
 * View rows for source ids `ids`, in that order (a shuffled append): their selected values taken
 * from the pinned source by stable row id (LanceDB returns them in id order), their input hash, and
 * NULL in every other view column.
 */
async function viewBatch(source: LanceNs.Table, def: ViewDefinition, viewSchema: ArrowNs.Schema, ids: number[]): Promise<ArrowNs.Table> {
  const taken = await source.takeRowIds(ids).withRowId().select([...def.select]).toArrow();
  if (taken.numRows !== ids.length) {
    throw new ConfigError("TABLE_UNSUPPORTED", `source table ${def.source} returned ${taken.numRows} of ${ids.length} rows by stable row id; its row ids are not stable`, { table: def.source });
  }
  const takenIds: number[] = Array.from(idsOf(taken.getChild("_rowid"), "_rowid"));
  const where = new Map(takenIds.map((id, i) => [id, i]));
  const order = ids.map((id) => where.get(id)!);
  const hashes = hashRows(def.select.map((c) => taken.getChild(c)!), order);
  const cols: Record<string, ArrowNs.Vector> = {};
  for (const f of viewSchema.fields) {
    if (f.name === SOURCE_ROW_ID) cols[f.name] = arrow.vectorFromArray(ids.map(BigInt), new arrow.Int64());
    else if (f.name === INPUT_HASH) cols[f.name] = arrow.makeVector(hashes);
    else if (def.select.includes(f.name)) {
      const v = taken.getChild(f.name)!;
      cols[f.name] = arrow.vectorFromArray(order.map((j) => plain(v.get(j))), f.type);
    } // UDF columns are left out (no file in the new fragment: they read NULL until backfilled).
  }
  return new arrow.Table(cols);
}
