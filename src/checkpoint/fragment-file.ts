/**
 * Fragment files: a checkpoint that is the column file itself. A task that covers a whole fragment
 * (every row selected, no deleted rows) appends each computed batch, in row order, to a one-column
 * LanceDB table kept with the fragment's checkpoints (`batches/<key>/file/v.lance`), and compacts it
 * into one data file when the task ends. The graft committer then links that data file into the table
 * and only writes the manifest: the values cross the disk once and never pass through the coordinator.
 *
 * Each append is a LanceDB commit, so the table's latest manifest says exactly which rows are done:
 * rows `[0, rows)` of the fragment, in order. A killed worker loses only its in-flight batches; the
 * next attempt opens the table and appends from where it ends. An append checks the version it
 * produced, so two attempts appending at once (a redelivered queue job) fail instead of interleaving.
 * Batches the error policy skipped rows in leave a small `skipped-<start>-<end>.json` record beside
 * the table (the done marker counts them, so a later run retries those rows).
 */
import { randomUUID } from "node:crypto";
import { mkdir, open, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import * as path from "node:path";
import { arrow, lancedb, type ArrowNs, type LanceNs } from "../arrow.ts";
import { CheckpointError } from "../errors.ts";
import { readManifest } from "../read/manifest.ts";
import type { BatchRange } from "./store.ts";

/** The LanceDB database (one table, {@link FILE_TABLE}) holding a fragment file under a checkpoint directory. */
export function fragmentFileDir(batchDir: string): string {
  return path.join(batchDir, "file");
}
export const FILE_TABLE = "v";

/** Rows in a fragment file (from its latest manifest; no LanceDB call), or 0 when there is none. */
export async function fragmentFileRows(batchDir: string): Promise<number> {
  const tableDir = path.join(fragmentFileDir(batchDir), `${FILE_TABLE}.lance`);
  try {
    await readdir(path.join(tableDir, "_versions"));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return 0;
    throw e;
  }
  try {
    return (await readManifest(tableDir)).fragments.reduce((s, f) => s + f.physicalRows, 0);
  } catch (e) {
    // Created but never committed (killed inside its first append): nothing is in it.
    if (/has no manifest/.test((e as Error).message)) return 0;
    throw e;
  }
}

/** Rows the error policy skipped in a fragment file's first `rows` rows. */
export async function fragmentFileSkipped(batchDir: string, rows: number): Promise<number> {
  let n = 0;
  let names: string[];
  try {
    names = await readdir(batchDir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return 0;
    throw e;
  }
  for (const name of names) {
    const m = /^skipped-(\d+)-(\d+)\.json$/.exec(name);
    if (!m || Number(m[2]) > rows) continue; // a batch killed before its append: not in the file
    n += (JSON.parse(await readFile(path.join(batchDir, name), "utf8")) as { rows: number }).rows;
  }
  return n;
}

/** Rows at each end of a fragment file kept in its probe. */
const PROBE_ROWS = 1024;
const PROBE_FILE = "probe.arrow";

/**
 * The probe a fragment file's writer left — its first and last values by row — or undefined when
 * there is none (the file was written by more than one attempt): a lookup by physical row.
 */
export async function readFragmentFileProbe(batchDir: string): Promise<((row: number) => unknown) | undefined> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path.join(fragmentFileDir(batchDir), PROBE_FILE));
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

async function atomicJson(file: string, value: unknown): Promise<void> {
  await atomicWrite(file, JSON.stringify(value));
}

async function atomicWrite(file: string, data: Uint8Array | string): Promise<void> {
  const tmp = `${file}.${randomUUID()}.tmp`;
  const fh = await open(tmp, "w");
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
}

/** Appends a task's batches, in row order, to its fragment's file. One writer per fragment file. */
export class FragmentFileWriter {
  private readonly batchDir: string;
  private readonly db: LanceNs.Connection;
  private readonly schema: ArrowNs.Schema;
  private readonly formatVersion: string;
  private readonly where: { table: string; column: string; fragmentId: number };
  private table: LanceNs.Table | undefined;
  private version = 0;
  private appends = 0;
  private probe: { head: ArrowNs.Vector; tail: ArrowNs.Vector } | undefined;
  /** Rows in the file: the fragment's rows `[0, rows)`. */
  rows: number;

  private constructor(batchDir: string, db: LanceNs.Connection, table: LanceNs.Table | undefined, rows: number, schema: ArrowNs.Schema, formatVersion: string, where: FragmentFileWriter["where"]) {
    this.batchDir = batchDir;
    this.db = db;
    this.table = table;
    this.rows = rows;
    this.schema = schema;
    this.formatVersion = formatVersion;
    this.where = where;
  }

  /** Opens (or prepares to create) the fragment file under `batchDir`. */
  static async open(batchDir: string, column: string, type: ArrowNs.DataType, formatVersion: string, where: FragmentFileWriter["where"]): Promise<FragmentFileWriter> {
    const dir = fragmentFileDir(batchDir);
    await mkdir(dir, { recursive: true });
    const rows = await fragmentFileRows(batchDir);
    const db = await lancedb.connect(dir);
    let table: LanceNs.Table | undefined;
    if (rows > 0) table = await db.openTable(FILE_TABLE);
    else await rm(path.join(dir, `${FILE_TABLE}.lance`), { recursive: true, force: true }); // never committed
    const w = new FragmentFileWriter(batchDir, db, table, rows, new arrow.Schema([new arrow.Field(column, type, true)]), formatVersion, where);
    if (table) w.version = await table.version();
    else w.probe = { head: emptyOf(type), tail: emptyOf(type) };
    return w;
  }

  /** Appends rows `[range.start, range.end)` (their values in order); `skipped` of them were skipped by the error policy. */
  async append(range: BatchRange, values: ArrowNs.Vector, skipped: number): Promise<void> {
    const { table: tableName, column, fragmentId } = this.where;
    if (range.start !== this.rows || values.length !== range.end - range.start) {
      throw new CheckpointError(`fragment file of ${tableName}.${column} fragment ${fragmentId} holds rows 0-${this.rows - 1}; cannot append rows ${range.start}-${range.end - 1}`, { table: tableName, column, fragmentId, rowOffset: range.start });
    }
    if (skipped > 0) await atomicJson(path.join(this.batchDir, `skipped-${range.start}-${range.end}.json`), { rows: skipped });
    const data = new arrow.Table(this.schema, { [column]: values });
    if (!this.table) {
      this.table = await this.db.createTable(FILE_TABLE, data as never, { storageOptions: { new_table_data_storage_version: this.formatVersion } } as never);
      this.version = await this.table.version();
    } else {
      const r = await this.table.add(data as never);
      if (r.version !== this.version + 1) {
        // Another attempt appended at the same time: the file's rows are no longer in order.
        await rm(fragmentFileDir(this.batchDir), { recursive: true, force: true });
        throw new CheckpointError(`two workers appended to the fragment file of ${tableName}.${column} fragment ${fragmentId} at once (version ${r.version}, expected ${this.version + 1}); the file was removed and its rows will be computed again`, { table: tableName, column, fragmentId, rowOffset: range.start, retryable: true });
      }
      this.version = r.version;
    }
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
    await compactFragmentFile(this.batchDir, this.table);
    if (!this.probe) return;
    const { head, tail } = this.probe;
    const tailStart = this.rows - tail.length;
    const rows = Int32Array.from({ length: head.length + tail.length }, (_, i) => (i < head.length ? i : tailStart + i - head.length));
    const table = new arrow.Table({ row: arrow.makeVector(rows), value: head.concat(tail) });
    // Not synced: a probe lost or torn by a power cut is read back from the file instead.
    const file = path.join(fragmentFileDir(this.batchDir), PROBE_FILE);
    const tmp = `${file}.${randomUUID()}.tmp`;
    await writeFile(tmp, arrow.tableToIPC(table, "file"));
    await rename(tmp, file);
  }

  close(): void {
    this.table?.close();
    this.db.close();
  }
}

/** Compacts a fragment file's table into one fragment with one data file (a no-op when it is one already). */
export async function compactFragmentFile(batchDir: string, table: LanceNs.Table): Promise<void> {
  const m = await readManifest(path.join(fragmentFileDir(batchDir), `${FILE_TABLE}.lance`));
  if (m.fragments.length > 1 || m.fragments.some((f) => f.files.length > 1)) await table.optimize();
}

/** Reads rows `[from, to)` of a fragment file in pieces of at most `pieceRows` rows, as Arrow vectors. */
export async function* readFragmentFile(batchDir: string, column: string, from: number, to: number, pieceRows = 65_536): AsyncGenerator<ArrowNs.Vector> {
  const db = await lancedb.connect(fragmentFileDir(batchDir));
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
