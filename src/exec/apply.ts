/**
 * The worker side of a task: read a batch of input rows from the pinned table version, run the UDF
 * on the selected rows, validate the output, and checkpoint it. Runs inside a worker process, never
 * in the coordinator.
 */
import { performance } from "node:perf_hooks";
import { arrow } from "../arrow.ts";
import type { ArrowNs, LanceNs } from "../arrow.ts";
import { checkpointStoreAt, FileCheckpointStore, type BatchRange, type CheckpointStore } from "../checkpoint/store.ts";
import { FragmentFileWriter } from "../checkpoint/fragment-file.ts";
import { BackfillError, CheckpointError, UdfError, describeWhere, type ErrorContext } from "../errors.ts";
import { blobColumnsOf, blobHandles, type BlobHandle } from "../udf/blob.ts";
import { loadUdf } from "../udf/bundle.ts";
import { parseDataType, type DataType } from "../udf/types.ts";
import type { UdfContext, UdfSpec } from "../udf/udf.ts";
import { resultToVector, takeRows, valuesToVector, ValueTypeError, vectorToValues } from "../udf/values.ts";
import { prepareRunner } from "./setup.ts";
import type { BatchReport, RowError, TaskSpec, WorkerConfig } from "./protocol.ts";
import { backoffMs, matchRule, resolveErrorPolicy, type ErrorPolicy } from "../udf/policy.ts";

type Vec = ArrowNs.Vector;
/** One input column of a batch: an Arrow vector, or for a blob v2 column one lazy handle per row. */
type Input = Vec | (BlobHandle | null)[];
const SELECT_ALIAS = "__lancet_selected";
/** Adaptive checkpoint sizing aims at this much UDF time per batch (Geneva's target). */
const TARGET_BATCH_MS = 10_000;
/** With adaptive checkpoint sizes, a fragment file gets an append at least every this much UDF time… */
const FILE_FLUSH_MS = 1_000;
/** …or this many bytes of values. */
const FILE_FLUSH_BYTES = 16 * 2 ** 20;

function quoteIdent(name: string): string {
  return "`" + name.replace(/`/g, "``") + "`";
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return typeof v === "object" && v !== null && typeof (v as { then?: unknown }).then === "function";
}

export class TaskRunner {
  private readonly config: WorkerConfig;
  private readonly spec: UdfSpec;
  private readonly state: unknown;
  private readonly type: DataType;
  private readonly db: LanceNs.Connection;
  private readonly store: CheckpointStore;
  private readonly abort = new AbortController();
  private readonly pinned = new Map<number, Promise<LanceNs.Table>>();
  private readonly blobColumns = new Map<number, Promise<Set<string>>>();
  private readonly policy: ErrorPolicy;
  /** Whether a call in the current batch returned a promise. */
  /** UDF calls in flight in this process, over every batch (at most intraApplierConcurrency). */
  private active = 0;
  private readonly slotWaiters: (() => void)[] = [];
  /** The adaptive checkpoint size the last batch arrived at (the next task starts there). */
  private learnedSize = 0;

  private constructor(config: WorkerConfig, spec: UdfSpec, state: unknown, db: LanceNs.Connection) {
    this.config = config;
    this.spec = spec;
    this.state = state;
    this.type = parseDataType(config.dataType);
    this.db = db;
    this.store = checkpointStoreAt(config.checkpointRoot);
    this.policy = config.errorPolicy ?? resolveErrorPolicy(spec.errorPolicy, `errorPolicy of UDF ${config.label}`);
  }

  /** Loads the bound bundle, runs `setup()` once, opens the database. */
  static async create(config: WorkerConfig): Promise<TaskRunner> {
    const { spec, state, db } = await prepareRunner(config, loadUdf, `UDF ${config.label} for column ${config.column}`, { table: config.table, column: config.column });
    return new TaskRunner(config, spec, state, db);
  }

  shutdown(): void {
    this.abort.abort();
  }

  private releaseSlot(): void {
    this.active--;
    this.slotWaiters.shift()?.();
  }

  private table(version: number): Promise<LanceNs.Table> {
    let t = this.pinned.get(version);
    if (!t) {
      t = this.db.openTable(this.config.table, undefined, { version } as never);
      this.pinned.set(version, t);
    }
    return t;
  }

  /** Computes and checkpoints every gap of `task`, reporting each batch; stops between batches when `shouldStop()`. */
  async run(task: TaskSpec, onBatch: (r: BatchReport) => void, shouldStop: () => boolean = () => false): Promise<void> {
    if (!task.file) return this.runGaps(task, task.gaps, onBatch, shouldStop);
    // The task writes its fragment's column file: batches are appended in row order, from where the
    // file ends (a previous attempt may have appended rows its reports never announced).
    const where = { table: this.config.table, column: this.config.column, fragmentId: task.fragmentId };
    const gap = task.gaps[0];
    if (task.gaps.length !== 1 || gap!.end !== task.file.rows) {
      throw new BackfillError("INTERNAL", `a fragment-file task of ${describeWhere(where)} must have one gap ending at row ${task.file.rows} (got ${JSON.stringify(task.gaps)})`, where);
    }
    if (!(this.store instanceof FileCheckpointStore)) throw new BackfillError("INTERNAL", `fragment files need a local checkpoint folder (got ${this.config.checkpointRoot})`, where);
    const batchDir = this.store.batchDir(task.batchKey);
    const writer = await FragmentFileWriter.open(batchDir, this.config.column, this.type, task.file.formatVersion, where);
    try {
      if (writer.rows < gap!.start) {
        throw new CheckpointError(`the fragment file of ${describeWhere(where)} holds ${writer.rows} rows, fewer than the ${gap!.start} already reported; delete ${batchDir} and run the backfill again`, where);
      }
      if (writer.rows > gap!.start) onBatch({ start: gap!.start, end: Math.min(writer.rows, gap!.end), rowsComputed: 0, rowsSkipped: 0, errors: [], readMs: 0, udfMs: 0, udfCpuMs: 0, checkpointMs: 0 });
      const gaps = writer.rows < gap!.end ? [{ start: Math.max(writer.rows, gap!.start), end: gap!.end }] : [];
      await this.runGaps(task, gaps, onBatch, shouldStop, writer);
      if (writer.rows === task.file.rows) await writer.finish();
    } finally {
      writer.close();
    }
  }

  /**
   * Computes and checkpoints `gaps` of `task`, reporting each batch once it is durable. With `file`,
   * batches go to the fragment file in row order; with adaptive checkpoint sizes (the default) they
   * are gathered and appended together every {@link FILE_FLUSH_MS} of UDF time or
   * {@link FILE_FLUSH_BYTES} (one LanceDB commit each, and no compaction when one append holds the
   * fragment); with a fixed `checkpointSize`, each batch is appended on its own.
   */
  private async runGaps(task: TaskSpec, gaps: readonly BatchRange[], onBatch: (r: BatchReport) => void, shouldStop: () => boolean, file?: FragmentFileWriter): Promise<void> {
    const fixed = task.maxCheckpointSize <= task.checkpointSize;
    // Adaptive sizes start where this process's previous task of the job got to (one UDF, one job).
    let size = fixed ? task.checkpointSize : Math.min(task.maxCheckpointSize, Math.max(task.checkpointSize, this.learnedSize));
    let pending: { r: BatchReport; values: Vec }[] = [];
    let pendingMs = 0;
    let pendingBytes = 0;
    const flush = async (): Promise<void> => {
      if (pending.length === 0) return;
      const batches = pending;
      pending = [];
      pendingMs = pendingBytes = 0;
      const a0 = performance.now();
      const values = batches.length === 1 ? batches[0]!.values : batches[0]!.values.concat(...batches.slice(1).map((b) => b.values));
      await file!.append({ start: batches[0]!.r.start, end: batches.at(-1)!.r.end }, values, batches.reduce((n, b) => n + b.r.rowsSkipped, 0));
      const ms = performance.now() - a0;
      batches.forEach((b, i) => onBatch(i === 0 ? { ...b.r, checkpointMs: b.r.checkpointMs + ms } : b.r));
    };
    // A batch starts once the previous one has begun every row's call (async UDFs with more than one
    // call in flight: a sliding window over batches; otherwise once it is done). Each batch is
    // reported as soon as it is checkpointed, in order.
    let reported: Promise<void> = Promise.resolve();
    let failed = false;
    for (const gap of gaps) {
      for (let start = gap.start; start < gap.end && !failed; ) {
        if (shouldStop()) break;
        const end = Math.min(gap.end, start + size);
        let began!: () => void;
        const allStarted = new Promise<void>((r) => (began = r));
        const current = this.runBatch(task, { start, end }, began, file !== undefined);
        current.catch(() => {}); // observed through `reported`, in order (a batch after a failed one is never awaited)
        reported = reported.then(async () => {
          let b: Awaited<typeof current>;
          try {
            b = await current;
          } catch (e) {
            if (file) await flush().catch(() => {}); // what was computed before the failure is kept
            throw e;
          }
          const r = b.report;
          if (file) {
            pending.push({ r, values: b.values! });
            pendingMs += r.udfMs;
            pendingBytes += b.values!.data.reduce((n, d) => n + d.byteLength, 0);
            if (fixed || pendingMs >= FILE_FLUSH_MS || pendingBytes >= FILE_FLUSH_BYTES) await flush();
          } else onBatch(r);
          if (task.maxCheckpointSize > size) {
            const perRow = r.rowsComputed > 0 ? r.udfMs / r.rowsComputed : 0;
            const target = perRow > 0 ? Math.floor(TARGET_BATCH_MS / perRow) : size * 8;
            size = Math.max(task.checkpointSize, Math.min(task.maxCheckpointSize, size * 8, target));
            this.learnedSize = size;
          }
        });
        reported.catch(() => (failed = true)); // observed by the await below
        await Promise.race([allStarted, reported.then(() => undefined, () => undefined)]);
        start = end;
      }
    }
    await reported;
    if (file) await flush();
  }

  private ctx(task: TaskSpec, range: BatchRange): ErrorContext {
    return { table: this.config.table, column: this.config.column, fragmentId: task.fragmentId, rowOffset: range.start, rowCount: range.end - range.start };
  }

  /** Computes and checkpoints one batch; `started` is called once every row's call has begun (the next batch may start then). */
  private async runBatch(task: TaskSpec, range: BatchRange, started: () => void, toFile: boolean): Promise<{ report: BatchReport; values?: Vec }> {
    const t0 = performance.now();
    const table = await this.table(task.version);
    let blobCols = this.blobColumns.get(task.version);
    if (!blobCols) {
      blobCols = blobColumnsOf(table);
      this.blobColumns.set(task.version, blobCols);
    }
    // Blob v2 inputs are never scanned: only row ids are read, and each row gets a lazy handle.
    const blobSet = await blobCols;
    const blobInputs = new Set(this.config.inputs.filter((c) => blobSet.has(c)));
    const select: Record<string, string> = {};
    for (const c of this.config.inputs) if (!blobInputs.has(c)) select[c] = quoteIdent(c);
    select._rowaddr = "_rowaddr";
    if (blobInputs.size > 0) select._rowid = "_rowid";
    if (task.selection !== "") select[SELECT_ALIAS] = `(${task.selection})`;
    const data = await table
      .query()
      .select(select)
      .offset(task.globalOffset + range.start)
      .limit(range.end - range.start)
      .toArrow({ maxBatchLength: 65536 } as never);
    const n = data.numRows;
    const where = this.ctx(task, range);
    if (n !== range.end - range.start) {
      throw new BackfillError("INTERNAL", `read ${n} rows for ${describeWhere(where)} of version ${task.version}; expected ${range.end - range.start}`, where);
    }
    const addrArr = data.getChild("_rowaddr")!.toArray() as unknown;
    const addrs = addrArr instanceof BigUint64Array ? addrArr : BigUint64Array.from(addrArr as ArrayLike<bigint>);
    if (n > 0 && (Number(addrs[0]! >> 32n) !== task.fragmentId || Number(addrs[n - 1]! >> 32n) !== task.fragmentId)) {
      throw new BackfillError("INTERNAL", `rows read for ${describeWhere(where)} belong to fragment ${Number(addrs[0]! >> 32n)}, not ${task.fragmentId}; the table's scan order differs from its manifest`, where);
    }
    let selected: number[] | null = null;
    if (task.selection !== "") {
      const sel = data.getChild(SELECT_ALIAS)!;
      selected = [];
      for (let i = 0; i < n; i++) if (sel.get(i) === true) selected.push(i);
      if (selected.length === n) selected = null;
    }
    let rowIds: BigUint64Array | undefined;
    if (blobInputs.size > 0) {
      const all = data.getChild("_rowid")!.toArray() as unknown;
      const ids = all instanceof BigUint64Array ? all : BigUint64Array.from(all as ArrayLike<bigint>);
      rowIds = selected === null ? ids : BigUint64Array.from(selected, (i) => ids[i]!);
    }
    const inputs: Input[] = [];
    for (const c of this.config.inputs) {
      if (!blobInputs.has(c)) {
        inputs.push(data.getChild(c)!);
        continue;
      }
      const handles = await blobHandles(table, c, rowIds!);
      if (selected === null) inputs.push(handles);
      else {
        const sparse = new Array<BlobHandle | null>(n).fill(null);
        for (let k = 0; k < selected.length; k++) sparse[selected[k]!] = handles[k]!;
        inputs.push(sparse);
      }
    }
    const t1 = performance.now();
    const cpu0 = process.cpuUsage();
    const rows = selected ?? null;
    const count = rows === null ? n : rows.length;
    const errors: RowError[] = [];
    const flags = { sawPromise: false };
    const out = count === 0 ? valuesToVector([], this.type) : await this.apply(task, range, inputs, rows, n, addrs, errors, flags, started);
    const t2 = performance.now();
    const cpu = process.cpuUsage(cpu0);
    if (toFile) {
      // A fragment file takes the values alone: row i of the batch is the fragment's row start + i.
      const at = (i: number): number => Number(addrs[i]! & 0xffffffffn);
      if (rows !== null || out.length !== n || (n > 0 && (at(0) !== range.start || at(n - 1) !== range.end - 1))) {
        throw new BackfillError("INTERNAL", `rows read for ${describeWhere(where)} are not the fragment's rows ${range.start}-${range.end - 1} in order; a fragment file needs every row of a fragment without deletions`, where);
      }
      return { report: { start: range.start, end: range.end, rowsComputed: count, rowsSkipped: errors.length, errors, readMs: t1 - t0, udfMs: t2 - t1, udfCpuMs: (cpu.user + cpu.system) / 1000, checkpointMs: 0, ...(count > 0 ? { udfAsync: flags.sawPromise } : {}) }, values: out };
    }
    let outAddrs = addrs;
    if (rows !== null) {
      outAddrs = new BigUint64Array(rows.length);
      for (let i = 0; i < rows.length; i++) outAddrs[i] = addrs[rows[i]!]!;
    }
    const columns: Record<string, Vec> = { _rowaddr: arrow.makeVector(outAddrs) as Vec, value: out };
    if (errors.length > 0) {
      // Which rows the error policy skipped (only written when some were): a re-run retries them.
      const skipped = new Set(errors.map((e) => e.rowOffset - range.start));
      const skippedFlags = new Array<boolean>(outAddrs.length);
      for (let k = 0; k < outAddrs.length; k++) skippedFlags[k] = skipped.has(rows === null ? k : rows[k]!);
      columns._skipped = arrow.vectorFromArray(skippedFlags, new arrow.Bool()) as Vec;
    }
    const batch = new arrow.Table(columns);
    await this.store.putBatch(task.batchKey, range, arrow.tableToIPC(batch, "file"));
    const t3 = performance.now();
    return { report: { start: range.start, end: range.end, rowsComputed: count, rowsSkipped: errors.length, errors, readMs: t1 - t0, udfMs: t2 - t1, udfCpuMs: (cpu.user + cpu.system) / 1000, checkpointMs: t3 - t2, ...(count > 0 ? { udfAsync: flags.sawPromise } : {}) } };
  }

  private async apply(task: TaskSpec, range: BatchRange, inputs: Input[], rows: number[] | null, n: number, addrs: BigUint64Array, errors: RowError[], flags: { sawPromise: boolean }, started: () => void): Promise<Vec> {
    const where = this.ctx(task, range);
    const ctx: UdfContext = { state: this.state, fragmentId: task.fragmentId, signal: this.abort.signal };
    const fn = this.spec.fn as unknown as (...args: unknown[]) => unknown;
    const policy = this.policy;
    const timeoutMs = this.spec.timeoutMs;
    const count = rows === null ? n : rows.length;
    const fail = (e: unknown, rowIndex: number | null, attempt: number): never => {
      if (e instanceof BackfillError) throw e;
      const err = e as Error;
      const row = rowIndex === null ? "" : ` on row ${range.start + rowIndex}`;
      const tries = attempt > 1 ? ` after ${attempt} attempts` : "";
      throw new UdfError("UDF_FAILED", `UDF ${this.config.label} threw${row}${tries} (${describeWhere(where)}): ${err?.name ?? "Error"}: ${err?.message ?? String(e)}; error policy ${policy.label}`, { ...where, cause: e });
    };
    const record = (e: unknown, i: number, attempt: number, depth: number): void => {
      const err = e as Error;
      errors.push({
        rowOffset: range.start + i,
        rowAddress: String(addrs[i]),
        name: typeof err?.name === "string" ? err.name : "Error",
        message: typeof err?.message === "string" ? err.message : String(e),
        stack: typeof err?.stack === "string" ? err.stack : "",
        attempt,
        bisectDepth: depth,
      });
    };
    const typeError = (e: unknown, batch: boolean): never => {
      if (!(e instanceof ValueTypeError)) throw e;
      const isLength = batch && /values for \d+ rows/.test(e.message);
      const rowText = e.row >= 0 ? ` for row ${range.start + (rows === null ? e.row : rows[e.row]!)}` : "";
      throw new UdfError(
        isLength ? "UDF_OUTPUT_LENGTH" : "UDF_OUTPUT_TYPE",
        `UDF ${this.config.label} returned a bad value${rowText} (${describeWhere(where)}): ${e.message}; column ${this.config.column} is ${this.config.dataType}`,
        where,
      );
    };
    const timed = (p: PromiseLike<unknown>, i: number | null): Promise<unknown> => {
      if (timeoutMs === undefined) return Promise.resolve(p);
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          const e = new Error(`UDF call${i === null ? "" : ` for row ${range.start + i}`} did not finish within timeoutMs ${timeoutMs}`);
          e.name = "TimeoutError";
          reject(e);
        }, timeoutMs);
      });
      return Promise.race([Promise.resolve(p), timeout]).finally(() => clearTimeout(timer));
    };

    if (this.spec.batch === true) {
      let all: number[] | undefined = rows ?? undefined;
      // Calls the UDF on `idx` (row indices of this batch); on errors follows the policy: retry the
      // whole call, then bisect down to the rows that fail on their own, which are skipped.
      // `idx` undefined: every row of the batch, in order (no index list is built unless bisecting).
      const callBatch = async (idx: number[] | undefined, depth: number): Promise<Vec> => {
        const args = idx === undefined ? inputs : inputs.map((v) => (Array.isArray(v) ? idx.map((i) => v[i]!) : takeRows(v, idx)));
        const len = idx === undefined ? n : idx.length;
        for (let attempt = 1; ; attempt++) {
          let result: unknown;
          try {
            result = fn(...args, ctx);
            if (isThenable(result)) {
              flags.sawPromise = true;
              result = await timed(result, null);
            }
          } catch (e) {
            const rule = matchRule(policy, e);
            if (!rule || rule.action === "fail") fail(e, idx?.length === 1 ? idx[0]! : null, attempt);
            if (rule!.action === "retry" && depth === 0 && attempt < (rule!.attempts ?? 3)) {
              await sleep(backoffMs(rule!, attempt));
              continue;
            }
            if (rule!.action === "retry" && depth === 0 && (rule!.then ?? "fail") === "fail") fail(e, idx?.length === 1 ? idx[0]! : null, attempt);
            const list = idx ?? Array.from({ length: n }, (_, i) => i);
            if (list.length === 1) {
              record(e, list[0]!, attempt, depth);
              return valuesToVector([null], this.type);
            }
            const mid = list.length >> 1;
            const left = await callBatch(list.slice(0, mid), depth + 1);
            const right = await callBatch(list.slice(mid), depth + 1);
            return left.concat(right);
          }
          try {
            return resultToVector(result, len, this.type);
          } catch (e) {
            return typeError(e, true);
          }
        }
      };
      return callBatch(all, 0);
    }

    const columns = inputs.map((v) => (Array.isArray(v) ? v : vectorToValues(v)));
    const results = new Array<unknown>(count);
    const limit = this.config.intraApplierConcurrency;
    const inflight = new Set<Promise<void>>();
    let firstError: { e: unknown } | null = null;
    // Handles a row whose first call threw or returned a promise: timeout, retries, skip.
    const slowRow = async (j: number, i: number, args: unknown[], first: { error: unknown } | { value: PromiseLike<unknown> }): Promise<void> => {
      for (let attempt = 1; ; attempt++) {
        try {
          if (attempt === 1 && "value" in first) results[j] = await timed(first.value, i);
          else if (attempt === 1) throw (first as { error: unknown }).error;
          else {
            const r = fn(...args, ctx);
            results[j] = isThenable(r) ? await timed(r, i) : r;
          }
          return;
        } catch (e) {
          const rule = matchRule(policy, e);
          if (!rule || rule.action === "fail") fail(e, i, attempt);
          if (rule!.action === "retry" && attempt < (rule!.attempts ?? 3)) {
            await sleep(backoffMs(rule!, attempt));
            continue;
          }
          if (rule!.action === "retry" && (rule!.then ?? "fail") === "fail") fail(e, i, attempt);
          record(e, i, attempt, 0);
          results[j] = null;
          return;
        }
      }
    };
    for (let j = 0; j < count && firstError === null; j++) {
      const i = rows === null ? j : rows[j]!;
      const args = columns.map((c) => c[i]);
      let first: { error: unknown } | { value: PromiseLike<unknown> } | undefined;
      try {
        const r = fn(...args, ctx);
        if (isThenable(r)) {
          flags.sawPromise = true;
          first = { value: r };
        }
        else results[j] = r;
      } catch (e) {
        first = { error: e };
      }
      if (first === undefined) continue;
      const p = slowRow(j, i, args, first).catch((e: unknown) => {
        firstError ??= { e };
      });
      const tracked: Promise<void> = p.finally(() => inflight.delete(tracked));
      inflight.add(tracked);
      // The window is the process's, not the batch's: calls of the previous batch still in flight
      // count, and this batch's tail overlaps the next batch's head (no drain at each checkpoint).
      this.active++;
      void tracked.finally(() => this.releaseSlot());
      while (this.active >= limit && firstError === null) await new Promise<void>((r) => this.slotWaiters.push(r));
    }
    // With more than one call in flight the next batch may start now; a kill then loses at most
    // this batch's tail and the next one's head (two batches), never checkpointed work.
    if (limit > 1 && firstError === null) started();
    await Promise.all(inflight);
    if (firstError !== null) throw (firstError as { e: unknown }).e;
    try {
      return valuesToVector(results, this.type);
    } catch (e) {
      return typeError(e, false);
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}


