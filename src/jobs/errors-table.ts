/**
 * The errors table: every row an error policy skipped, in the LanceDB system table `_lancet_errors`
 * of the same database (append-only), so any process can list them (`lancet errors`).
 */
import * as path from "node:path";
import { arrow } from "../arrow.ts";
import { CheckpointError, type BackfillError } from "../errors.ts";
import { sqlString } from "../sql.ts";
import { openSystemTable, systemTableExists } from "./store.ts";
import { dbLocation } from "../storage/location.ts";
import type { LanceNs } from "../arrow.ts";

export const ERRORS_TABLE = "_lancet_errors";

export interface ErrorRecord {
  readonly jobId: string;
  readonly table: string;
  readonly column: string;
  /** `module#export` of the UDF. */
  readonly udf: string;
  readonly udfVersion: string;
  readonly fragment: number;
  /** Row address (fragment << 32 | physical offset), decimal. */
  readonly rowAddress: string;
  /** Offset of the row among the fragment's live rows at the planned version. */
  readonly rowOffset: number;
  readonly name: string;
  readonly message: string;
  readonly stack: string;
  readonly attempt: number;
  readonly bisectDepth: number;
  /** ISO time. */
  readonly at: string;
}

const FIELDS: [keyof ErrorRecord, "utf8" | "int" | "float"][] = [
  ["jobId", "utf8"], ["table", "utf8"], ["column", "utf8"], ["udf", "utf8"], ["udfVersion", "utf8"], ["fragment", "int"],
  ["rowAddress", "utf8"], ["rowOffset", "float"], ["name", "utf8"], ["message", "utf8"], ["stack", "utf8"], ["attempt", "int"],
  ["bisectDepth", "int"], ["at", "utf8"],
];
const type = (k: "utf8" | "int" | "float"): ArrowType => (k === "utf8" ? new arrow.Utf8() : k === "int" ? new arrow.Int32() : new arrow.Float64());
type ArrowType = InstanceType<typeof arrow.Utf8> | InstanceType<typeof arrow.Int32> | InstanceType<typeof arrow.Float64>;
const SCHEMA = new arrow.Schema(FIELDS.map(([k, t]) => new arrow.Field(k, type(t), true)));

export class ErrorsTable {
  private readonly table: LanceNs.Table;
  private constructor(table: LanceNs.Table) {
    this.table = table;
  }

  static async open(dbDir: string): Promise<ErrorsTable> {
    return new ErrorsTable(await openSystemTable(dbDir, ERRORS_TABLE, SCHEMA));
  }

  async append(records: readonly ErrorRecord[]): Promise<void> {
    if (records.length === 0) return;
    const cols: Record<string, unknown> = {};
    for (const [k, t] of FIELDS) cols[k] = arrow.vectorFromArray(records.map((r) => r[k]), type(t) as never);
    await this.table.add(new arrow.Table(SCHEMA, cols as never) as never);
  }

  /** The filter's records, in time order; with `limit`, the first `limit` records written (then sorted). */
  async list(filter: ErrorsFilter = {}): Promise<ErrorRecord[]> {
    const where = errorsWhere(filter);
    let query = this.table.query();
    if (where !== undefined) query = query.where(where);
    if (filter.limit !== undefined) query = query.limit(filter.limit);
    const rows = (await query.toArray()) as Record<string, unknown>[];
    return rows
      .map((r) => Object.fromEntries(FIELDS.map(([k]) => [k, r[k]])) as unknown as ErrorRecord)
      .sort((a, b) => a.at.localeCompare(b.at) || a.fragment - b.fragment || a.rowOffset - b.rowOffset);
  }

  /** How many records match the filter (`limit` ignored). */
  async count(filter: ErrorsFilter = {}): Promise<number> {
    return this.table.countRows(errorsWhere(filter));
  }
}

/** Which error records: a job's, a column's, a table's; `limit`: at most that many. */
export interface ErrorsFilter {
  readonly jobId?: string;
  readonly column?: string;
  readonly table?: string;
  readonly limit?: number;
}

function errorsWhere(filter: ErrorsFilter): string | undefined {
  const where = [
    filter.jobId ? `\`jobId\` = ${sqlString(filter.jobId)}` : "",
    filter.column ? `\`column\` = ${sqlString(filter.column)}` : "",
    filter.table ? `\`table\` = ${sqlString(filter.table)}` : "",
  ].filter(Boolean);
  return where.length > 0 ? where.join(" AND ") : undefined;
}

/** Error records of a database (none when no job ever skipped a row). */
export async function listErrors(db: string, filter: ErrorsFilter = {}): Promise<ErrorRecord[]> {
  const dir = dbLocation(db);
  if (!(await systemTableExists(dir, ERRORS_TABLE))) return [];
  return (await ErrorsTable.open(dir)).list(filter);
}

/** How many error records of a database match the filter. */
export async function countErrors(db: string, filter: ErrorsFilter = {}): Promise<number> {
  const dir = dbLocation(db);
  if (!(await systemTableExists(dir, ERRORS_TABLE))) return 0;
  return (await ErrorsTable.open(dir)).count(filter);
}

/** Error records per append to the errors table, at least (more are coalesced while an append runs). */
export const ERRORS_FLUSH_RECORDS = 1000;

/** Where a writer's records belong, for its error messages. */
export interface ErrorsWriterOptions {
  readonly jobId: string;
  readonly table: string;
  readonly column: string;
  /** Start an append once this many records wait. @default {@link ERRORS_FLUSH_RECORDS} */
  readonly flushRecords?: number;
  /** Called once, with the writer's failure, when an append fails (the job should stop). */
  readonly onFailure?: (e: BackfillError) => void;
}

/**
 * Streams a job's error records into the errors table, one record per skipped row, none dropped:
 * `add()` buffers and starts an append once {@link ErrorsWriterOptions.flushRecords} records wait
 * (appends run one at a time, in order; records that arrive meanwhile go into the next one);
 * `ready()` is the backpressure point (it waits while that many records are still unwritten);
 * `flush()` waits for every record added so far.
 *
 * The table is opened on the first append, so a job that skips nothing never touches it. The first
 * failure (opening or appending) fails the writer for good: it reports to `onFailure`, later records
 * are dropped (the job is failing), and `flush()` rejects with the same {@link BackfillError}
 * (CHECKPOINT_FAILED), which names the table and the cause.
 */
export class ErrorsWriter {
  readonly #dbDir: string;
  readonly #opts: ErrorsWriterOptions;
  readonly #flushRecords: number;
  #table: ErrorsTable | undefined;
  #pending: ErrorRecord[] = [];
  #inFlight = 0;
  #tail: Promise<void> = Promise.resolve();
  #failure: BackfillError | undefined;

  constructor(dbDir: string, opts: ErrorsWriterOptions) {
    this.#dbDir = dbDir;
    this.#opts = opts;
    this.#flushRecords = Math.max(1, opts.flushRecords ?? ERRORS_FLUSH_RECORDS);
  }

  /** Records added but not yet written (waiting or being appended). */
  get unwritten(): number {
    return this.#pending.length + this.#inFlight;
  }

  /** Buffers records; starts an append once enough wait. Never throws. */
  add(records: readonly ErrorRecord[]): void {
    if (records.length === 0) return;
    if (this.#failure) return; // the job is failing already
    for (const r of records) this.#pending.push(r);
    if (this.#pending.length >= this.#flushRecords && this.#inFlight === 0) this.#startAppend();
  }

  /** Resolves once fewer than `flushRecords` records are unwritten (at once after a failure). Never rejects. */
  async ready(): Promise<void> {
    while (!this.#failure && this.unwritten >= this.#flushRecords) {
      if (this.#inFlight === 0) this.#startAppend();
      await this.#tail;
    }
  }

  /** Writes every record added so far; rejects with the writer's failure. */
  async flush(): Promise<void> {
    while (!this.#failure && this.unwritten > 0) {
      if (this.#inFlight === 0) this.#startAppend();
      await this.#tail;
    }
    if (this.#failure) throw this.#failure;
  }

  #startAppend(): void {
    const batch = this.#pending;
    this.#pending = [];
    this.#inFlight = batch.length;
    this.#tail = this.#append(batch).then(
      () => {
        this.#inFlight = 0;
        // Records that arrived during the append: the next one takes them all.
        if (!this.#failure && this.#pending.length >= this.#flushRecords) this.#startAppend();
      },
      (e: unknown) => {
        this.#inFlight = 0;
        this.#pending = [];
        this.#failure = this.#error(e);
        this.#opts.onFailure?.(this.#failure);
      },
    );
  }

  async #append(batch: ErrorRecord[]): Promise<void> {
    this.#table ??= await ErrorsTable.open(this.#dbDir);
    await this.#table.append(batch);
  }

  #error(e: unknown): BackfillError {
    const { jobId, table, column } = this.#opts;
    const where = path.join(this.#dbDir, `${ERRORS_TABLE}.lance`);
    // Lance messages repeat themselves in a chain of "Caused by:" and name Rust source lines: keep the first link.
    const cause = (e instanceof Error ? e.message : String(e)).split(/\n|\s+Caused by:/)[0]!.replace(/, \/\S+\.rs:\d+:\d+/g, "").trim();
    return new CheckpointError(
      `could not write to the errors table ${ERRORS_TABLE} (${where}): ${cause}; job ${jobId} failed so that no row skipped by the error policy of column ${column} (table ${table}) goes unrecorded. ` +
        `Committed fragments stay committed and checkpoints are kept: repair or move aside ${ERRORS_TABLE}.lance, then run the backfill again (it retries the skipped rows)`,
      { jobId, table, column, cause: e },
    );
  }
}
