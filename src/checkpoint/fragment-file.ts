/**
 * Fragment files: a checkpoint that is the column file itself. A task that covers a whole fragment
 * (every row selected, no deleted rows) appends each computed batch, in row order, to a one-column
 * LanceDB table kept with the fragment's checkpoints, and compacts it into one data file when the task
 * ends. The graft committer then links that data file into the table and only writes the manifest: the
 * values cross the disk once and never pass through the coordinator.
 *
 * ## Layout and rules
 *
 * A fragment's checkpoint folder holds numbered attempts' files, `file-<n>/`, each with the table
 * (`v.lance`), one small record per append (`appends/<version>.json`: the rows `[start, end)` that
 * version added), a record per batch the error policy skipped rows in (`skipped-<start>-<end>.json`),
 * the writer's probe (`probe.arrow`: its first and last values) and, when something went wrong,
 * `poisoned`. The rules:
 *
 * - **The current file** is the highest-numbered one, if it is not poisoned and its append records,
 *   for the versions its latest manifest has, chain from row 0 to exactly its row count. Its rows are
 *   the fragment's rows `[0, rows)`, in order. Anything else (rows no record accounts for, a gap, an
 *   overlap) is not a checkpoint: it counts as no rows, and the next writer starts `file-<n+1>`.
 * - **A folder is never reused.** A writer continues the current file or creates the next number
 *   (`mkdir`, which refuses an existing name: two writers never start the same file). A writer that
 *   finds its append produced an unexpected version (another writer appended at the same time)
 *   poisons the file and fails; a writer checks the poison mark before every append. A straggler of
 *   an old attempt can therefore only write into a file nobody uses again.
 * - Each append is a LanceDB commit, so a killed worker loses only its in-flight batches; a record
 *   written before an append that never happened names a version the table does not have, and is
 *   ignored (and replaced by the next append's).
 */
import { existsSync } from "node:fs";
import { mkdir, readFile, rm, unlink } from "node:fs/promises";
import * as path from "node:path";
import { arrow, lancedb, type ArrowNs, type LanceNs } from "../arrow.ts";
import { CheckpointError } from "../errors.ts";
import { readManifest } from "../read/manifest.ts";
import { atomicWrite, listDir } from "./files.ts";
import type { BatchRange } from "./store.ts";

export const FILE_TABLE = "v";
const FILE_DIR = /^file-(\d+)$/;
/** Rows at each end of a fragment file kept in its probe. */
const PROBE_ROWS = 1024;
const PROBE_FILE = "probe.arrow";
const POISON = "poisoned";

/** A fragment file that holds the fragment's rows `[0, rows)`: its folder (a LanceDB database) and table folder. */
export interface FragmentFile {
  readonly dir: string;
  readonly tableDir: string;
  readonly rows: number;
  /** The table's latest version. */
  readonly version: number;
}

/** The numbers of the `file-<n>` folders under a checkpoint folder, highest first. */
async function attempts(batchDir: string): Promise<number[]> {
  return (await listDir(batchDir)).flatMap((n) => {
    const m = FILE_DIR.exec(n);
    return m ? [Number(m[1])] : [];
  }).sort((a, b) => b - a);
}

/** The file in `dir` if its appends chain from row 0 to its row count (see the module comment), else undefined. */
async function validFile(dir: string): Promise<FragmentFile | undefined> {
  if (existsSync(path.join(dir, POISON))) return undefined;
  const tableDir = path.join(dir, `${FILE_TABLE}.lance`);
  if (!existsSync(path.join(tableDir, "_versions"))) return undefined;
  let m;
  try {
    m = await readManifest(tableDir);
  } catch (e) {
    if (/has no manifest/.test((e as Error).message)) return undefined; // created, never committed
    throw e;
  }
  const rows = m.fragments.reduce((s, f) => s + f.physicalRows, 0);
  const chain: BatchRange[] = [];
  for (const n of await listDir(path.join(dir, "appends"))) {
    const v = /^(\d+)\.json$/.exec(n);
    if (!v || Number(v[1]) > m.version) continue; // an append that never happened
    try {
      chain.push(JSON.parse(await readFile(path.join(dir, "appends", n), "utf8")) as BatchRange);
    } catch {
      return undefined;
    }
  }
  chain.sort((a, b) => a.start - b.start);
  let at = 0;
  for (const c of chain) {
    if (c.start !== at || c.end <= c.start) return undefined;
    at = c.end;
  }
  return at === rows && rows > 0 ? { dir, tableDir, rows, version: m.version } : undefined;
}

/** The current fragment file of a checkpoint folder (see the module comment), or undefined. */
export async function currentFragmentFile(batchDir: string): Promise<FragmentFile | undefined> {
  const n = (await attempts(batchDir))[0];
  return n === undefined ? undefined : validFile(path.join(batchDir, `file-${n}`));
}

/** Rows in the current fragment file (no LanceDB call), or 0 when there is none. */
export async function fragmentFileRows(batchDir: string): Promise<number> {
  return (await currentFragmentFile(batchDir))?.rows ?? 0;
}

/** Marks a checkpoint folder's current fragment file as unusable: its rows will be computed again. */
export async function poisonFragmentFile(batchDir: string): Promise<void> {
  const n = (await attempts(batchDir))[0];
  if (n !== undefined) await atomicWrite(path.join(batchDir, `file-${n}`, POISON), new Date().toISOString(), false);
}

/** Rows the error policy skipped in the current fragment file's first `rows` rows. */
export async function fragmentFileSkipped(batchDir: string, rows: number): Promise<number> {
  const f = await currentFragmentFile(batchDir);
  if (!f) return 0;
  let n = 0;
  for (const name of await listDir(f.dir)) {
    const m = /^skipped-(\d+)-(\d+)\.json$/.exec(name);
    if (!m || Number(m[2]) > rows) continue;
    n += (JSON.parse(await readFile(path.join(f.dir, name), "utf8")) as { rows: number }).rows;
  }
  return n;
}

/**
 * The probe a fragment file's writer left — its first and last values by row — or undefined when
 * there is none (the file was written by more than one attempt): a lookup by physical row.
 */
export async function readFragmentFileProbe(file: FragmentFile): Promise<((row: number) => unknown) | undefined> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path.join(file.dir, PROBE_FILE));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
  const t = arrow.tableFromIPC(bytes);
  const rows = t.getChild("row")!.toArray() as Int32Array;
  const values = t.getChild("value")!;
  const at = new Map<number, number>();
  rows.forEach((r, i) => at.set(r, i));
  return (row) => {
    const i = at.get(row);
    return i === undefined ? undefined : values.get(i);
  };
}

function emptyOf(type: ArrowNs.DataType): ArrowNs.Vector {
  return arrow.makeVector(arrow.makeData({ type, length: 0, nullCount: 0 } as never)) as ArrowNs.Vector;
}

/** A vector's values in buffers of their own (a probe must not keep a whole batch alive). */
function copyOf(v: ArrowNs.Vector): ArrowNs.Vector {
  return arrow.tableFromIPC(arrow.tableToIPC(new arrow.Table({ v }))).getChild("v")!;
}

/** Appends a task's batches, in row order, to its fragment's file. */
export class FragmentFileWriter {
  private readonly dir: string;
  private readonly db: LanceNs.Connection;
  private readonly schema: ArrowNs.Schema;
  private readonly formatVersion: string;
  private readonly where: { table: string; column: string; fragmentId: number };
  private table: LanceNs.Table | undefined;
  private version: number;
  private appends = 0;
  private probe: { head: ArrowNs.Vector; tail: ArrowNs.Vector } | undefined;
  /** Rows in the file: the fragment's rows `[0, rows)`. */
  rows: number;

  private constructor(dir: string, db: LanceNs.Connection, table: LanceNs.Table | undefined, file: FragmentFile | undefined, schema: ArrowNs.Schema, formatVersion: string, where: FragmentFileWriter["where"]) {
    this.dir = dir;
    this.db = db;
    this.table = table;
    this.rows = file?.rows ?? 0;
    this.version = file?.version ?? 0;
    this.schema = schema;
    this.formatVersion = formatVersion;
    this.where = where;
  }

  /** Continues the current fragment file under `batchDir`, or starts the next one. */
  static async open(batchDir: string, column: string, type: ArrowNs.DataType, formatVersion: string, where: FragmentFileWriter["where"]): Promise<FragmentFileWriter> {
    await mkdir(batchDir, { recursive: true });
    const file = await currentFragmentFile(batchDir);
    let dir: string;
    if (file) {
      dir = file.dir;
      // Records of batches killed before their append (a resumed run cuts its batches anew).
      for (const name of await listDir(dir)) {
        const m = /^skipped-(\d+)-(\d+)\.json$/.exec(name);
        if (m && Number(m[1]) >= file.rows) await unlink(path.join(dir, name)).catch(() => {});
      }
      for (const name of await listDir(path.join(dir, "appends"))) {
        const v = /^(\d+)\.json$/.exec(name);
        if (v && Number(v[1]) > file.version) await unlink(path.join(dir, "appends", name)).catch(() => {});
      }
    } else {
      dir = path.join(batchDir, `file-${((await attempts(batchDir))[0] ?? 0) + 1}`);
      try {
        await mkdir(dir); // refuses an existing folder: one writer per file
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
        throw new CheckpointError(`another worker started the fragment file of ${where.table}.${where.column} fragment ${where.fragmentId} at the same time; this attempt stops`, { ...where, retryable: true });
      }
    }
    await mkdir(path.join(dir, "appends"), { recursive: true });
    const db = await lancedb.connect(dir);
    const table = file ? await db.openTable(FILE_TABLE) : undefined;
    const w = new FragmentFileWriter(dir, db, table, file, new arrow.Schema([new arrow.Field(column, type, true)]), formatVersion, where);
    if (!file) w.probe = { head: emptyOf(type), tail: emptyOf(type) };
    return w;
  }

  private fail(message: string, rowOffset: number): CheckpointError {
    const { table, column, fragmentId } = this.where;
    return new CheckpointError(`fragment file of ${table}.${column} fragment ${fragmentId} (${this.dir}): ${message}`, { table, column, fragmentId, rowOffset, retryable: true });
  }

  /** Appends rows `[range.start, range.end)` (their values in order); `skipped` of them were skipped by the error policy. */
  async append(range: BatchRange, values: ArrowNs.Vector, skipped: number): Promise<void> {
    if (range.start !== this.rows || values.length !== range.end - range.start) throw this.fail(`holds rows 0-${this.rows - 1}; cannot append rows ${range.start}-${range.end - 1}`, range.start);
    if (existsSync(path.join(this.dir, POISON))) throw this.fail("another attempt wrote to it at the same time; its rows will be computed again", range.start);
    const expected = this.version + 1;
    await atomicWrite(path.join(this.dir, "appends", `${expected}.json`), JSON.stringify({ start: range.start, end: range.end }));
    if (skipped > 0) await atomicWrite(path.join(this.dir, `skipped-${range.start}-${range.end}.json`), JSON.stringify({ rows: skipped }));
    const data = new arrow.Table(this.schema, { [this.where.column]: values });
    let version: number;
    if (!this.table) {
      this.table = await this.db.createTable(FILE_TABLE, data as never, { storageOptions: { new_table_data_storage_version: this.formatVersion } } as never);
      version = await this.table.version();
    } else version = (await this.table.add(data as never)).version;
    if (version !== expected) {
      // Another attempt appended at the same time: the file's rows are no longer the fragment's in order.
      await atomicWrite(path.join(this.dir, POISON), `version ${version}, expected ${expected}`, false);
      throw this.fail(`another attempt appended at the same time (version ${version}, expected ${expected}); the file is poisoned and its rows will be computed again`, range.start);
    }
    this.version = version;
    this.appends++;
    this.rows = range.end;
    this.keepProbe(values);
  }

  /** Keeps copies of the first and last {@link PROBE_ROWS} values written (when this writer wrote from row 0). */
  private keepProbe(values: ArrowNs.Vector): void {
    if (!this.probe) return;
    const p = this.probe;
    if (p.head.length < PROBE_ROWS) p.head = copyOf(p.head.concat(values.slice(0, PROBE_ROWS - p.head.length)));
    const joined = p.tail.concat(values);
    p.tail = copyOf(joined.slice(Math.max(0, joined.length - PROBE_ROWS)));
  }

  /**
   * Compacts the file into one data file (when it has more than one) and, when this writer wrote
   * every row, leaves its probe (the first and last values, for the committer's read-back check).
   */
  async finish(): Promise<void> {
    if (!this.table || this.appends === 0) return;
    await compactFragmentFile({ dir: this.dir, tableDir: path.join(this.dir, `${FILE_TABLE}.lance`), rows: this.rows, version: this.version }, this.table);
    if (!this.probe) return;
    const { head, tail } = this.probe;
    const tailStart = this.rows - tail.length;
    const rows = Int32Array.from({ length: head.length + tail.length }, (_, i) => (i < head.length ? i : tailStart + i - head.length));
    const table = new arrow.Table({ row: arrow.makeVector(rows), value: head.concat(tail) });
    // Not synced: a probe lost or torn by a power cut is read back from the file instead.
    await atomicWrite(path.join(this.dir, PROBE_FILE), arrow.tableToIPC(table, "file"), false);
  }

  close(): void {
    this.table?.close();
    this.db.close();
  }
}

/** Compacts a fragment file's table into one fragment with one data file (a no-op when it is one already). */
export async function compactFragmentFile(file: FragmentFile, table: LanceNs.Table): Promise<void> {
  const m = await readManifest(file.tableDir);
  if (m.fragments.length > 1 || m.fragments.some((f) => f.files.length > 1)) await table.optimize();
}

/** Reads rows `[from, to)` of a checkpoint folder's current fragment file in pieces of at most `pieceRows` rows. */
export async function* readFragmentFile(batchDir: string, column: string, from: number, to: number, pieceRows = 65_536): AsyncGenerator<ArrowNs.Vector> {
  const file = await currentFragmentFile(batchDir);
  if (!file || file.rows < to) throw new Error(`the fragment file in ${batchDir} holds ${file?.rows ?? 0} rows, not ${to}`);
  const db = await lancedb.connect(file.dir);
  const table = await db.openTable(FILE_TABLE);
  try {
    for (let at = from; at < to; at += pieceRows) {
      const n = Math.min(pieceRows, to - at);
      const data = (await table.query().select([column]).offset(at).limit(n).toArrow({ maxBatchLength: pieceRows } as never)) as unknown as ArrowNs.Table;
      if (data.numRows !== n) throw new Error(`read ${data.numRows} of rows ${at}-${at + n - 1}`);
      yield data.getChild(column)!;
    }
  } finally {
    table.close();
    db.close();
  }
}

/** Removes every fragment file of a checkpoint folder (its batches stay). */
export async function removeFragmentFiles(batchDir: string): Promise<void> {
  for (const n of await attempts(batchDir)) await rm(path.join(batchDir, `file-${n}`), { recursive: true, force: true });
}
