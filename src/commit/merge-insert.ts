/**
 * The public-API committer: per-fragment indexed partial `mergeInsert`.
 *
 * LanceDB's Node SDK has no fragment-level write. A `mergeInsert` whose source is `[key, column]`
 * and whose key has a BTREE index is executed by Lance as `Update` + `REWRITE_COLUMNS`: each touched
 * fragment keeps its id and rows and gets one new file for `[key, column]`; rows not in the source
 * keep their value. Without a covering index it silently rewrites whole rows into new fragments, so
 * this committer manages the key and its index (see `reference/lancedb-node-write-path.md` §3.9, §5):
 *
 * - the key is Lancet's own `_lancet_key` (a `uuid()` column), so tables with or without a unique
 *   key of their own work alike, and a UDF input is never rewritten by a commit;
 * - rows appended by plain LanceDB code have no key yet: the key column is regenerated (drop + add,
 *   native and layout-preserving) before such a pass;
 * - the index is rebuilt before a pass when rows are unindexed, whenever its coverage reaches 0, and
 *   every `rebuildEvery` merges (coverage drops with each merge, lance#3862);
 * - each merge asserts the rows updated and that the fragments kept their ids and row counts.
 */
import { arrow, lancedb } from "../arrow.ts";
import type { ArrowNs, LanceNs } from "../arrow.ts";
import { CommitError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { fieldIdsOf, readManifest } from "../read/manifest.ts";
import { deletionIdentity } from "../checkpoint/keys.ts";
import { takeRows } from "../udf/values.ts";
import type { ResolvedTable } from "../table.ts";
import type { CommitResult, Committer, FragmentSource, FragmentValues } from "./committer.ts";
import { connectDb } from "../storage/location.ts";

export const KEY_COLUMN = "_lancet_key";

interface FragmentAt {
  readonly globalOffset: number;
  readonly liveRows: number;
  readonly deletion: string;
}
const KEY_INDEX = `${KEY_COLUMN}_idx`;
/** Below this share of indexed rows the key index is rebuilt early while other backfills of the table run. */
const LOW_COVERAGE = 0.25;

export interface MergeInsertCommitterOptions {
  /** Rows per `mergeInsert` at most; fragments are never split. @default 131072 */
  readonly maxRowsPerMerge?: number;
  /** Rebuild the key index every N merges. @default 50 */
  readonly rebuildEvery?: number;
  readonly logger: Logger;
  /** Whether another backfill of the table is running (it holds back a key regeneration). @default none is */
  readonly otherJobsRunning?: () => Promise<string | undefined>;
  /** Called right before each merge; throws to stop it (the column lock's fencing check). @default none */
  readonly fence?: () => Promise<void>;
}

export class MergeInsertCommitter implements Committer {
  private readonly t: ResolvedTable;
  private readonly column: string;
  private readonly options: Required<MergeInsertCommitterOptions>;
  private table: LanceNs.Table | undefined;
  /** The version keys are read from (the one `prepare` left), and its fragments' scan offsets. */
  private keyTable: LanceNs.Table | undefined;
  private readonly offsets = new Map<number, FragmentAt>();
  private readonly versions = new Map<number, Promise<LanceNs.Table>>();
  private mergesSinceRebuild = 0;
  private prepared: Promise<void> | undefined;
  /** Merges in flight; an index rebuild waits for them and holds new ones back. */
  private readonly inflight = new Set<Promise<unknown>>();
  private gate: Promise<void> = Promise.resolve();

  constructor(t: ResolvedTable, column: string, options: MergeInsertCommitterOptions) {
    this.t = t;
    this.column = column;
    this.options = { maxRowsPerMerge: 131072, rebuildEvery: 50, otherJobsRunning: async () => undefined, fence: async () => {}, ...options };
  }

  prepare(table: LanceNs.Table): Promise<void> {
    this.prepared ??= this.doPrepare(table);
    return this.prepared;
  }

  private async doPrepare(table: LanceNs.Table): Promise<void> {
    this.table = table;
    // Schema changes are not retried by LanceDB; another job may be preparing the same table.
    await retryConflicts(table, () => this.ensureKey(table), /conflict|already exists|preempted/i, 100);
    // Pin the version keys are read from; adding a column or an index keeps row addresses.
    await table.checkoutLatest();
    const version = await table.version();
    const db = await connectDb(this.t.dbDir);
    this.keyTable = await db.openTable(this.t.name, undefined, { version } as never);
    let offset = 0;
    for (const f of (await readManifest(this.t.tableDir, version)).fragments) {
      this.offsets.set(f.id, { globalOffset: offset, liveRows: f.liveRows, deletion: deletionIdentity(f) });
      offset += f.liveRows;
    }
  }

  private async ensureKey(table: LanceNs.Table): Promise<void> {
    await table.checkoutLatest();
    const schema = await table.schema();
    const manifest = await readManifest(this.t.tableDir);
    const keyIds = fieldIdsOf(manifest, KEY_COLUMN);
    const hasKey = schema.fields.some((f) => f.name === KEY_COLUMN);
    const keyless = manifest.fragments.filter((f) => f.liveRows > 0 && !f.files.some((d) => d.fields.some((id) => keyIds.includes(id))));
    // Compaction can merge keyless appended rows into a fragment that has a key file: count those too.
    const nullKeys = hasKey && keyless.length === 0 ? await table.countRows(`${KEY_COLUMN} IS NULL`) : 0;
    if (hasKey && (keyless.length > 0 || nullKeys > 0)) {
      // Regenerating the key changes every row's key, which would break another job's commits.
      const other = await this.options.otherJobsRunning();
      if (other !== undefined) {
        this.options.logger.warn(`${keyless.length} fragment(s) and ${nullKeys} row(s) of ${this.t.name} have no ${KEY_COLUMN} yet and job ${other} is running: they are left for the next run`);
      } else {
        this.options.logger.info(`regenerating ${KEY_COLUMN}: ${keyless.length} fragment(s) and ${nullKeys} compacted row(s) were added without keys`);
        await table.dropColumns([KEY_COLUMN]);
        await table.addColumns([{ name: KEY_COLUMN, valueSql: "uuid()" }]);
        await this.rebuildIndex();
        return;
      }
    }
    if (!hasKey) {
      await table.addColumns([{ name: KEY_COLUMN, valueSql: "uuid()" }]);
      await this.rebuildIndex();
      return;
    }
    const stats = await table.indexStats(KEY_INDEX);
    if (!stats || stats.numUnindexedRows > 0 || stats.numIndexedRows === 0) await this.rebuildIndex();
  }

  /**
   * Rebuilds the key index. Another backfill of the table may rebuild it at the same moment: LanceDB
   * refuses one of two concurrent index commits ("preempted by concurrent transaction CreateIndex") and
   * does not retry it, so the loser retries on the latest version here rather than failing its fragments.
   */
  private async rebuildIndex(): Promise<void> {
    const table = this.table!;
    await retryConflicts(table, () => table.createIndex(KEY_COLUMN, { config: lancedb.Index.btree(), replace: true, name: KEY_INDEX } as never), /conflict|preempted/i, 50);
    this.mergesSinceRebuild = 0;
  }

  private tableAt(version: number): Promise<LanceNs.Table> {
    let t = this.versions.get(version);
    if (!t) {
      t = connectDb(this.t.dbDir).then((db) => db.openTable(this.t.name, undefined, { version } as never));
      this.versions.set(version, t);
    }
    return t;
  }

  /**
   * Lets a merge start once the key index is fit for it: rebuilt (with no merge in flight) when its
   * coverage is gone or every `rebuildEvery` merges.
   */
  private admit(): Promise<void> {
    const next = this.gate.then(async () => {
      const stats = await this.table!.indexStats(KEY_INDEX);
      // Each merge takes its fragments out of the index's coverage. An index that covers nothing makes
      // LanceDB rewrite whole rows into new fragments instead of adding a column file. With other
      // backfills of the table merging too, coverage can fall to nothing between this check and the
      // merge, so it is rebuilt early, below a quarter of the rows, when another job is running.
      const low = stats !== undefined && stats.numIndexedRows < LOW_COVERAGE * (stats.numIndexedRows + stats.numUnindexedRows);
      if (!stats || stats.numIndexedRows === 0 || this.mergesSinceRebuild >= this.options.rebuildEvery || (low && (await this.options.otherJobsRunning()) !== undefined)) {
        await Promise.allSettled([...this.inflight]);
        await this.rebuildIndex();
      }
    });
    this.gate = next.catch(() => {});
    return next;
  }

  /**
   * Keys of the fragment's rows at `f.rowAddrs`, as a Utf8 vector, and the positions of those rows
   * (`null`: all of them). Rows deleted since the plan are dropped: their values are not needed.
   */
  private async keysFor(f: FragmentValues): Promise<{ keys: ArrowNs.Vector; keep: number[] | null }> {
    const where = { table: this.t.name, column: this.column, fragmentId: f.fragmentId };
    let at = this.offsets.get(f.fragmentId);
    if (!at) throw new CommitError("COMMIT_FAILED", `fragment ${f.fragmentId} of table ${this.t.name} no longer exists (compacted or deleted by another writer since the plan); run the backfill again to fill its rows`, where);
    let source = this.keyTable!;
    // Rows deleted (or moved by an update) since the keys were pinned: read the fragment as it is
    // now, so those rows drop out. A fragment compacted away keeps the pinned keys: the merge
    // matches its rows by key wherever they moved.
    const fresh = await readManifest(this.t.tableDir);
    const now = fresh.fragments.find((x) => x.id === f.fragmentId);
    if (now && deletionIdentity(now) !== at.deletion) {
      let offset = 0;
      for (const x of fresh.fragments) {
        if (x.id === f.fragmentId) break;
        offset += x.liveRows;
      }
      at = { globalOffset: offset, liveRows: now.liveRows, deletion: deletionIdentity(now) };
      source = await this.tableAt(fresh.version);
    }
    const data = await source.query()
      .select([KEY_COLUMN, "_rowaddr"])
      .offset(at.globalOffset)
      .limit(at.liveRows)
      .toArrow({ maxBatchLength: 65536 } as never);
    const keyVec = data.getChild(KEY_COLUMN)!;
    const addrs = data.getChild("_rowaddr")!.toArray() as BigUint64Array;
    const want = f.rowAddrs;
    if (addrs.length > 0 && Number(addrs[0]! >> 32n) !== f.fragmentId) {
      throw new CommitError("COMMIT_FAILED", `fragment ${f.fragmentId} of table ${this.t.name} moved in the scan order since the plan; run the backfill again`, where);
    }
    // Common case: every live row was computed, in the same order — use the key column as read.
    if (addrs.length === want.length && keyVec.nullCount === 0) {
      let same = true;
      for (let i = 0; i < want.length && same; i++) same = addrs[i] === want[i];
      if (same) return { keys: keyVec, keep: null };
    }
    const keys: string[] = [];
    const keep: number[] = [];
    let i = 0;
    for (let j = 0; j < want.length; j++) {
      while (i < addrs.length && addrs[i]! < want[j]!) i++;
      if (i >= addrs.length || addrs[i] !== want[j]) continue; // deleted since the plan
      const k = keyVec.get(i) as string | null;
      if (k === null) {
        throw new CommitError("COMMIT_FAILED", `fragment ${f.fragmentId} of table ${this.t.name} has rows without a ${KEY_COLUMN} (added by another writer since this job prepared its keys, or while another backfill of the table was running); the next run regenerates the keys and fills them`, where);
      }
      keys.push(k);
      keep.push(j);
    }
    return { keys: arrow.vectorFromArray(keys, new arrow.Utf8()), keep: keep.length === want.length ? null : keep };
  }

  async commit(sources: readonly FragmentSource[]): Promise<CommitResult> {
    const fragments: FragmentValues[] = [];
    for (const s of sources) fragments.push(await s.load());
    const table = this.table!;
    const work = fragments.filter((f) => f.rowAddrs.length > 0);
    let version = await table.version();
    let rowsWritten = 0;
    let commits = 0;
    let writeMs = 0;
    let retries = 0;
    // Group whole fragments into merges of at most maxRowsPerMerge rows.
    const groups: FragmentValues[][] = [];
    let cur: FragmentValues[] = [];
    let curRows = 0;
    for (const f of work) {
      if (cur.length > 0 && curRows + f.rowAddrs.length > this.options.maxRowsPerMerge) {
        groups.push(cur);
        cur = [];
        curRows = 0;
      }
      cur.push(f);
      curRows += f.rowAddrs.length;
    }
    if (cur.length > 0) groups.push(cur);

    const schema = await table.schema();
    const names = schema.fields.map((f) => f.name);
    const valueField = schema.fields.find((f) => f.name === this.column)!;
    const keyFirst = names.indexOf(KEY_COLUMN) < names.indexOf(this.column);

    for (const group of groups) {
      const keys: ArrowNs.Vector[] = [];
      const values: ArrowNs.Vector[] = [];
      const keeps: (number[] | null)[] = [];
      for (const f of group) {
        const { keys: k, keep } = await this.keysFor(f);
        keys.push(k);
        keeps.push(keep);
        values.push(keep === null ? f.values : takeRows(f.values, keep));
      }
      const concat = (v: ArrowNs.Vector[]): ArrowNs.Vector => (v.length === 1 ? v[0]! : v[0]!.concat(...v.slice(1)));
      const valueVec = concat(values);
      const keyVec = concat(keys);
      const keyF = new arrow.Field(KEY_COLUMN, new arrow.Utf8(), false);
      // A blob v2 column keeps its marker: without it LanceDB takes the values for a plain struct.
      const blobMeta = valueField.metadata?.get("ARROW:extension:name") === "lance.blob.v2" ? new Map([["ARROW:extension:name", "lance.blob.v2"]]) : undefined;
      const valF = new arrow.Field(this.column, valueField.type, true, blobMeta);
      if (blobMeta) this.checkBlobSizes(valueVec, group.map((f) => f.fragmentId));
      const src = new arrow.Table(
        new arrow.Schema(keyFirst ? [keyF, valF] : [valF, keyF]),
        keyFirst ? { [KEY_COLUMN]: keyVec, [this.column]: valueVec } : { [this.column]: valueVec, [KEY_COLUMN]: keyVec },
      );

      await this.admit();
      await this.options.fence();
      const before = await readManifest(this.t.tableDir);
      const w0 = performance.now();
      const merge = table.mergeInsert(KEY_COLUMN).whenMatchedUpdateAll().execute(src);
      this.inflight.add(merge);
      let r: Awaited<typeof merge>;
      try {
        r = await merge;
      } finally {
        this.inflight.delete(merge);
      }
      writeMs += performance.now() - w0;
      retries += Math.max(0, r.numAttempts - 1);
      this.mergesSinceRebuild++;
      commits++;
      const ids = group.map((f) => f.fragmentId).join(", ");
      if (r.numUpdatedRows !== keyVec.length || r.numInsertedRows !== 0) {
        throw new CommitError("COMMIT_FAILED", `mergeInsert into fragment(s) ${ids} of table ${this.t.name} updated ${r.numUpdatedRows} rows and inserted ${r.numInsertedRows}; expected ${keyVec.length} updates. Another writer may have changed these rows; run the backfill again`, { table: this.t.name, column: this.column, fragmentId: group[0]!.fragmentId });
      }
      const after = await readManifest(this.t.tableDir, r.version);
      for (const f of group) {
        const b = before.fragments.find((x) => x.id === f.fragmentId);
        const a = after.fragments.find((x) => x.id === f.fragmentId);
        if (b && (!a || a.physicalRows !== b.physicalRows)) {
          throw new CommitError("COMMIT_FAILED", `mergeInsert rewrote rows of fragment ${f.fragmentId} of table ${this.t.name} instead of adding a column file (the key index did not cover it); values are correct but the fragment layout changed`, { table: this.t.name, column: this.column, fragmentId: f.fragmentId });
        }
      }
      if (!blobMeta) await this.checkReadBack(r.version, group, keeps, values, before);
      version = r.version;
      rowsWritten += keyVec.length;
    }
    return { version, rowsWritten, commits, writeMs, retries };
  }

  /**
   * Reads the merged version back: no row this merge gave a value may read NULL there. (A merge that
   * matched fewer rows than it reported — the key column regenerated by another job while it ran —
   * would otherwise leave values silently missing behind a done marker.) Rows are found by address,
   * in the fragments whose layout the merge kept (the check above refuses the others).
   */
  private async checkReadBack(version: number, group: readonly FragmentValues[], keeps: readonly (number[] | null)[], values: readonly ArrowNs.Vector[], before: Awaited<ReturnType<typeof readManifest>>): Promise<void> {
    const sent = new Set<bigint>();
    group.forEach((f, g) => {
      if (!before.fragments.some((x) => x.id === f.fragmentId)) return; // moved by a compaction: matched by key elsewhere
      const keep = keeps[g]!;
      const v = values[g]!;
      for (let i = 0; i < v.length; i++) if (v.isValid(i)) sent.add(f.rowAddrs[keep === null ? i : keep[i]!]!);
    });
    if (sent.size === 0) return;
    const ids = group.map((f) => f.fragmentId);
    const nulls = await (await this.tableAt(version)).query().where(`(_rowaddr >> 32) IN (${ids.join(", ")}) AND \`${this.column.replace(/`/g, "``")}\` IS NULL`).select(["_rowaddr"]).toArrow();
    const addrs = nulls.getChild("_rowaddr")?.toArray() as BigUint64Array | undefined;
    let lost = 0;
    for (const a of addrs ?? []) if (sent.has(a)) lost++;
    if (lost > 0) {
      throw new CommitError("COMMIT_FAILED", `mergeInsert into fragment(s) ${ids.join(", ")} of table ${this.t.name} reported its rows updated, but ${lost} value(s) it carried read back NULL at version ${version} (another job changed the rows' ${KEY_COLUMN} while it ran); those rows stay NULL and are not marked done: run the backfill again to compute them`, { table: this.t.name, column: this.column, fragmentId: ids[0]! });
    }
  }

  /** LanceDB's mergeInsert refuses a row over 25 MiB: say so, naming the row, before trying. */
  private checkBlobSizes(values: ArrowNs.Vector, fragments: readonly number[]): void {
    for (let i = 0; i < values.length; i++) {
      const data = (values.get(i) as { data?: Uint8Array | null } | null)?.data;
      if (data && data.byteLength > MERGE_MAX_BLOB_BYTES) {
        throw new CommitError("COMMIT_FAILED", `column ${this.column} of table ${this.t.name} (fragment(s) ${fragments.join(", ")}): a blob of ${data.byteLength} bytes cannot go through mergeInsert, which takes at most 25 MiB per row; it is used for fragments that already have values for the column — clear them (alter-column --force) and backfill again so the graft writes them`, { table: this.t.name, column: this.column, fragmentId: fragments[0]! });
      }
    }
  }
}

/**
 * Runs `fn` (a schema or index change), and again on the latest version — up to 5 attempts, waiting
 * `stepMs` × attempt between them — while it fails with a message `retryable` matches: LanceDB refuses
 * such a change when another writer committed first and does not retry it itself.
 */
async function retryConflicts(table: LanceNs.Table, fn: () => Promise<unknown>, retryable: RegExp, stepMs: number): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await fn();
      return;
    } catch (e) {
      if (attempt >= 5 || !retryable.test((e as Error).message)) throw e;
      await table.checkoutLatest();
      await new Promise((r) => setTimeout(r, stepMs * attempt));
    }
  }
}

/** The largest blob value a mergeInsert row takes (LanceDB 0.39 refuses rows over 25 MiB; 64 KiB left for the key and the struct). */
const MERGE_MAX_BLOB_BYTES = 25 * 1024 * 1024 - 64 * 1024;
