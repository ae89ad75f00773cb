/**
 * The worker side of a UDTF view's refresh: computes one partition of the source (at the pinned
 * version) with the view's UDTF and appends its output rows, tagged with the partition, to the
 * refresh's staging table. The coordinator replaces the view's rows with the staging table's once
 * every partition is staged.
 *
 * A task first deletes whatever its partition already has in the staging table (a previous attempt's,
 * cut short), so a retried partition is never staged twice; it reports the partition only once all
 * its rows are appended. `fn` gets the partition's rows as an async iterable of Arrow record batches,
 * streamed from LanceDB; its output is appended every `maxRowsPerFragment` rows. A partition that
 * fails is retried or skipped as the error policy says; a failure removes its staged rows.
 */
import { arrow} from "../arrow.ts";
import type { ArrowNs, LanceNs } from "../arrow.ts";
import { BackfillError, UdfError } from "../errors.ts";
import { failpoint } from "../failpoints.ts";
import { sqlString } from "../sql.ts";
import { backoffMs, matchRule, resolveErrorPolicy, type ErrorPolicy } from "../udf/policy.ts";
import { parseDataType } from "../udf/types.ts";
import { blobColumnsOf, blobHandles, type BlobHandle } from "../udf/blob.ts";
import { loadUdtf, type UdtfSpec } from "../udf/udtf.ts";
import { ValueTypeError, vectorToValues } from "../udf/values.ts";
import { eachOutput, OutputRows } from "./outputs.ts";
import { prepareRunner } from "./setup.ts";
import type { BatchReport, RowError, TaskSpec, UdtfTaskConfig, WorkerConfig } from "./protocol.ts";
import { connectDb } from "../storage/location.ts";

const PARTITION = "__partition";
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class UdtfRunner {
  private readonly abort = new AbortController();
  private readonly config: WorkerConfig;
  private readonly spec: UdtfSpec;
  private readonly state: unknown;
  private readonly db: LanceNs.Connection;
  private readonly u: UdtfTaskConfig;
  private readonly policy: ErrorPolicy;
  private readonly outputTypes: [string, ArrowNs.DataType][];

  private constructor(config: WorkerConfig, spec: UdtfSpec, state: unknown, db: LanceNs.Connection) {
    this.config = config;
    this.spec = spec;
    this.state = state;
    this.db = db;
    this.u = config.udtf!;
    this.policy = config.errorPolicy ?? resolveErrorPolicy(spec.errorPolicy, `errorPolicy of UDTF ${config.label}`);
    this.outputTypes = Object.entries(this.u.outputs).map(([k, t]) => [k, parseDataType(t)]);
  }

  static async create(config: WorkerConfig): Promise<UdtfRunner> {
    const { spec, state, db } = await prepareRunner(config, loadUdtf, `UDTF ${config.label} for view ${config.table}`, { table: config.table });
    return new UdtfRunner(config, spec, state, db);
  }

  shutdown(): void {
    this.abort.abort();
  }

  async run(task: TaskSpec, onBatch: (r: BatchReport) => void, shouldStop: () => boolean = () => false): Promise<void> {
    const part = task.partition!;
    if (task.gaps.length === 0 || shouldStop()) return;
    const source = await this.db.openTable(this.u.source, undefined, { version: task.version } as never);
    const stage = await (await connectDb(this.u.stageDir)).openTable(this.u.stageTable);
    const mine = `${PARTITION} = ${sqlString(part.key)}`;
    const errors: RowError[] = [];
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    let rows = 0;
    for (let attempt = 1; ; attempt++) {
      await stage.delete(mine);
      try {
        rows = await this.compute(task, source, stage, shouldStop);
        break;
      } catch (e) {
        await stage.delete(mine).catch(() => undefined);
        if (e instanceof BackfillError) throw e;
        const rule = matchRule(this.policy, e);
        if (rule?.action === "retry" && attempt < (rule.attempts ?? 3)) {
          await sleep(backoffMs(rule, attempt));
          continue;
        }
        const err = e as Error;
        if (!(rule?.action === "skip" || (rule?.action === "retry" && rule.then === "skip"))) {
          throw new UdfError("UDF_FAILED", `UDTF ${this.config.label} threw on partition ${part.key}${attempt > 1 ? ` after ${attempt} attempts` : ""} (view ${this.config.table}): ${err?.name ?? "Error"}: ${err?.message ?? String(e)}; error policy ${this.policy.label}`, { table: this.config.table, cause: e });
        }
        errors.push({ rowOffset: 0, rowAddress: part.key, name: err?.name ?? "Error", message: err?.message ?? String(e), stack: err?.stack ?? "", attempt, bisectDepth: 0 });
        rows = 0;
        break;
      }
    }
    failpoint("udtf.after-partition");
    const used = process.cpuUsage(cpu0);
    onBatch({ start: 0, end: 1, rowsComputed: rows, rowsSkipped: errors.length, errors, readMs: 0, udfMs: performance.now() - t0, udfCpuMs: (used.user + used.system) / 1000, checkpointMs: 0, partition: { key: part.key, rows } });
  }

  /** Runs the UDTF over the partition's rows and stages its output; returns the rows staged. */
  private async compute(task: TaskSpec, source: LanceNs.Table, stage: LanceNs.Table, shouldStop: () => boolean): Promise<number> {
    const part = task.partition!;
    const filter = [this.u.where, part.filter].filter((f): f is string => f !== null).map((f) => `(${f})`).join(" AND ");
    const blobs = await blobColumnsOf(source);
    const hasBlobs = this.spec.inputs.some((c) => blobs.has(c));
    let q = source.query().select([...this.spec.inputs]);
    if (hasBlobs) q = q.withRowId();
    if (filter !== "") q = q.where(filter);
    const query = q;
    const batches: AsyncIterable<ArrowNs.RecordBatch> = {
      async *[Symbol.asyncIterator]() {
        for await (const b of query) {
          if (shouldStop()) return;
          yield b as ArrowNs.RecordBatch;
        }
      },
    };
    // A blob input's values in the batches are LanceDB's blob descriptors; `ctx.blobs(batch, column)`
    // gives lazy handles for the batch's rows (read from the pinned version, never scanned into memory).
    const ctx = {
      state: this.state,
      fragmentId: task.fragmentId,
      signal: this.abort.signal,
      blobs: async (batch: ArrowNs.RecordBatch, column: string): Promise<(BlobHandle | null)[]> => {
        if (!blobs.has(column)) throw new TypeError(`ctx.blobs: ${column} is not a blob column of ${this.u.source}`);
        const ids = batch.getChild("_rowid");
        if (!ids) throw new TypeError("ctx.blobs needs a batch the UDTF received");
        return blobHandles(source, column, ids.toArray() as BigUint64Array);
      },
    };
    const where = { table: this.config.table };
    const bad = (what: string): UdfError => new UdfError("UDF_OUTPUT_TYPE", `UDTF ${this.config.label} produced a bad row for view ${this.config.table} (partition ${part.key}): ${what}; its outputs are ${JSON.stringify(this.u.outputs)}`, where);
    const buffer = new OutputRows(this.outputTypes);
    let staged = 0;
    const flush = async (): Promise<void> => {
      if (buffer.rows === 0) return;
      const n = buffer.rows;
      let outputs: Record<string, ArrowNs.Vector>;
      try {
        outputs = buffer.take((row, field, problem) => `field ${field}${row !== null ? ` of output row ${staged + row}` : ""}: ${problem}`);
      } catch (e) {
        if (!(e instanceof ValueTypeError)) throw e;
        throw bad(e.message);
      }
      await stage.add(new arrow.Table({ [PARTITION]: arrow.vectorFromArray(new Array<string>(n).fill(part.key), new arrow.Utf8()), ...outputs }) as never);
      staged += n;
    };
    const push = async (row: unknown): Promise<void> => {
      buffer.push(row, bad);
      if (buffer.full(this.u.maxRowsPerFragment)) await flush();
    };
    const fn = this.spec.fn as unknown as (b: AsyncIterable<ArrowNs.RecordBatch>, c: typeof ctx) => unknown;
    for await (const item of eachOutput(await fn(batches, ctx), "a UDTF must yield or return output objects, arrays of them, or Arrow tables", (x) => isArrowData(x) || Array.isArray(x))) {
      if (isArrowData(item)) {
        const names = item.schema.fields.map((f) => f.name);
        for (const [k] of this.outputTypes) if (!names.includes(k)) throw bad(`an Arrow ${item instanceof arrow.Table ? "table" : "record batch"} without column ${k}`);
        const values = this.outputTypes.map(([k]) => vectorToValues(item.getChild(k)! as ArrowNs.Vector));
        for (let r = 0; r < item.numRows; r++) await push(Object.fromEntries(this.outputTypes.map(([k], i) => [k, values[i]![r]])));
      } else if (Array.isArray(item)) {
        for (const row of item) await push(row);
      } else {
        await push(item);
      }
    }
    await flush();
    return staged;
  }
}

function isArrowData(x: unknown): x is ArrowNs.Table | ArrowNs.RecordBatch {
  // Duck-typed: a UDTF module may build its tables with its own copy of apache-arrow.
  return typeof x === "object" && x !== null && typeof (x as { getChild?: unknown }).getChild === "function" && typeof (x as { numRows?: unknown }).numRows === "number" && typeof (x as { schema?: unknown }).schema === "object";
}
