/**
 * The worker side of a chunk view's refresh: expands parents (source rows, by stable row id) with the
 * view's chunker and appends their children to the view. Runs in the same worker processes, through
 * the same executors, as a column's UDF.
 *
 * A task names its parents (ascending source row ids at the pinned source version). For each gap of
 * them it first deletes any children they already have in the view (a previous attempt's, cut short),
 * so a retried or re-run task never duplicates a child; then it reads the parents in pieces, calls the
 * chunker per parent (or per piece with `batch: true`), buffers the children and appends them every
 * `maxRowsPerFragment` rows, so memory does not grow with fan-out. A batch is reported only for
 * parents whose children are all in the view: the coordinator records those as expanded. A task that
 * fails removes the children it wrote (best effort; the next attempt's delete covers the rest).
 */
import { arrow } from "../arrow.ts";
import type { ArrowNs, LanceNs } from "../arrow.ts";
import { BackfillError, UdfError } from "../errors.ts";
import { failpoint } from "../failpoints.ts";
import { inFilters } from "../sql.ts";
import { blobColumnsOf, blobHandles, type BlobHandle } from "../udf/blob.ts";
import { loadChunker, type ChunkerSpec } from "../udf/chunker.ts";
import { backoffMs, matchRule, resolveErrorPolicy, type ErrorPolicy } from "../udf/policy.ts";
import { parseDataType } from "../udf/types.ts";
import { valuesToVector, ValueTypeError, vectorToValues } from "../udf/values.ts";
import { hashRows } from "../views/hash.ts";
import { eachOutput, OutputRows } from "./outputs.ts";
import { prepareRunner } from "./setup.ts";
import type { BatchReport, ChunkerTaskConfig, ExpandedParent, RowError, TaskSpec, WorkerConfig } from "./protocol.ts";

/** Parents read from the source at once. */
const PIECE = 1024;
const SOURCE_ROW_ID = "__source_row_id";
const CHILD_INDEX = "__child_index";
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class ChunkRunner {
  private readonly abort = new AbortController();
  private readonly pinned = new Map<number, Promise<LanceNs.Table>>();
  private readonly policy: ErrorPolicy;
  private readonly chunk: ChunkerTaskConfig;
  private readonly outputTypes: [string, ArrowNs.DataType][];

  private readonly config: WorkerConfig;
  private readonly spec: ChunkerSpec;
  private readonly state: unknown;
  private readonly db: LanceNs.Connection;

  private constructor(config: WorkerConfig, spec: ChunkerSpec, state: unknown, db: LanceNs.Connection) {
    this.config = config;
    this.spec = spec;
    this.state = state;
    this.db = db;
    this.chunk = config.chunker!;
    this.policy = config.errorPolicy ?? resolveErrorPolicy(spec.errorPolicy, `errorPolicy of chunker ${config.label}`);
    this.outputTypes = Object.entries(this.chunk.outputs).map(([k, t]) => [k, parseDataType(t)]);
  }

  /** Loads the bound chunker bundle, runs `setup()` once, opens the database. */
  static async create(config: WorkerConfig): Promise<ChunkRunner> {
    const { spec, state, db } = await prepareRunner(config, loadChunker, `chunker ${config.label} for view ${config.table}`, { table: config.table });
    return new ChunkRunner(config, spec, state, db);
  }

  shutdown(): void {
    this.abort.abort();
  }

  private readonly blobsAt = new Map<number, Promise<Set<string>>>();
  /** The source's blob v2 columns at `version`. */
  private blobColumns(version: number, source: LanceNs.Table): Promise<Set<string>> {
    let b = this.blobsAt.get(version);
    if (!b) {
      b = blobColumnsOf(source);
      this.blobsAt.set(version, b);
    }
    return b;
  }

  private source(version: number): Promise<LanceNs.Table> {
    let t = this.pinned.get(version);
    if (!t) {
      t = this.db.openTable(this.chunk.source, undefined, { version } as never);
      this.pinned.set(version, t);
    }
    return t;
  }

  /** Expands every gap of `task`'s parents, reporting each group of finished parents; stops between parents when `shouldStop()`. */
  async run(task: TaskSpec, onBatch: (r: BatchReport) => void, shouldStop: () => boolean = () => false): Promise<void> {
    const parents = task.parents ?? [];
    const view = await this.db.openTable(this.config.table);
    const viewSchema = await view.schema();
    const source = await this.source(task.version);
    for (const gap of task.gaps) {
      const ids = parents.slice(gap.start, gap.end);
      await deleteChildren(view, ids);
      try {
        await this.expand(task, gap.start, ids, source, view, viewSchema, onBatch, shouldStop);
      } catch (e) {
        await deleteChildren(view, ids).catch(() => undefined);
        throw e;
      }
      if (shouldStop()) return;
    }
  }

  private async expand(task: TaskSpec, first: number, ids: readonly number[], source: LanceNs.Table, view: LanceNs.Table, viewSchema: ArrowNs.Schema, onBatch: (r: BatchReport) => void, shouldStop: () => boolean): Promise<void> {
    const c = this.chunk;
    const columns = [...new Set([...c.select, ...c.hashColumns, ...this.spec.inputs])];
    const where = { table: this.config.table };
    const buffer = new ChildBuffer(viewSchema, c.select, this.outputTypes);
    // Parents finished since the last report (their children are buffered or written), and that report's counters.
    let done: ExpandedParent[] = [];
    let reportedTo = first;
    let finishedTo = first;
    let errors: RowError[] = [];
    let readMs = 0;
    let udfMs = 0;
    let cpu = 0;
    let flushMs = 0;
    let written = 0;
    /** Appends the buffer; reports the parents finished before it (only those: a parent in progress may have more children to come). */
    const flush = async (): Promise<void> => {
      const reportable = done;
      const upTo = finishedTo;
      if (buffer.rows > 0) {
        const t = performance.now();
        let table: ArrowNs.Table;
        try {
          table = buffer.take();
        } catch (e) {
          if (!(e instanceof ValueTypeError)) throw e;
          throw new UdfError("UDF_OUTPUT_TYPE", `chunker ${this.config.label} yielded a bad child for view ${this.config.table}: ${e.message}; its outputs are ${JSON.stringify(c.outputs)}`, where);
        }
        await view.add(table as never);
        written += table.numRows;
        flushMs += performance.now() - t;
        failpoint("chunk.after-flush");
      }
      if (upTo > reportedTo) {
        onBatch({ start: reportedTo, end: upTo, rowsComputed: written, rowsSkipped: errors.length, errors, readMs, udfMs, udfCpuMs: cpu, checkpointMs: flushMs, parents: reportable });
        reportedTo = upTo;
        done = done.slice(reportable.length);
        errors = [];
        readMs = udfMs = cpu = flushMs = written = 0;
      }
    };
    for (let p = 0; p < ids.length && !shouldStop(); p += PIECE) {
      const pieceIds = ids.slice(p, p + PIECE);
      const t0 = performance.now();
      const data = await source.takeRowIds(pieceIds).withRowId().select(columns).toArrow();
      readMs += performance.now() - t0;
      const got = data.getChild("_rowid")!.toArray() as BigUint64Array;
      const at = new Map<number, number>();
      for (let i = 0; i < got.length; i++) at.set(Number(got[i]!), i);
      const missing = pieceIds.find((id) => !at.has(id));
      if (missing !== undefined) {
        throw new BackfillError("INTERNAL", `parent source row ${missing} of view ${this.config.table} is not in source table ${c.source} at version ${task.version}; run the refresh again`, where);
      }
      const order = pieceIds.map((id) => at.get(id)!);
      const hashes = hashRows(c.hashColumns.map((col) => data.getChild(col)! as ArrowNs.Vector), order);
      const inputs = this.spec.inputs.map((col) => data.getChild(col)! as ArrowNs.Vector);
      // A blob input arrives as a lazy handle per parent (in piece order), never as its bytes.
      const blobs = await this.blobColumns(task.version, source);
      const handles = await Promise.all(this.spec.inputs.map((col) => (blobs.has(col) ? blobHandles(source, col, pieceIds.map((id) => BigInt(id))) : null)));
      const inherited = c.select.map((col) => data.getChild(col)! as ArrowNs.Vector);
      const timed = async <T>(f: () => Promise<T>): Promise<T> => {
        const cpu0 = process.cpuUsage();
        const t1 = performance.now();
        try {
          return await f();
        } finally {
          udfMs += performance.now() - t1;
          const used = process.cpuUsage(cpu0);
          cpu += (used.user + used.system) / 1000;
        }
      };
      // Batched: one call for the piece. Per parent: one call at a time, so at most one parent's
      // children are held besides the buffer.
      const batched = this.spec.batch === true ? await timed(() => this.callBatch(task, pieceIds, order, inputs, handles, errors, first + p)) : null;
      const values = batched === null ? inputs.map((v, j) => (handles[j] ? [] : vectorToValues(v))) : [];
      for (let k = 0; k < pieceIds.length; k++) {
        const id = pieceIds[k]!;
        const children = batched !== null ? batched[k]! : await timed(() => this.callOne(task, id, values.map((col, j) => (handles[j] ? handles[j][k] : col[order[k]!])), errors, first + p + k));
        for (let n = 0; n < children.length; n++) {
          buffer.push(id, n, children[n], inherited, order[k]!, (what) => new UdfError("UDF_OUTPUT_TYPE", `chunker ${this.config.label} yielded a bad child for view ${this.config.table} (parent source row ${id}, child ${n}): ${what}; its outputs are ${JSON.stringify(c.outputs)}`, where));
          // A full buffer is appended even in the middle of a parent's children (that parent is
          // reported once all of them are in): no append exceeds maxRowsPerFragment rows.
          if (buffer.full(c.maxRowsPerFragment)) await flush();
        }
        done.push({ id, hash: String(hashes[k]!), children: children.length });
        finishedTo = first + p + k + 1;
        if (buffer.full(c.maxRowsPerFragment)) await flush();
      }
    }
    await flush();
  }

  /** Runs `what` under the error policy: retried, or skipped (the parent gets no children, its error recorded), or a UDF_FAILED error. */
  private async underPolicy<T>(what: () => Promise<T>, parents: readonly number[], one: boolean, errors: RowError[], offset: number, onSkip: () => T): Promise<T> {
    for (let n = 1; ; n++) {
      try {
        return await what();
      } catch (e) {
        if (e instanceof BackfillError) throw e;
        const rule = matchRule(this.policy, e);
        if (rule?.action === "retry" && n < (rule.attempts ?? 3)) {
          await sleep(backoffMs(rule, n));
          continue;
        }
        const err = e as Error;
        if (!(rule?.action === "skip" || (rule?.action === "retry" && rule.then === "skip"))) {
          throw new UdfError("UDF_FAILED", `chunker ${this.config.label} threw${one ? ` on parent source row ${parents[0]}` : ""}${n > 1 ? ` after ${n} attempts` : ""} (view ${this.config.table}): ${err?.name ?? "Error"}: ${err?.message ?? String(e)}; error policy ${this.policy.label}`, { table: this.config.table, cause: e });
        }
        parents.forEach((id, i) => errors.push({ rowOffset: offset + i, rowAddress: String(id), name: err?.name ?? "Error", message: err?.message ?? String(e), stack: err?.stack ?? "", attempt: n, bisectDepth: 0 }));
        return onSkip();
      }
    }
  }

  private ctx(task: TaskSpec): { state: unknown; fragmentId: number; signal: AbortSignal } {
    return { state: this.state, fragmentId: task.fragmentId, signal: this.abort.signal };
  }

  /** One parent's children (the whole result: a generator runs here, under the error policy). */
  private callOne(task: TaskSpec, id: number, args: unknown[], errors: RowError[], offset: number): Promise<unknown[]> {
    const fn = this.spec.fn as unknown as (...a: unknown[]) => unknown;
    return this.underPolicy(() => collect(fn(...args, this.ctx(task))), [id], true, errors, offset, () => []);
  }

  /** A batched chunker's children for each parent of a piece. */
  private callBatch(task: TaskSpec, ids: readonly number[], order: readonly number[], inputs: ArrowNs.Vector[], handles: readonly ((BlobHandle | null)[] | null)[], errors: RowError[], offset: number): Promise<unknown[][]> {
    const fn = this.spec.fn as unknown as (...a: unknown[]) => unknown;
    const args = inputs.map((v, j) => handles[j] ?? pick(v, order));
    return this.underPolicy(
      async () => {
        const out = await fn(...args, this.ctx(task));
        if (!Array.isArray(out) || out.length !== ids.length) {
          throw new UdfError("UDF_OUTPUT_LENGTH", `batched chunker ${this.config.label} must return one array of children per parent (${ids.length}), got ${Array.isArray(out) ? `${out.length} entries` : typeof out} (view ${this.config.table})`, { table: this.config.table });
        }
        return Promise.all(out.map((x) => collect(x)));
      },
      ids,
      false,
      errors,
      offset,
      () => ids.map(() => []),
    );
  }
}

/** Deletes the children of parents `ids` from the view, in batches. */
async function deleteChildren(view: LanceNs.Table, ids: readonly number[]): Promise<void> {
  for (const f of inFilters(SOURCE_ROW_ID, ids)) await view.delete(f);
}

/** A chunker's result for one parent, as a list (calling it once: a generator runs here, so errors surface inside the policy). */
async function collect(x: unknown): Promise<unknown[]> {
  const v = await x;
  if (Array.isArray(v)) return v;
  const out: unknown[] = [];
  for await (const c of eachOutput(v, "a chunker must return an array, an iterable or an async iterable of output objects")) out.push(c);
  return out;
}

/** A vector's values at `rows`, as a vector (a batched chunker's view of a piece, in parent order). */
function pick(v: ArrowNs.Vector, rows: readonly number[]): ArrowNs.Vector {
  const sorted = rows.every((r, i) => i === 0 || r === rows[i - 1]! + 1);
  if (sorted && rows.length > 0) return v.slice(rows[0]!, rows[rows.length - 1]! + 1);
  return valuesToVector(rows.map((r) => v.get(r)), v.type) as ArrowNs.Vector;
}

/** Children waiting to be appended: parent id, index and inherited values, and the outputs ({@link OutputRows}). */
class ChildBuffer {
  private parentIds: bigint[] = [];
  private indices: number[] = [];
  private inherited: unknown[][];
  private readonly outputs: OutputRows;
  private readonly schema: ArrowNs.Schema;
  private readonly select: readonly string[];

  constructor(schema: ArrowNs.Schema, select: readonly string[], outputTypes: readonly [string, ArrowNs.DataType][]) {
    this.schema = schema;
    this.select = select;
    this.outputs = new OutputRows(outputTypes);
    this.inherited = select.map(() => []);
  }

  get rows(): number {
    return this.outputs.rows;
  }

  push(parent: number, index: number, child: unknown, inherited: readonly ArrowNs.Vector[], row: number, bad: (what: string) => Error): void {
    this.outputs.push(child, bad);
    this.parentIds.push(BigInt(parent));
    this.indices.push(index);
    this.select.forEach((_, i) => this.inherited[i]!.push(inherited[i]!.get(row)));
  }

  full(maxRows: number): boolean {
    return this.outputs.full(maxRows);
  }

  /** The buffered children as an Arrow table in the view's column order (UDF columns left out: NULL until backfilled); empties the buffer. */
  take(): ArrowNs.Table {
    const outputs = this.outputs.take((row, field, problem) => (row === null ? `field ${field}: ${problem}` : `parent source row ${this.parentIds[row]}, child ${this.indices[row]}, field ${field}: ${problem}`));
    const cols: Record<string, ArrowNs.Vector> = {};
    for (const f of this.schema.fields) {
      if (f.name === SOURCE_ROW_ID) cols[f.name] = arrow.makeVector(BigInt64Array.from(this.parentIds));
      else if (f.name === CHILD_INDEX) cols[f.name] = arrow.makeVector(Int32Array.from(this.indices));
      else if (this.select.includes(f.name)) cols[f.name] = valuesToVector(this.inherited[this.select.indexOf(f.name)]!, f.type) as ArrowNs.Vector;
      else if (f.name in outputs) cols[f.name] = outputs[f.name]!;
    }
    this.parentIds = [];
    this.indices = [];
    this.inherited = this.select.map(() => []);
    return new arrow.Table(cols);
  }
}
