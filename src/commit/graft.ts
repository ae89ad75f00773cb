/**
 * The graft committer: LanceDB writes a fragment's column natively (a one-column temporary table),
 * and Lancet publishes that data file into the table's next manifest with a hand-written
 * `DataReplacement` transaction — copying every other byte of the previous manifest. ≈ 2 ms per
 * commit and flat, against ≈ 100–300 ms for a `mergeInsert`; no key column, no index.
 *
 * Lance accepts whatever manifest is published, and several mistakes make a table unreadable for
 * every client, so every guard of `reference/lancedb-node-write-path.md` §6.4 runs before anything is
 * published. The staged version is then **verified before it is published**: its manifest is opened
 * from a shadow directory that links to the table's own data files, and read back through LanceDB
 * (row count, the new column's first and last rows of every grafted fragment). Only a version that
 * reads back is published, atomically (`link()` fails with EEXIST when another writer took the
 * version: rebase, verify again, retry). If something still goes wrong after publishing, the repair
 * is a new commit on top of the latest version that removes only the grafted files — never a
 * republication of an old version over other writers' commits.
 *
 * On a local or POSIX filesystem atomicity rests on `link`. On S3-compatible object storage the same
 * protocol runs with the store's primitives: the temporary table lives in the bucket, its data file is
 * copied server-side into the table under a fresh name, the shadow is a table in the bucket holding
 * server-side copies of the files the grafted fragments read ({@link withBucketShadow}), and versions
 * (the repair's too) are published with put-if-absent ({@link putVersion}; a 412 rebases and retries).
 * Blob columns are not grafted there. Fragments that cannot be grafted —
 * the column already has a file in them (a re-run with `where`, rows refilled after skips), an index
 * covers the column, a newer manifest format — are refused with {@link GraftUnsafe}; `auto` mode
 * sends those to the `mergeInsert` committer.
 */
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { copyFile, cp, link, mkdir, rename, rm, stat, unlink } from "node:fs/promises";
import * as path from "node:path";
import { arrow, lancedb } from "../arrow.ts";
import type { ArrowNs, LanceNs } from "../arrow.ts";
import { compactFragmentFile, currentFragmentFile, FILE_TABLE, readFragmentFileProbe } from "../checkpoint/fragment-file.ts";
import { CommitError, isBackfillError } from "../errors.ts";
import { failpoint } from "../failpoints.ts";
import type { Logger } from "../log.ts";
import { columnFields, intOf, manifestName, parseDataFile, parseFragment, type DataFileInfo } from "../read/manifest.ts";
import { bytesField, concat, decodeMessage, intField, packedField, packedInts, type RawField } from "../read/protobuf.ts";
import type { ResolvedTable } from "../table.ts";
import { formatDataType, isBlobType, parseDataType } from "../udf/types.ts";
import type { CommitResult, Committer, FragmentSource, FragmentValues } from "./committer.ts";
import { fieldDefs, formatVersionOf, KNOWN_MANIFEST_FIELDS, manifestFileBytes, PublishOutcomeUnknown, publishVersion, readRawManifest, runsAt, timestampField, type RawManifest } from "./manifest-write.ts";
import { scatterRows } from "./scatter.ts";
import { copyObjects, withBucketShadow, withShadowVersion, type ObjectCopy } from "./shadow.ts";
import { canonical, connectDb, isRemote, removeAll, storeAt } from "../storage/location.ts";

/**
 * Why blob columns are never grafted: LanceDB writes a blob v2 column's larger payloads into sidecar
 * files next to the data file (packed or dedicated blob files), and the graft moves and references
 * exactly one data file per fragment.
 */

const FRAGMENT_FIELDS = new Set([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
const MAX_ROWS_PER_FILE = 1_048_576;

/**
 * Fragments the graft path must not write, or whose staged version did not verify; nothing of theirs
 * was published. `auto` mode sends them to the mergeInsert committer.
 */
export class GraftUnsafe extends Error {
  readonly fragmentIds: readonly number[];
  /** Why, without the fragment prefix (for events). */
  readonly reason: string;
  constructor(fragmentIds: number | readonly number[], message: string, reason = message) {
    super(message);
    this.name = "GraftUnsafe";
    this.fragmentIds = typeof fragmentIds === "number" ? [fragmentIds] : fragmentIds;
    this.reason = reason;
  }
}

function encodeDataFile(d: DataFileInfo, size: number): Uint8Array {
  return concat([bytesField(1, d.path), packedField(2, d.fields), packedField(3, d.columnIndices), intField(4, d.fileMajor), intField(5, d.fileMinor), intField(6, size)]);
}

interface FragRaw {
  id: number;
  physicalRows: number;
  fields: RawField[];
  files: DataFileInfo[];
}
function fragments(m: RawManifest): FragRaw[] {
  return m.fields
    .filter((f) => f.no === 2)
    .map((f) => {
      const x = decodeMessage(f.bytes);
      return { id: intOf(x, 1), physicalRows: intOf(x, 4), fields: x, files: x.filter((y) => y.no === 2).map((y) => parseDataFile(y.bytes)) };
    });
}

/** A column file written and moved into the table, ready to be referenced by a manifest. */
interface StagedFile {
  readonly fragmentId: number;
  readonly physicalRows: number;
  readonly dataFile: Uint8Array;
  /** The file's name in the table's data/ folder. */
  readonly path: string;
  /** What was written at the first and last 1024 physical rows (a copy: the full column is not kept). */
  readonly probe: (physicalRow: number) => unknown;
  readonly rows: number;
}

/**
 * Keeps copies of a column's first and last `n` values, for the read-back check, so the rest can be
 * freed. The copies stay Arrow (an IPC round trip copies just the slice's buffers); values become JS
 * only when the read-back compares them, a few hundred rows at a time.
 */
function probeOf(v: ArrowNs.Vector, n = 1024): (row: number) => unknown {
  const c = new ProbeCollector(n);
  c.add(v);
  return c.probe();
}

/** The head and tail rows of a column that arrives in pieces, for the same read-back check as {@link probeOf}. */
class ProbeCollector {
  private readonly n: number;
  private head: ArrowNs.Vector[] = [];
  private headRows = 0;
  private tail: ArrowNs.Vector[] = [];
  private tailRows = 0;
  private total = 0;

  constructor(n = 1024) {
    this.n = n;
  }

  add(v: ArrowNs.Vector): void {
    if (this.headRows < this.n) {
      const take = Math.min(v.length, this.n - this.headRows);
      this.head.push(copyOf(v.slice(0, take)));
      this.headRows += take;
    }
    this.tail.push(v);
    this.tailRows += v.length;
    // Keep only the pieces the last n rows can come from.
    while (this.tail.length > 1 && this.tailRows - this.tail[0]!.length >= this.n) this.tailRows -= this.tail.shift()!.length;
    this.total += v.length;
  }

  probe(): (row: number) => unknown {
    const len = this.total;
    const head = this.head.length === 0 ? null : this.head.length === 1 ? this.head[0]! : this.head[0]!.concat(...this.head.slice(1));
    const joined = this.tail.length === 0 ? null : this.tail.length === 1 ? this.tail[0]! : this.tail[0]!.concat(...this.tail.slice(1));
    const tailStart = Math.max(0, len - this.n);
    const tail = joined === null ? null : copyOf(joined.slice(joined.length - (len - tailStart), joined.length));
    return (row) => (head && row < head.length ? head.get(row) : tail && row >= tailStart && row < len ? tail.get(row - tailStart) : undefined);
  }
}

/** A vector's values in buffers of their own (a probe must not keep a whole batch alive). */
function copyOf(v: ArrowNs.Vector): ArrowNs.Vector {
  return arrow.tableFromIPC(arrow.tableToIPC(new arrow.Table({ v }))).getChild("v")!;
}

/** What a blob probe keeps of a written value: its size, and its bytes when at most 1 MiB; null for a null blob. */
type BlobProbe = { readonly size: number; readonly bytes: Uint8Array | null } | null;

/**
 * {@link probeOf} for a blob column: sizes, and copies of values up to 1 MiB, of the first and last
 * `n` rows — never whole large payloads, and no IPC copy (apache-arrow 18 cannot serialise a
 * large_binary slice).
 */
function blobProbeOf(v: ArrowNs.Vector, n = 1024): (row: number) => unknown {
  const len = v.length;
  const keep = (row: number): BlobProbe => {
    const data = (v.get(row) as { data?: Uint8Array | null } | null)?.data ?? null;
    return data === null ? null : { size: data.byteLength, bytes: data.byteLength <= 2 ** 20 ? Uint8Array.from(data) : null };
  };
  const rows = new Map<number, BlobProbe>();
  for (let r = 0; r < Math.min(len, n); r++) rows.set(r, keep(r));
  for (let r = Math.max(0, len - n); r < len; r++) rows.set(r, keep(r));
  return (row) => rows.get(row);
}

/** A fragment's values could not be read (its checkpoints are missing or damaged): the group fails, nothing falls back. */
class Unreadable extends Error {
  constructor(cause: unknown) {
    super((cause as Error)?.message ?? String(cause), { cause });
  }
}

/** `pieces`, with any error reading them made {@link Unreadable}. */
async function* readable(pieces: AsyncIterable<FragmentValues>): AsyncGenerator<FragmentValues> {
  const it = pieces[Symbol.asyncIterator]();
  let done = false;
  try {
    for (;;) {
      let r: IteratorResult<FragmentValues>;
      try {
        r = await it.next();
      } catch (e) {
        done = true;
        throw new Unreadable(e);
      }
      if (r.done) {
        done = true;
        return;
      }
      yield r.value;
    }
  } finally {
    if (!done) await it.return?.(); // the consumer stopped early: let the source close
  }
}

/** A streamed fragment whose pieces do not cover its physical rows in order: staged the other way. */
class NotContiguous extends Error {}

export interface GraftCommitterOptions {
  readonly logger: Logger;
  /** Called right before the link that publishes a version; throws to stop it (nothing is published). */
  readonly fence?: () => Promise<void>;
}

export class GraftCommitter implements Committer {
  private readonly t: ResolvedTable;
  private readonly column: string;
  private readonly type: ArrowNs.DataType;
  private readonly log: Logger;
  private readonly fence: () => Promise<void>;
  /** Serialises publication within this process (other processes race through link/EEXIST, or put-if-absent/412). */
  private publishing: Promise<unknown> = Promise.resolve();
  /** The table is on object storage: files are copied server-side, versions published with put-if-absent. */
  private readonly remote: boolean;

  constructor(t: ResolvedTable, column: string, dataType: string, options: GraftCommitterOptions) {
    this.t = t;
    this.column = column;
    this.type = parseDataType(dataType);
    this.log = options.logger;
    this.fence = options.fence ?? (async () => {});
    this.remote = isRemote(t.tableDir);
  }

  async prepare(): Promise<void> {}

  /** Refuses fragments the graft path must not write (see the module comment). */
  async check(fragmentIds: readonly number[], manifest?: RawManifest): Promise<Map<number, string>> {
    const m = manifest ?? (await readRawManifest(this.t.tableDir));
    const out = new Map<number, string>();
    const unsafe = this.remote && isBlobType(this.type) ? "blob v2 columns are not grafted on object storage (their sidecar payload files would have to be copied too)" : this.unsafeManifest(m);
    const targetIds = new Set(columnFields(fieldDefs(m.fields), this.column).map((f) => f.id));
    const frags = new Map(fragments(m).map((f) => [f.id, f]));
    for (const id of fragmentIds) {
      const f = frags.get(id);
      const why =
        unsafe ??
        (!f
          ? "the fragment no longer exists"
          : f.files.some((d) => d.fields.some((x) => targetIds.has(x)))
            ? `the fragment already has a file for column ${this.column} (replacing one is left to mergeInsert)`
            : f.physicalRows > MAX_ROWS_PER_FILE
              ? `the fragment has ${f.physicalRows} rows, more than one data file holds`
              : f.fields.some((x) => !FRAGMENT_FIELDS.has(x.no) || x.no === 8)
                ? "the fragment uses manifest fields this version of Lancet does not know"
                : undefined);
      if (why) out.set(id, why);
    }
    return out;
  }

  private unsafeManifest(m: RawManifest): string | undefined {
    const unknown = m.fields.find((f) => !KNOWN_MANIFEST_FIELDS.has(f.no));
    if (unknown) return `the manifest has field ${unknown.no}, unknown to this version of Lancet`;
    const defs = fieldDefs(m.fields);
    const targetIds = new Set(columnFields(defs, this.column).map((f) => f.id));
    if (targetIds.size === 0) return `the table has no column ${this.column}`;
    if (m.indexSection) {
      for (const ix of decodeMessage(m.indexSection).filter((f) => f.no === 1)) {
        const fields = decodeMessage(ix.bytes).filter((f) => f.no === 2).flatMap(packedInts);
        if (fields.some((x) => targetIds.has(x))) return `an index covers column ${this.column}`;
      }
    }
    return undefined;
  }

  async commit(sources: readonly FragmentSource[]): Promise<CommitResult> {
    const { staged, refused, writeMs } = await this.stageAll(sources);
    if (refused.size > 0) {
      await this.discard(staged);
      const [id, why] = [...refused][0]!;
      throw new GraftUnsafe(id, `fragment ${id} of table ${this.t.name} cannot be grafted: ${why}`, why);
    }
    try {
      return { ...(await this.publishStaged(staged)), writeMs };
    } catch (e) {
      if (!(e instanceof GraftUnsafe)) throw e;
      throw new CommitError("COMMIT_FAILED", `${e.message}; use --commit-mode merge (or auto) for these fragments`, { table: this.t.name, column: this.column, fragmentId: e.fragmentIds[0]! });
    }
  }

  /**
   * Stages every fragment the graft may write (one at a time: load, write natively, keep only the
   * staged file's entry); the others — refused by a guard, or whose staging failed — come back in
   * `refused` with the reason, nothing staged for them.
   */
  async stageAll(sources: readonly FragmentSource[]): Promise<{ staged: StagedFile[]; refused: Map<number, string>; writeMs: number }> {
    // One read of the latest manifest for the group (publication re-checks against the newest).
    const latest = await readRawManifest(this.t.tableDir);
    const refused = await this.check(sources.map((f) => f.fragmentId), latest);
    const staged: StagedFile[] = [];
    let writeMs = 0;
    for (const src of sources) {
      if (refused.has(src.fragmentId)) continue;
      // A fragment whose checkpoints cover it in order is written piece by piece (its column is never
      // whole in this process's memory); any other is loaded whole and aligned.
      const w0 = performance.now();
      let loadMs = 0;
      const load = async (): Promise<FragmentValues> => {
        const l0 = performance.now();
        try {
          return await src.load();
        } catch (e) {
          throw new Unreadable(e);
        } finally {
          loadMs += performance.now() - l0;
        }
      };
      try {
        const fileDir = isBlobType(this.type) ? null : ((await src.file?.()) ?? null);
        staged.push(fileDir !== null ? await this.stageFile(src.fragmentId, fileDir, latest) : ((await this.stageStream(src, latest)) ?? (await this.stage(await load(), latest))));
      } catch (e) {
        if (e instanceof Unreadable) {
          await this.discard(staged); // its checkpoints are incomplete or unreadable: the group fails
          throw e.cause;
        }
        // Nothing of this fragment is in the table (staging removes its file on failure), so any
        // failure here is a refusal: `auto` writes the fragment through mergeInsert instead.
        refused.set(src.fragmentId, e instanceof GraftUnsafe ? e.reason : `staging its column file failed (${(e as Error).message})`);
      } finally {
        writeMs += performance.now() - w0 - loadMs;
      }
    }
    return { staged, refused, writeMs };
  }

  /**
   * Publishes staged files as one version (serialised within this process). Throws {@link GraftUnsafe}
   * when the staged version does not verify (nothing published, staged files removed), or a
   * {@link CommitError} saying what state the table is in.
   */
  async publishStaged(staged: StagedFile[]): Promise<Omit<CommitResult, "writeMs">> {
    if (staged.length === 0) return { version: (await readRawManifest(this.t.tableDir)).version, rowsWritten: 0, commits: 0, retries: 0 };
    const run = this.publishing.then(() => this.publish(staged));
    this.publishing = run.catch(() => {});
    const { version, retries } = await run;
    return { version, rowsWritten: staged.reduce((s, x) => s + x.rows, 0), commits: 1, retries };
  }

  /** Removes staged files that no version refers to (a commit refused or failed before publishing). */
  async discard(staged: readonly StagedFile[]): Promise<void> {
    if (this.remote) {
      // Best effort: a data file no manifest names is harmless, LanceDB never reads it.
      const store = storeAt(this.t.tableDir);
      for (const s of staged) await store.delete(`data/${s.path}`).catch(() => {});
      return;
    }
    for (const s of staged) {
      await unlink(path.join(this.t.tableDir, "data", s.path)).catch(() => {});
      await rm(sidecarOf(path.join(this.t.tableDir, "data", s.path)), { recursive: true, force: true });
    }
  }

  /** The latest manifest and fragment `id`'s physical rows in it. */
  private async target(id: number, manifest?: RawManifest): Promise<{ latest: RawManifest; physical: number }> {
    const latest = manifest ?? (await readRawManifest(this.t.tableDir));
    const frag = fragments(latest).find((x) => x.id === id);
    if (!frag) throw new GraftUnsafe(id, `fragment ${id} of table ${this.t.name} no longer exists`);
    return { latest, physical: frag.physicalRows };
  }

  /** Writes the fragment's column natively into a temporary table and moves its file into the table. */
  private async stage(f: FragmentValues, manifest?: RawManifest): Promise<StagedFile> {
    const { latest, physical } = await this.target(f.fragmentId, manifest);
    // Align to the fragment's physical rows: values at their offsets, null at deleted or unselected slots.
    let full: ArrowNs.Vector;
    const n = f.rowAddrs.length;
    let contiguous = n === physical;
    // The low 32 bits of a row address are its offset in the fragment (little-endian: even words).
    const words = new Uint32Array(f.rowAddrs.buffer, f.rowAddrs.byteOffset, n * 2);
    for (let i = 0; i < n && contiguous; i++) contiguous = words[2 * i] === i;
    if (contiguous) {
      full = f.values;
    } else {
      full = await scatterRows(f.values, (i) => words[2 * i]!, physical, this.type);
    }
    const staged = await this.writeStaged(f.fragmentId, latest, physical, (db, formatVersion) => writeTempTable(db, this.column, this.type, full, formatVersion).then(() => (isBlobType(this.type) ? blobProbeOf(full) : probeOf(full))));
    return { ...staged, rows: n };
  }

  /**
   * Stages a fragment from its pieces (checkpoint batches, in row order) without holding its whole
   * column: appended to the temporary table about {@link PIECE_BYTES} at a time, then compacted into
   * one file. Only for a fragment whose pieces cover every physical row in order (no deleted or
   * unselected rows); returns null otherwise (and for blob columns), for {@link stage} to do it.
   * An error reading the pieces (checkpoints) is {@link Unreadable}.
   */
  async stageStream(src: FragmentSource, manifest?: RawManifest): Promise<StagedFile | null> {
    if (!src.stream || isBlobType(this.type)) return null;
    const { latest, physical } = await this.target(src.fragmentId, manifest);
    if (physical === 0) return null;
    let rows = 0;
    const schema = new arrow.Schema([new arrow.Field(this.column, this.type, true)]);
    try {
      const staged = await this.writeStaged(src.fragmentId, latest, physical, async (db, formatVersion) => {
        const options = { storageOptions: { new_table_data_storage_version: formatVersion } } as never;
        let table: LanceNs.Table | undefined;
        let appends = 0;
        let pending: ArrowNs.Vector[] = [];
        let pendingBytes = 0;
        const probe = new ProbeCollector();
        const flush = async (): Promise<void> => {
          if (pending.length === 0) return;
          const values = pending.length === 1 ? pending[0]! : pending[0]!.concat(...pending.slice(1));
          const piece = new arrow.Table(schema, { [this.column]: values });
          if (table) await table.add(piece as never);
          else table = await db.createTable("v", piece as never, options);
          appends++;
          pending = [];
          pendingBytes = 0;
        };
        for await (const piece of readable(src.stream!())) {
          const n = piece.rowAddrs.length;
          const words = new Uint32Array(piece.rowAddrs.buffer, piece.rowAddrs.byteOffset, n * 2);
          for (let i = 0; i < n; i++) if (words[2 * i] !== rows + i) throw new NotContiguous();
          rows += n;
          if (rows > physical) throw new NotContiguous();
          probe.add(piece.values);
          pending.push(piece.values);
          pendingBytes += piece.values.data.reduce((sum, d) => sum + d.byteLength, 0);
          if (pendingBytes >= (table ? PIECE_BYTES : ONE_CALL_BYTES)) await flush();
        }
        if (rows !== physical) throw new NotContiguous();
        await flush();
        if (appends > 1) await table!.optimize();
        return probe.probe();
      });
      return { ...staged, rows };
    } catch (e) {
      if (e instanceof NotContiguous) return null;
      throw e;
    }
  }

  /**
   * Stages a fragment file (the column file a worker wrote as its checkpoint): compacted into one data
   * file if its worker did not get to it, checked like a file the graft wrote, and hard-linked into the
   * table's data directory — the checkpoint keeps its own name for it until the fragment's commit, so
   * a refused or failed commit loses nothing. Its probe is read back from the file itself.
   */
  private async stageFile(fragmentId: number, batchDir: string, manifest?: RawManifest): Promise<StagedFile> {
    const { latest, physical } = await this.target(fragmentId, manifest);
    const file = await currentFragmentFile(batchDir).catch((e: unknown) => {
      throw new Unreadable(e);
    });
    if (!file) throw new Unreadable(new Error(`the fragment file of fragment ${fragmentId} in ${batchDir} is gone or no longer valid; run the backfill again`));
    // Usually the worker compacted the file and left its probe: nothing to open.
    const ready = await readRawManifest(file.tableDir).then((m) => {
      const fr = fragments(m);
      return fr.length === 1 && fr[0]!.files.length === 1;
    }, () => false);
    const left = ready ? await readFragmentFileProbe(file).catch(() => undefined) : undefined;
    if (left) return { ...(await this.adopt(fragmentId, latest, physical, file.tableDir, left, "link")), rows: physical };
    const db = await connectDb(file.dir);
    let probe: StagedFile["probe"];
    try {
      const table = await db.openTable(FILE_TABLE);
      try {
        await compactFragmentFile(file, table);
        const n = Math.min(1024, physical);
        const read = async (offset: number): Promise<ArrowNs.Vector> => ((await table.query().select([this.column]).offset(offset).limit(n).toArrow({ maxBatchLength: 65536 } as never)) as unknown as ArrowNs.Table).getChild(this.column)!;
        const head = await read(0);
        const tailStart = physical - n;
        const tail = tailStart > 0 ? await read(tailStart) : head;
        probe = (row) => (row < head.length ? head.get(row) : row >= tailStart && row < physical ? tail.get(row - tailStart) : undefined);
      } finally {
        table.close();
      }
    } catch (e) {
      throw new Unreadable(e);
    } finally {
      db.close();
    }
    return { ...(await this.adopt(fragmentId, latest, physical, file.tableDir, probe, "link")), rows: physical };
  }

  /**
   * Runs `write` (the fragment's column into a fresh temporary table `v` in the store), checks the
   * file it wrote, and moves it (with any blob sidecar folder) into the table's data directory.
   */
  private async writeStaged(fragmentId: number, latest: RawManifest, physical: number, write: (db: LanceNs.Connection, formatVersion: string) => Promise<StagedFile["probe"]>): Promise<Omit<StagedFile, "rows">> {
    const formatVersion = formatVersionOf(latest);
    // On object storage the temporary table lives in the bucket, under the Lancet store's prefix.
    const tmpDir = this.remote ? `${canonical(this.t.storeDir)}/tmp/${randomUUID()}` : path.join(this.t.storeDir, "tmp", randomUUID());
    if (!this.remote) await mkdir(tmpDir, { recursive: true });
    try {
      const db = await connectDb(tmpDir);
      try {
        const probe = await write(db, formatVersion);
        return await this.adopt(fragmentId, latest, physical, this.remote ? `${tmpDir}/v.lance` : path.join(tmpDir, "v.lance"), probe, "move");
      } finally {
        db.close();
      }
    } finally {
      await removeAll(tmpDir).catch(() => {});
    }
  }

  /**
   * Checks the one data file of the one-column table at `tempTable` against the target fragment and
   * column (write-path reference §6.4), and puts it (with any blob sidecar folder) into the table's
   * data directory under a fresh name: moved, or hard-linked when the temporary table must stay whole.
   */
  private async adopt(fragmentId: number, latest: RawManifest, physical: number, tempTable: string, probe: StagedFile["probe"], how: "move" | "link"): Promise<Omit<StagedFile, "rows">> {
    const formatVersion = formatVersionOf(latest);
    const tm = await readRawManifest(tempTable);
    const tfrags = fragments(tm);
    if (tfrags.length !== 1 || tfrags[0]!.files.length !== 1) throw new GraftUnsafe(fragmentId, `the temporary table for fragment ${fragmentId} has ${tfrags.length} fragment(s); expected one file`);
    const tf = tfrags[0]!;
    const file = tf.files[0]!;
    // Guards (write-path reference §6.4): format version, row count, field types in order.
    const [maj, min] = formatVersion.split(".").map(Number);
    if (file.fileMajor !== maj || file.fileMinor !== min) throw new GraftUnsafe(fragmentId, `data file version ${file.fileMajor}.${file.fileMinor} differs from the table's ${formatVersion}`);
    if (tf.physicalRows !== physical) throw new GraftUnsafe(fragmentId, `wrote ${tf.physicalRows} rows for a fragment of ${physical}`);
    const tempFields = columnFields(fieldDefs(tm.fields), this.column);
    const targetFields = columnFields(fieldDefs(latest.fields), this.column);
    if (tempFields.length !== targetFields.length || tempFields.some((x, i) => x.logicalType !== targetFields[i]!.logicalType)) {
      throw new GraftUnsafe(fragmentId, `the written field types (${tempFields.map((x) => x.logicalType).join(", ")}) differ from column ${this.column}'s (${targetFields.map((x) => x.logicalType).join(", ")})`);
    }
    const idMap = new Map(tempFields.map((x, i) => [x.id, targetFields[i]!.id]));
    if (file.fields.some((id) => !idMap.has(id))) throw new GraftUnsafe(fragmentId, `the written file lists fields ${file.fields.join(", ")} outside column ${this.column}`);
    const name = `${Array.from({ length: 20 }, () => (Math.random() < 0.5 ? "0" : "1")).join("")}${randomUUID().replace(/-/g, "").slice(0, 30)}.lance`;
    if (this.remote) return this.adoptRemote(fragmentId, physical, tempTable, file, name, idMap, probe);
    const target = path.join(this.t.tableDir, "data", name);
    const source = path.join(tempTable, "data", file.path);
    await (how === "move" ? rename(source, target) : link(source, target)).catch(async () => {
      await copyFile(source, target); // another filesystem
    });
    // Blob v2 payloads LanceDB kept apart: the folder named after the data file goes with it.
    const sidecar = path.join(tempTable, "data", stemOf(file.path));
    if (existsSync(sidecar)) {
      await rename(sidecar, sidecarOf(target)).catch(async () => {
        await cp(sidecar, sidecarOf(target), { recursive: true });
      });
    }
    try {
      failpoint("graft.after-move");
      const size = (await stat(target)).size;
      const dataFile = encodeDataFile({ ...file, path: name, fields: file.fields.map((id) => idMap.get(id)!) }, size);
      return { fragmentId, physicalRows: physical, dataFile, path: name, probe };
    } catch (e) {
      await unlink(target).catch(() => {});
      await rm(sidecarOf(target), { recursive: true, force: true });
      throw e;
    }
  }

  /**
   * {@link adopt} on object storage: a server-side copy of the temporary table's data file into the
   * table's data/ folder under `name` (fresh and unique: nobody else writes it), its size from the copy.
   * The temporary table is removed by the caller.
   */
  private async adoptRemote(fragmentId: number, physical: number, tempTable: string, file: DataFileInfo, name: string, idMap: Map<number, number>, probe: StagedFile["probe"]): Promise<Omit<StagedFile, "rows">> {
    const target = `${canonical(this.t.tableDir)}/data/${name}`;
    try {
      const sizes = await copyObjects(this.t.dbDir, [{ from: `${canonical(tempTable)}/data/${file.path}`, to: target }]);
      failpoint("graft.after-move");
      const dataFile = encodeDataFile({ ...file, path: name, fields: file.fields.map((id) => idMap.get(id)!) }, sizes.get(target)!);
      return { fragmentId, physicalRows: physical, dataFile, path: name, probe };
    } catch (e) {
      await storeAt(this.t.tableDir).delete(`data/${name}`).catch(() => {});
      throw e;
    }
  }

  /**
   * Builds the next manifest from the latest one with the staged files, verifies it from a shadow
   * directory, and publishes it atomically; on a lost race, rebases and verifies again.
   */
  private async publish(staged: StagedFile[]): Promise<{ version: number; retries: number }> {
    let published = false;
    try {
      for (let attempt = 0; ; attempt++) {
        const base = await readRawManifest(this.t.tableDir);
        const refused = await this.check(staged.map((s) => s.fragmentId), base);
        for (const s of staged) {
          const f = fragments(base).find((x) => x.id === s.fragmentId);
          if (!f || f.physicalRows !== s.physicalRows) refused.set(s.fragmentId, "the fragment changed since its file was written");
        }
        if (refused.size > 0) {
          const ids = [...refused.keys()];
          const why = [...refused].map(([id, w]) => `fragment ${id}: ${w}`).join("; ");
          throw new GraftUnsafe(ids, `fragment(s) ${ids.join(", ")} of table ${this.t.name} cannot be grafted (${why}); nothing was published`, why);
        }
        const version = base.version + 1;
        const txnId = randomUUID();
        const txnName = `${base.version}-${txnId}.txn`;
        const groups = staged.map((s) => bytesField(1, concat([intField(1, s.fragmentId), bytesField(2, s.dataFile)])));
        const txn = concat([intField(1, base.version), bytesField(2, txnId), bytesField(111, concat(groups))]);
        const manifestBytes = this.buildManifest(base, version, txnName, txn, (fr) => {
          const s = staged.find((x) => x.fragmentId === intOf(fr, 1));
          if (!s) return null;
          // Copy the fragment, add the new file after its last file, and on stable-row-id tables
          // mark every row updated at this version (as Lance's own DataReplacement does).
          const parts: Uint8Array[] = [];
          const lastFile = fr.map((x) => x.no).lastIndexOf(2);
          fr.forEach((x, i) => {
            parts.push(x.no === 7 ? bytesField(7, runsAt(s.physicalRows, version)) : x.raw);
            if (i === lastFile) parts.push(bytesField(2, s.dataFile));
          });
          return concat(parts);
        });
        await this.verifyShadow(base, manifestName(version, base.v2Names), manifestBytes, version, staged);
        const beforePublish = async (): Promise<void> => {
          failpoint("graft.before-publish");
          await this.fence();
        };
        // link() on a filesystem, put-if-absent of the .txn and the manifest on object storage: false when another writer took the version.
        const linked = await publishVersion(this.t.tableDir, base.v2Names, version, txnName, txn, manifestBytes, beforePublish);
        if (!linked) {
          if (attempt < 20) {
            this.log.debug("graft lost the race for a version; rebasing", { version });
            continue;
          }
          throw new Error(`lost the race for a new version of table ${this.t.name} ${attempt + 1} times`);
        }
        published = true;
        await this.afterPublish(version, staged);
        return { version, retries: attempt };
      }
    } catch (e) {
      if (e instanceof PublishOutcomeUnknown) {
        // The version may still land: its files stay (one no manifest names is harmless).
        throw new CommitError("COMMIT_FAILED", `grafting fragment(s) ${staged.map((s) => s.fragmentId).join(", ")} of table ${this.t.name}: ${e.message}`, { table: this.t.name, column: this.column, fragmentId: staged[0]!.fragmentId, cause: e });
      }
      if (!published) {
        await this.discard(staged);
        if (e instanceof GraftUnsafe || e instanceof CommitError || isBackfillError(e, "TABLE_BUSY")) throw e; // TABLE_BUSY: the fence
        const base = await readRawManifest(this.t.tableDir).catch(() => undefined);
        throw new CommitError("COMMIT_FAILED", `grafting fragment(s) ${staged.map((s) => s.fragmentId).join(", ")} of table ${this.t.name} failed before publishing (${(e as Error).message}); nothing was published: the table is unchanged${base ? ` (latest version ${base.version})` : ""}. Run the backfill again`, { table: this.t.name, column: this.column, fragmentId: staged[0]!.fragmentId, cause: e });
      }
      throw e;
    }
  }

  /**
   * Opens the staged manifest from a shadow table directory whose every other entry links to the
   * table's own (data files, deletion files, indices), and reads it back through LanceDB. Throws
   * {@link GraftUnsafe} when it does not read back; the table is never touched.
   */
  private async verifyShadow(base: RawManifest, finalName: string, manifestBytes: Uint8Array, version: number, staged: StagedFile[]): Promise<void> {
    try {
      failpoint("graft.verify-fail");
      const read = (shadowDb: string): Promise<void> => this.readBack(shadowDb, version, base, staged);
      if (this.remote) await this.withRemoteShadow(base, staged, finalName, manifestBytes, read);
      else await withShadowVersion(this.t, finalName, manifestBytes, read);
    } catch (e) {
      const ids = staged.map((s) => s.fragmentId);
      const why = `the staged version did not read back from a shadow copy (${(e as Error).message})`;
      throw new GraftUnsafe(ids, `grafting fragment(s) ${ids.join(", ")} of table ${this.t.name}: ${why}; nothing was published: the table is unchanged at version ${base.version}`, why);
    }
  }

  /**
   * The shadow on object storage ({@link withBucketShadow}): a table in the Lancet store's prefix whose
   * only version is the candidate manifest, byte for byte, and which holds server-side copies, under
   * the same names, of every file reading the grafted fragments needs — each one's data files (the new
   * one included) and deletion file. The other fragments' entries are the base version's, copied
   * byte for byte; their files are not copied (the row count comes from the manifest, and the
   * read-back reads only the grafted fragments).
   */
  private async withRemoteShadow(base: RawManifest, staged: StagedFile[], fileName: string, manifest: Uint8Array, read: (shadowDb: string) => Promise<void>): Promise<void> {
    const table = canonical(this.t.tableDir);
    const ids = new Set(staged.map((s) => s.fragmentId));
    const rel: string[] = staged.map((s) => `data/${s.path}`);
    for (const f of fragments(base)) {
      if (!ids.has(f.id)) continue;
      for (const d of f.files) rel.push(`data/${d.path}`);
      const del = f.fields.find((x) => x.no === 3);
      if (del) {
        const d = decodeMessage(del.bytes);
        // Lance names deletion files {fragment}-{read_version}-{id}.{arrow|bin} (file_type 0: Arrow array, 1: bitmap).
        rel.push(`_deletions/${f.id}-${intOf(d, 2)}-${String(d.find((x) => x.no === 3)?.int ?? 0n)}.${intOf(d, 1) === 1 ? "bin" : "arrow"}`);
      }
    }
    const shadowDb = `${canonical(this.t.storeDir)}/tmp/shadow-${randomUUID()}`;
    const copies = (shadowTable: string): ObjectCopy[] => rel.map((r) => ({ from: `${table}/${r}`, to: `${shadowTable}/${r}` }));
    await withBucketShadow(this.t, shadowDb, path.posix.basename(table), copies, fileName, manifest, read);
  }

  /**
   * After the link: a read of the published version from a fresh connection. If that fails,
   * {@link repair} removes only the grafted files in a new commit on top of the latest version.
   */
  private async afterPublish(version: number, staged: StagedFile[]): Promise<void> {
    try {
      failpoint("graft.after-publish");
      const db = await connectDb(this.t.dbDir);
      await (await db.openTable(this.t.name, undefined, { version } as never)).countRows();
      failpoint("graft.after-hint");
    } catch (e) {
      const ids = staged.map((s) => s.fragmentId).join(", ");
      this.log.error(`graft version ${version} of table ${this.t.name} failed after publishing (${(e as Error).message}); removing its files in a new commit`);
      let state: string;
      try {
        const r = await this.repair(staged);
        state =
          r === undefined
            ? `no later version still holds the grafted files, so nothing was removed; the table is readable at its latest version`
            : `version ${r} removes only the grafted files of column ${this.column} (fragment(s) ${ids}) and keeps every other writer's commits; the table is readable at version ${r}`;
      } catch (re) {
        state = `removing the grafted files failed too (${(re as Error).message}); version ${version} and later still hold them — check the table with \`lancet status\` and re-run the backfill`;
      }
      throw new CommitError("COMMIT_FAILED", `version ${version} of table ${this.t.name} (column ${this.column}, fragment(s) ${ids}) failed after it was published (${(e as Error).message}); ${state}. Run the backfill again to fill the column`, { table: this.t.name, column: this.column, fragmentId: staged[0]!.fragmentId, cause: e });
    }
  }

  /** The next manifest: `base`'s fields in order, with the version, timestamp, transaction and changed fragments replaced. */
  private buildManifest(base: RawManifest, version: number, txnName: string, txn: Uint8Array, fragment: (fields: RawField[]) => Uint8Array | null): Uint8Array {
    const index = base.indexSection;
    return manifestFileBytes(base, index, txn, (txnAt) => {
      const parts: Uint8Array[] = [];
      let sawTxnSection = false;
      for (const f of base.fields) {
        switch (f.no) {
          case 2: {
            const rebuilt = fragment(decodeMessage(f.bytes));
            parts.push(rebuilt ? bytesField(2, rebuilt) : f.raw);
            break;
          }
          case 3:
            parts.push(intField(3, version));
            break;
          case 4:
          case 8:
            break; // not inheritable: version aux data, tag
          case 6:
            if (index) parts.push(intField(6, 0)); // the index section is first in the file
            break;
          case 7:
            parts.push(timestampField());
            break;
          case 12:
            parts.push(bytesField(12, txnName));
            break;
          case 21:
            parts.push(intField(21, txnAt));
            sawTxnSection = true;
            break;
          default:
            parts.push(f.raw);
        }
      }
      if (!base.fields.some((f) => f.no === 12)) parts.push(bytesField(12, txnName));
      if (!sawTxnSection) parts.push(intField(21, txnAt));
      return parts;
    });
  }

  /**
   * Reads version `version` of the table in `dbDir` (the real database or a shadow) from a fresh
   * connection: the row count `base` implies, and the grafted column's first and last rows of every
   * staged fragment compared with what was written.
   */
  private async readBack(dbDir: string, version: number, base: RawManifest, staged: StagedFile[]): Promise<void> {
    const db = await connectDb(dbDir);
    const table = await db.openTable(this.t.name, undefined, { version } as never);
    let offset = 0;
    const live = new Map<number, { offset: number; rows: number }>();
    for (const f of base.fields.filter((x) => x.no === 2).map((x) => parseFragment(x.bytes))) {
      live.set(f.id, { offset, rows: f.liveRows });
      offset += f.liveRows;
    }
    const total = await table.countRows();
    if (total !== offset) throw new Error(`version ${version} counts ${total} rows; its manifest says ${offset}`);
    // The first and last rows of every staged fragment — enough to read every page header of each
    // new file's column and catch a wrong row count, size or type, without reading it all — in one
    // take by scan offset (rows come back in address order).
    const offsets: number[] = [];
    const wanted = new Map<number, number>();
    for (const s of staged) {
      const at = live.get(s.fragmentId)!;
      const windows = at.rows <= 512 ? [[0, at.rows]] : [[0, 256], [at.rows - 256, 256]];
      wanted.set(s.fragmentId, windows.reduce((n, w) => n + w[1]!, 0));
      for (const [from, count] of windows) {
        if (isBlobType(this.type)) {
          await this.verifyBlobs(table, s, at.offset + from!, count!);
          continue;
        }
        for (let i = 0; i < count!; i++) offsets.push(at.offset + from! + i);
      }
    }
    if (offsets.length === 0) return;
    const data = (await table.takeOffsets(offsets).select([this.column, "_rowaddr"]).toArrow()) as unknown as ArrowNs.Table;
    const col = data.getChild(this.column)!;
    const addrs = data.getChild("_rowaddr")!.toArray() as BigUint64Array;
    if (formatDataType(col.type) !== formatDataType(this.type)) throw new Error(`column ${this.column} reads back as ${String(col.type)}`);
    const byId = new Map(staged.map((s) => [s.fragmentId, s]));
    const seen = new Map<number, number>();
    for (let i = 0; i < data.numRows; i++) {
      const id = Number(addrs[i]! >> 32n);
      const pos = Number(addrs[i]! & 0xffffffffn);
      const s = byId.get(id);
      if (!s) throw new Error(`reading back the grafted fragments gave a row of fragment ${id}`);
      seen.set(id, (seen.get(id) ?? 0) + 1);
      const written = s.probe(pos);
      if (written !== undefined && !sameValue(col.get(i), written)) throw new Error(`fragment ${id} row ${pos} reads back differently from what was written`);
    }
    for (const [id, n] of wanted) if ((seen.get(id) ?? 0) !== n) throw new Error(`fragment ${id} reads back ${seen.get(id) ?? 0} of ${n} rows`);
  }

  /**
   * Reads rows `[offset, offset + count)` of a blob column back through LanceDB's blob API (a plain
   * query gives descriptors, not bytes): each must have the size written, and the bytes written
   * where at most 1 MiB.
   */
  private async verifyBlobs(table: LanceNs.Table, s: StagedFile, offset: number, count: number): Promise<void> {
    const rows = await table.query().select(["_rowaddr"]).withRowId().offset(offset).limit(count).toArrow({ maxBatchLength: 65536 } as never);
    if (rows.numRows !== count) throw new Error(`fragment ${s.fragmentId} reads back ${rows.numRows} of ${count} rows`);
    const addrs = rows.getChild("_rowaddr")!.toArray() as BigUint64Array;
    const ids = Array.from(rows.getChild("_rowid")!.toArray() as BigUint64Array);
    const files = await table.fetchBlobFiles(this.column, ids);
    for (let i = 0; i < ids.length; i++) {
      const pos = Number(addrs[i]! & 0xffffffffn);
      const want = s.probe(pos) as BlobProbe | undefined;
      if (want === undefined) continue;
      const file = files[i];
      if ((file === null || file === undefined) !== (want === null)) throw new Error(`fragment ${s.fragmentId} row ${pos}: blob reads back ${file ? "set" : "null"}, was written ${want === null ? "null" : "set"}`);
      if (!file || want === null) continue;
      const size = Number(file.size());
      if (size !== want.size) throw new Error(`fragment ${s.fragmentId} row ${pos}: blob reads back ${size} bytes, ${want.size} were written`);
      if (want.bytes !== null && size > 0 && Buffer.compare(await file.readRange(0n, BigInt(size)), want.bytes) !== 0) throw new Error(`fragment ${s.fragmentId} row ${pos}: blob reads back other bytes than were written`);
    }
  }

  /**
   * A new commit on top of the latest version that removes the staged files from their fragments
   * (the column reads NULL there again) and changes nothing else. Its transaction is a `Restore`,
   * which Lance treats as conflicting with every concurrent transaction, so a writer that read an
   * older version retries on top of it instead of rebasing past it. Returns the new version, or
   * undefined when the latest version no longer holds any of the files (nothing to remove).
   */
  private async repair(staged: StagedFile[]): Promise<number | undefined> {
    const names = new Set(staged.map((s) => s.path));
    for (let attempt = 0; attempt < 50; attempt++) {
      const latest = await readRawManifest(this.t.tableDir);
      const version = latest.version + 1;
      const txnId = randomUUID();
      const txnName = `${latest.version}-${txnId}.txn`;
      const txn = concat([intField(1, latest.version), bytesField(2, txnId), bytesField(106, intField(1, latest.version))]);
      let removed = 0;
      const bytes = this.buildManifest(latest, version, txnName, txn, (fr) => {
        const keep = fr.filter((x) => !(x.no === 2 && names.has(parseDataFile(x.bytes).path)));
        if (keep.length === fr.length) return null;
        removed += fr.length - keep.length;
        return concat(keep.map((x) => x.raw));
      });
      if (removed === 0) return undefined;
      const published = await publishVersion(this.t.tableDir, latest.v2Names, version, txnName, txn, bytes);
      if (published) return version;
    }
    throw new Error("lost the race for a new version 50 times");
  }
}
/** Above this many bytes a column is handed to LanceDB in pieces (see {@link writeTempTable}). */
const ONE_CALL_BYTES = 24 * 1024 * 1024;
const PIECE_BYTES = 8 * 1024 * 1024;

/**
 * Writes `values` as the one-column table `v`, one fragment with one data file. LanceDB serialises
 * what `createTable`/`add` get to Arrow IPC on the calling thread (≈ 100 ms for 150 MB), so a large
 * column goes in pieces of about {@link PIECE_BYTES} — one fragment each — compacted natively, off
 * the event loop, back into one fragment.
 */
async function writeTempTable(db: LanceNs.Connection, column: string, type: ArrowNs.DataType, values: ArrowNs.Vector, formatVersion: string): Promise<void> {
  // A blob v2 column is written as one (the field's marker makes LanceDB keep large payloads in
  // sidecar files next to the data file, which the graft moves with it).
  const schema = new arrow.Schema([isBlobType(type) ? (lancedb.blob(column) as ArrowNs.Field) : new arrow.Field(column, type, true)]);
  const piece = (from: number, to: number): ArrowNs.Table => new arrow.Table(schema, { [column]: values.slice(from, to) });
  const options = { storageOptions: { new_table_data_storage_version: formatVersion } } as never;
  const bytes = values.data.reduce((sum, d) => sum + d.byteLength, 0);
  // A blob column goes in one call: apache-arrow 18 cannot serialise a slice of a large_binary
  // vector (its 64-bit offsets break rebasing), and the payloads end up in sidecar files anyway.
  if (bytes <= ONE_CALL_BYTES || isBlobType(type)) {
    await db.createTable("v", new arrow.Table(schema, { [column]: values }) as never, options);
    return;
  }
  const rows = Math.max(1, Math.floor((values.length * PIECE_BYTES) / bytes));
  const table = await db.createTable("v", piece(0, rows) as never, options);
  for (let from = rows; from < values.length; from += rows) await table.add(piece(from, Math.min(values.length, from + rows)) as never);
  await table.optimize();
}

function sameValue(a: unknown, b: unknown): boolean {
  if (a instanceof Uint8Array && b instanceof Uint8Array) return Buffer.compare(a, b) === 0;
  if (typeof a !== "object" || a === null || typeof b !== "object" || b === null) return a === b || (Number.isNaN(a) && Number.isNaN(b));
  return JSON.stringify(plain(a)) === JSON.stringify(plain(b));
}

function plain(v: unknown): unknown {
  if (v === null || v === undefined) return null;
  if (typeof v === "bigint") return v.toString();
  if (ArrayBuffer.isView(v) && !(v instanceof DataView)) return Array.from(v as unknown as ArrayLike<number>, (x) => plain(x));
  if (typeof v === "object" && typeof (v as { toArray?: unknown }).toArray === "function" && typeof (v as { get?: unknown }).get === "function") {
    return Array.from((v as { toArray(): ArrayLike<unknown> }).toArray(), plain);
  }
  if (typeof v === "object" && typeof (v as { toJSON?: unknown }).toJSON === "function") {
    const o = (v as { toJSON(): Record<string, unknown> }).toJSON();
    return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, plain(x)]));
  }
  if (Array.isArray(v)) return v.map(plain);
  if (typeof v === "object") return Object.fromEntries(Object.entries(v as Record<string, unknown>).map(([k, x]) => [k, plain(x)]));
  if (typeof v === "number" && Number.isNaN(v)) return "NaN";
  return v;
}

/** A data file's name without `.lance`: LanceDB names the folder of its blob v2 sidecar files so. */
function stemOf(file: string): string {
  return file.replace(/\.lance$/, "");
}

/** The folder of blob v2 sidecar files that belongs to the data file at `dataFile`. */
export function sidecarOf(dataFile: string): string {
  return path.join(path.dirname(dataFile), stemOf(path.basename(dataFile)));
}

/**
 * Whether a table is on storage the graft path supports: a local or POSIX filesystem (publication by
 * `link()`), or S3-compatible object storage (publication by put-if-absent, see {@link putVersion}).
 */
export function graftSupported(t: ResolvedTable): boolean {
  return isRemote(t.tableDir) || existsSync(path.join(t.tableDir, "_versions"));
}

/**
 * Whether workers may checkpoint a fragment as a fragment file (a column file the graft adopts with a
 * hard link; `checkpoint/fragment-file.ts`): only where the graft works and files can be linked — a
 * local or POSIX filesystem. On object storage workers keep batch checkpoints.
 */
export function fragmentFilesSupported(t: ResolvedTable): boolean {
  return !isRemote(t.tableDir) && graftSupported(t);
}

