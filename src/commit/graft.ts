/**
 * The graft committer: LanceDB writes a fragment's column natively (a one-column temporary table),
 * and Lancet publishes that data file into the table's next manifest with a hand-written
 * `DataReplacement` transaction — copying every other byte of the previous manifest. ≈ 2 ms per
 * commit and flat, against ≈ 100–300 ms for a `mergeInsert`; no key column, no index.
 *
 * Lance accepts whatever manifest is published, and several mistakes make a table unreadable for
 * every client, so every guard of `reference/lancedb-node-write-path.md` §6.4 runs before anything is
 * published, publication is atomic (`link()` fails with EEXIST when another writer took the
 * version: rebase and retry), and the new version is read back; if it is not readable the previous
 * version is restored at once with a hand-written `Restore` commit.
 *
 * Local and POSIX filesystems only (atomicity rests on `link`). Fragments that cannot be grafted —
 * the column already has a file in them (a re-run with `where`, rows refilled after skips), an index
 * covers the column, a newer manifest format — are refused with {@link GraftUnsafe}; `auto` mode
 * sends those to the `mergeInsert` committer.
 */
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { copyFile, link, mkdir, rename, rm, stat, unlink, writeFile } from "node:fs/promises";
import * as path from "node:path";
import { arrow, lancedb } from "../arrow.ts";
import type { ArrowNs } from "../arrow.ts";
import { CommitError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { columnFields, intOf, listManifestFiles, manifestName, parseDataFile, parseField, parseFragment, readManifestFile, type DataFileInfo, type FieldInfo } from "../read/manifest.ts";
import { bytesField, concat, decodeMessage, intField, packedField, packedInts, str, type RawField } from "../read/protobuf.ts";
import type { ResolvedTable } from "../table.ts";
import { formatDataType, parseDataType } from "../udf/types.ts";
import { valuesToVector, vectorToValues } from "../udf/values.ts";
import type { CommitResult, Committer, FragmentSource, FragmentValues } from "./committer.ts";

const MANIFEST_FIELDS = new Set([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 21]);
const FRAGMENT_FIELDS = new Set([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
const MAX_ROWS_PER_FILE = 1_048_576;

/** A fragment the graft path must not write; `auto` mode sends it to the mergeInsert committer. */
export class GraftUnsafe extends Error {
  readonly fragmentId: number;
  constructor(fragmentId: number, message: string) {
    super(message);
    this.name = "GraftUnsafe";
    this.fragmentId = fragmentId;
  }
}

/** Test hook: exit the process at a named step of a commit (fault injection). */
function crashPoint(step: string): void {
  if (process.env.LANCET_GRAFT_CRASH_AT === step) process.exit(70);
}

interface RawManifest {
  readonly name: string;
  readonly version: number;
  readonly v2Names: boolean;
  readonly fields: RawField[];
  readonly indexSection: Uint8Array | null;
  readonly footerMajor: number;
  readonly footerMinor: number;
}

async function readRawManifest(tableDir: string, version?: number): Promise<RawManifest> {
  const { name, buf, fields } = await readManifestFile(tableDir, version);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let indexSection: Uint8Array | null = null;
  const idx = fields.find((f) => f.no === 6);
  if (idx) {
    const at = Number(idx.int);
    indexSection = buf.slice(at + 4, at + 4 + dv.getUint32(at, true));
  }
  return { name, version: intOf(fields, 3), v2Names: name.length === 29, fields, indexSection, footerMajor: dv.getInt16(buf.length - 8, true), footerMinor: dv.getInt16(buf.length - 6, true) };
}

function fieldDefs(fields: RawField[]): FieldInfo[] {
  return fields.filter((f) => f.no === 1).map((f) => parseField(f.bytes));
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
  /** What was written at the first and last 1024 physical rows (a copy: the full column is not kept). */
  readonly probe: (physicalRow: number) => unknown;
  readonly rows: number;
}

/** Keeps copies of a column's first and last `n` values, for the read-back check, so the rest can be freed. */
function probeOf(v: ArrowNs.Vector, n = 1024): (row: number) => unknown {
  const len = v.length;
  const head = vectorToValues(v.slice(0, Math.min(len, n)));
  const tailStart = Math.max(0, len - n);
  const tail = vectorToValues(v.slice(tailStart, len));
  return (row) => (row < head.length ? head[row] : row >= tailStart ? tail[row - tailStart] : undefined);
}

export interface GraftCommitterOptions {
  readonly logger: Logger;
}

export class GraftCommitter implements Committer {
  private readonly t: ResolvedTable;
  private readonly column: string;
  private readonly type: ArrowNs.DataType;
  private readonly log: Logger;
  /** Serialises publication within this process (other processes race through link/EEXIST). */
  private publishing: Promise<unknown> = Promise.resolve();

  constructor(t: ResolvedTable, column: string, dataType: string, options: GraftCommitterOptions) {
    this.t = t;
    this.column = column;
    this.type = parseDataType(dataType);
    this.log = options.logger;
  }

  async prepare(): Promise<void> {}

  /** Refuses fragments the graft path must not write (see the module comment). */
  async check(fragmentIds: readonly number[], manifest?: RawManifest): Promise<Map<number, string>> {
    const m = manifest ?? (await readRawManifest(this.t.tableDir));
    const out = new Map<number, string>();
    const unsafe = this.unsafeManifest(m);
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
    const unknown = m.fields.find((f) => !MANIFEST_FIELDS.has(f.no));
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
    const refused = await this.check(sources.map((f) => f.fragmentId));
    if (refused.size > 0) {
      const [id, why] = [...refused][0]!;
      throw new GraftUnsafe(id, `fragment ${id} of table ${this.t.name} cannot be grafted: ${why}`);
    }
    // One fragment at a time: load, write natively, keep only the staged file's entry.
    const staged: StagedFile[] = [];
    let writeMs = 0;
    for (const src of sources) {
      const values = await src.load();
      const w0 = performance.now();
      staged.push(await this.stage(values));
      writeMs += performance.now() - w0;
    }
    const run = this.publishing.then(() => this.publish(staged));
    this.publishing = run.catch(() => {});
    const { version, retries } = await run;
    return { version, rowsWritten: staged.reduce((s, x) => s + x.rows, 0), commits: 1, writeMs, retries };
  }

  /** Writes the fragment's column natively into a temporary table and moves its file into the table. */
  private async stage(f: FragmentValues): Promise<StagedFile> {
    const latest = await readRawManifest(this.t.tableDir);
    const frag = fragments(latest).find((x) => x.id === f.fragmentId);
    if (!frag) throw new GraftUnsafe(f.fragmentId, `fragment ${f.fragmentId} of table ${this.t.name} no longer exists`);
    const physical = frag.physicalRows;
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
      const src = vectorToValues(f.values);
      const vals = new Array<unknown>(physical).fill(null);
      for (let i = 0; i < n; i++) vals[Number(f.rowAddrs[i]! & 0xffffffffn)] = src[i];
      full = valuesToVector(vals, this.type);
    }
    const dataFormat = decodeMessage(latest.fields.find((x) => x.no === 15)?.bytes ?? new Uint8Array());
    const formatVersion = dataFormat.find((x) => x.no === 2) ? str(dataFormat.find((x) => x.no === 2)!) : "2.0";
    const tmpDir = path.join(this.t.storeDir, "tmp", randomUUID());
    await mkdir(tmpDir, { recursive: true });
    try {
      const db = await lancedb.connect(tmpDir);
      const schema = new arrow.Schema([new arrow.Field(this.column, this.type, true)]);
      await db.createTable("v", new arrow.Table(schema, { [this.column]: full }) as never, {
        storageOptions: { new_table_data_storage_version: formatVersion },
      } as never);
      const tm = await readRawManifest(path.join(tmpDir, "v.lance"));
      const tfrags = fragments(tm);
      if (tfrags.length !== 1 || tfrags[0]!.files.length !== 1) throw new GraftUnsafe(f.fragmentId, `the temporary table for fragment ${f.fragmentId} has ${tfrags.length} fragment(s); expected one file`);
      const tf = tfrags[0]!;
      const file = tf.files[0]!;
      // Guards (write-path reference §6.4): format version, row count, field types in order.
      const [maj, min] = formatVersion.split(".").map(Number);
      if (file.fileMajor !== maj || file.fileMinor !== min) throw new GraftUnsafe(f.fragmentId, `data file version ${file.fileMajor}.${file.fileMinor} differs from the table's ${formatVersion}`);
      if (tf.physicalRows !== physical) throw new GraftUnsafe(f.fragmentId, `wrote ${tf.physicalRows} rows for a fragment of ${physical}`);
      const tempFields = columnFields(fieldDefs(tm.fields), this.column);
      const targetFields = columnFields(fieldDefs(latest.fields), this.column);
      if (tempFields.length !== targetFields.length || tempFields.some((x, i) => x.logicalType !== targetFields[i]!.logicalType)) {
        throw new GraftUnsafe(f.fragmentId, `the written field types (${tempFields.map((x) => x.logicalType).join(", ")}) differ from column ${this.column}'s (${targetFields.map((x) => x.logicalType).join(", ")})`);
      }
      const idMap = new Map(tempFields.map((x, i) => [x.id, targetFields[i]!.id]));
      if (file.fields.some((id) => !idMap.has(id))) throw new GraftUnsafe(f.fragmentId, `the written file lists fields ${file.fields.join(", ")} outside column ${this.column}`);
      const name = `${Array.from({ length: 20 }, () => (Math.random() < 0.5 ? "0" : "1")).join("")}${randomUUID().replace(/-/g, "").slice(0, 30)}.lance`;
      const target = path.join(this.t.tableDir, "data", name);
      await rename(path.join(tmpDir, "v.lance", "data", file.path), target).catch(async () => {
        await copyFile(path.join(tmpDir, "v.lance", "data", file.path), target);
      });
      crashPoint("after-move");
      const size = (await stat(target)).size;
      const dataFile = encodeDataFile({ ...file, path: name, fields: file.fields.map((id) => idMap.get(id)!) }, size);
      return { fragmentId: f.fragmentId, physicalRows: physical, dataFile, probe: probeOf(full), rows: n };
    } finally {
      await rm(tmpDir, { recursive: true, force: true });
    }
  }

  /** Builds the next manifest from `base` with the staged files; publishes it atomically; verifies it. */
  private async publish(staged: StagedFile[]): Promise<{ version: number; retries: number }> {
    for (let attempt = 0; ; attempt++) {
      const base = await readRawManifest(this.t.tableDir);
      const refused = await this.check(staged.map((s) => s.fragmentId), base);
      for (const s of staged) {
        const f = fragments(base).find((x) => x.id === s.fragmentId);
        if (!f || f.physicalRows !== s.physicalRows) refused.set(s.fragmentId, "the fragment changed since its file was written");
      }
      if (refused.size > 0) {
        const [id, why] = [...refused][0]!;
        throw new CommitError("COMMIT_FAILED", `fragment ${id} of table ${this.t.name} cannot be committed: ${why}; run the backfill again`, { table: this.t.name, column: this.column, fragmentId: id });
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
          if (x.no === 7) {
            parts.push(bytesField(7, runsAt(s.physicalRows, version)));
          } else {
            parts.push(x.raw);
          }
          if (i === lastFile) parts.push(bytesField(2, s.dataFile));
        });
        return concat(parts);
      });
      await mkdir(path.join(this.t.tableDir, "_transactions"), { recursive: true });
      await writeFile(path.join(this.t.tableDir, "_transactions", txnName), txn);
      crashPoint("after-txn");
      const finalName = manifestName(version, base.v2Names);
      const tmp = path.join(this.t.tableDir, "_versions", `.tmp_${finalName}_${randomUUID()}`);
      await writeFile(tmp, manifestBytes);
      crashPoint("after-tmp-manifest");
      try {
        await link(tmp, path.join(this.t.tableDir, "_versions", finalName));
      } catch (e) {
        await unlink(tmp).catch(() => {});
        if ((e as NodeJS.ErrnoException).code === "EEXIST" && attempt < 20) {
          this.log.debug("graft lost the race for a version; rebasing", { version });
          continue;
        }
        throw e;
      }
      crashPoint("after-link");
      await unlink(tmp).catch(() => {});
      await writeFile(path.join(this.t.tableDir, "_versions", "latest_version_hint.json"), JSON.stringify({ version })).catch(() => {});
      crashPoint("after-hint");
      await this.verify(version, staged);
      return { version, retries: attempt };
    }
  }

  /** The next manifest: `base`'s fields in order, with the version, timestamp, transaction and changed fragments replaced. */
  private buildManifest(base: RawManifest, version: number, txnName: string, txn: Uint8Array, fragment: (fields: RawField[]) => Uint8Array | null): Uint8Array {
    const index = base.indexSection;
    const indexAt = 0;
    const txnAt = index ? 4 + index.length : 0;
    const manifestAt = txnAt + 4 + txn.length;
    const now = Date.now();
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
          if (index) parts.push(intField(6, indexAt));
          break;
        case 7:
          parts.push(bytesField(7, concat([intField(1, Math.floor(now / 1000)), intField(2, (now % 1000) * 1_000_000)])));
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
    const manifest = concat(parts);
    const u32 = (n: number): Uint8Array => {
      const b = new Uint8Array(4);
      new DataView(b.buffer).setUint32(0, n, true);
      return b;
    };
    const footer = new Uint8Array(16);
    const dv = new DataView(footer.buffer);
    dv.setBigInt64(0, BigInt(manifestAt), true);
    dv.setInt16(8, base.footerMajor, true);
    dv.setInt16(10, base.footerMinor, true);
    footer.set(new TextEncoder().encode("LANC"), 12);
    return concat([...(index ? [u32(index.length), index] : []), u32(txn.length), txn, u32(manifest.length), manifest, footer]);
  }

  /** Reads the new version back from a fresh connection; restores the previous version if it is not readable. */
  private async verify(version: number, staged: StagedFile[]): Promise<void> {
    try {
      const db = await lancedb.connect(this.t.dbDir);
      const table = await db.openTable(this.t.name, undefined, { version } as never);
      const m = await readRawManifest(this.t.tableDir, version);
      let offset = 0;
      const live = new Map<number, { offset: number; rows: number }>();
      for (const f of m.fields.filter((x) => x.no === 2).map((x) => parseFragment(x.bytes))) {
        live.set(f.id, { offset, rows: f.liveRows });
        offset += f.liveRows;
      }
      const total = await table.countRows();
      if (total !== offset) throw new Error(`version ${version} counts ${total} rows; its manifest says ${offset}`);
      for (const s of staged) {
        const at = live.get(s.fragmentId)!;
        // The first and last rows of the fragment: enough to read every page header of the new
        // file's column and catch a wrong row count, size or type, without reading it all.
        const windows = at.rows <= 512 ? [[0, at.rows]] : [[0, 256], [at.rows - 256, 256]];
        for (const [from, count] of windows) {
          const data = await table.query().select([this.column, "_rowaddr"]).offset(at.offset + from!).limit(count!).toArrow({ maxBatchLength: 65536 } as never);
          if (data.numRows !== count) throw new Error(`fragment ${s.fragmentId} reads back ${data.numRows} of ${count} rows`);
          const col = data.getChild(this.column)!;
          const addrs = data.getChild("_rowaddr")!;
          if (formatDataType(col.type) !== formatDataType(this.type)) throw new Error(`column ${this.column} reads back as ${String(col.type)}`);
          for (let i = 0; i < data.numRows; i++) {
            const pos = Number((addrs.get(i) as bigint) & 0xffffffffn);
            const written = s.probe(pos);
            if (written !== undefined && !sameValue(col.get(i), written)) throw new Error(`fragment ${s.fragmentId} row ${pos} reads back differently from what was written`);
          }
        }
      }
    } catch (e) {
      this.log.error(`graft of version ${version} did not read back (${(e as Error).message}); restoring version ${version - 1}`);
      await this.restore(version);
      throw new CommitError("COMMIT_FAILED", `the grafted version ${version} of table ${this.t.name} did not read back (${(e as Error).message}); version ${version - 1} was restored as version ${version + 1}. Use --commit-mode merge`, { table: this.t.name, column: this.column });
    }
  }

  /** Publishes a copy of the manifest before `bad` as the next version, with a Restore transaction. */
  private async restore(bad: number): Promise<void> {
    const prev = await readRawManifest(this.t.tableDir, bad - 1);
    for (let attempt = 0; attempt < 20; attempt++) {
      const latest = Math.max(...(await listManifestFiles(this.t.tableDir)).keys());
      const version = latest + 1;
      const txnId = randomUUID();
      const txnName = `${latest}-${txnId}.txn`;
      const txn = concat([intField(1, latest), bytesField(2, txnId), bytesField(106, intField(1, bad - 1))]);
      const bytes = this.buildManifest(prev, version, txnName, txn, () => null);
      await writeFile(path.join(this.t.tableDir, "_transactions", txnName), txn);
      const finalName = manifestName(version, prev.v2Names);
      const tmp = path.join(this.t.tableDir, "_versions", `.tmp_${finalName}_${randomUUID()}`);
      await writeFile(tmp, bytes);
      try {
        await link(tmp, path.join(this.t.tableDir, "_versions", finalName));
        await unlink(tmp);
        await writeFile(path.join(this.t.tableDir, "_versions", "latest_version_hint.json"), JSON.stringify({ version })).catch(() => {});
        return;
      } catch (e) {
        await unlink(tmp).catch(() => {});
        if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      }
    }
  }
}

/** `RowLatestUpdateVersionSequence` with one run: rows [0, n) updated at `version`. */
function runsAt(n: number, version: number): Uint8Array {
  const range = bytesField(1, concat([intField(1, 0), intField(2, n)]));
  const segment = bytesField(1, range);
  return bytesField(1, concat([segment, intField(2, version)]));
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
  if (typeof v === "number" && Number.isNaN(v)) return "NaN";
  return v;
}

/** Whether a table directory is on storage the graft path supports (a local or POSIX filesystem). */
export function graftSupported(t: ResolvedTable): boolean {
  return existsSync(path.join(t.tableDir, "_versions"));
}

