/**
 * Job handles and the controller behind them. The controller owns a job's record: it updates
 * metrics and events as the coordinator reports them, notifies progress readers, writes the record to
 * the jobs table at a bounded rate (and at every status change), heartbeats, and notices cancellation
 * requested by the handle or by another process.
 */
import { hostname } from "node:os";
import { CancelledError, deserializeError, serializeError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { FINAL_STATUSES, emptyMetrics, sampleHistory, type JobEvent, type JobMetrics, type JobRecord, type JobStatus } from "./record.ts";
import { isRemote } from "../storage/location.ts";
import { cancelRequested, clearCancel, requestCancel, type JobsTable } from "./store.ts";

const MAX_EVENTS = 200;
/** An event persists the job record at most this often (a jobs-table version each time). */
const MIN_PERSIST_MS = 1000;

export class JobController {
  readonly record: JobRecord;
  private readonly statusIntervalMs: number;
  private readonly log: Logger;
  private readonly cancel = new AbortController();
  private jobs: JobsTable | undefined;
  private dbDir: string | undefined;
  private version = 0;
  private waiters: (() => void)[] = [];
  private lastPersist = 0;
  private persisting: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  /** A persist an event asked for, within a second of the last one. */
  private soon: NodeJS.Timeout | undefined;
  private started = performance.now();
  readonly done: Promise<JobRecord>;
  private settle!: { resolve: (r: JobRecord) => void; reject: (e: unknown) => void };
  /** Listener for every change (the `onProgress` option). */
  onChange: ((r: JobRecord) => void) | undefined;

  constructor(init: { id: string; kind?: JobRecord["kind"]; table: string; column: string; options: Record<string, unknown>; statusIntervalMs: number; log: Logger }) {
    const now = new Date().toISOString();
    this.statusIntervalMs = init.statusIntervalMs;
    this.log = init.log;
    this.record = {
      id: init.id,
      kind: init.kind ?? "backfill",
      table: init.table,
      column: init.column,
      status: "pending",
      udfVersion: null,
      binding: null,
      options: init.options,
      host: hostname(),
      pid: process.pid,
      createdAt: now,
      startedAt: null,
      finishedAt: null,
      heartbeatAt: now,
      heartbeatIntervalMs: init.statusIntervalMs,
      error: null,
      plan: null,
      metrics: emptyMetrics(),
      events: [],
      diagnosis: null,
      failedFragments: [],
    };
    this.done = new Promise<JobRecord>((resolve, reject) => (this.settle = { resolve, reject }));
    this.done.catch(() => {}); // observed through wait()
  }

  /** Aborted when the job is asked to stop. */
  get signal(): AbortSignal {
    return this.cancel.signal;
  }

  get metrics(): JobMetrics {
    return this.record.metrics;
  }

  /** Starts writing the record to the jobs table and heartbeating. */
  attach(jobs: JobsTable, dbDir: string): void {
    this.jobs = jobs;
    this.dbDir = dbDir;
    this.started = performance.now();
    const tick = Math.min(250, this.statusIntervalMs);
    // Object storage: a request a second for the cancellation object, not four.
    const pollEvery = isRemote(dbDir) ? 4 : 1;
    let ticks = 0;
    let polling = false;
    this.timer = setInterval(() => {
      if (this.dbDir && !this.cancel.signal.aborted && !polling && ticks++ % pollEvery === 0) {
        polling = true;
        cancelRequested(this.dbDir, this.record.id).then(
          (yes) => {
            polling = false;
            if (yes && !this.cancel.signal.aborted) this.requestCancel("another process");
          },
          () => (polling = false),
        );
      }
      if (Date.now() - this.lastPersist >= this.statusIntervalMs) this.changed(true);
    }, tick);
    this.timer.unref();
  }

  event(type: JobEvent["type"], message: string): void {
    this.record.events.push({ at: new Date().toISOString(), type, message });
    if (this.record.events.length > MAX_EVENTS) this.record.events.splice(1, this.record.events.length - MAX_EVENTS);
    this.log.info(message, { jobId: this.record.id, event: type });
  }

  setStatus(s: JobStatus): void {
    this.record.status = s;
    if (s === "running") this.record.startedAt = new Date().toISOString();
    if (FINAL_STATUSES.has(s)) this.record.finishedAt = new Date().toISOString();
    this.changed(true, true);
  }

  /**
   * Call after changing the record: notifies readers at once and persists it when due — every
   * `statusIntervalMs`; with `force` (an event: a commit, a worker death) within a second, never more
   * than one jobs-table version a second; with `urgent` (a status change) now.
   */
  changed(force = false, urgent = false): void {
    const m = this.record.metrics;
    m.elapsedMs = performance.now() - this.started;
    m.rowsPerSec = m.elapsedMs > 0 ? Math.round((m.rowsComputed * 1000) / m.elapsedMs) : 0;
    this.version++;
    for (const w of this.waiters.splice(0)) w();
    this.onChange?.(this.record);
    if (!this.jobs) return;
    const since = Date.now() - this.lastPersist;
    if (force && !urgent && since < MIN_PERSIST_MS && since < this.statusIntervalMs) {
      this.soon ??= setTimeout(() => {
        this.soon = undefined;
        this.changed(true, true);
      }, Math.min(MIN_PERSIST_MS, this.statusIntervalMs) - since);
      this.soon.unref();
      return;
    }
    if (urgent || force || since >= this.statusIntervalMs) {
      clearTimeout(this.soon);
      this.soon = undefined;
      this.lastPersist = Date.now();
      this.record.heartbeatAt = new Date().toISOString();
      sampleHistory(this.record, this.lastPersist);
      const snapshot = structuredClone(this.record);
      const jobs = this.jobs;
      this.persisting = this.persisting.then(() =>
        jobs.upsert(snapshot).catch((e: unknown) => this.log.warn(`could not update the jobs table: ${(e as Error).message}`, { jobId: this.record.id })),
      );
    }
  }

  requestCancel(by: string): void {
    if (this.cancel.signal.aborted || FINAL_STATUSES.has(this.record.status)) return;
    this.event("cancel-requested", `cancellation requested by ${by}; in-flight batches finish and are checkpointed, nothing half-done is committed`);
    this.cancel.abort(new CancelledError(`job ${this.record.id} was cancelled`, { jobId: this.record.id }));
    this.changed(true);
  }

  /** Ends the job: final status, last write of the record, waiters released. */
  async finish(status: "finished" | "failed" | "cancelled", error?: unknown): Promise<void> {
    if (error !== undefined) this.record.error = serializeError(error);
    this.setStatus(status);
    if (this.timer) clearInterval(this.timer);
    await this.persisting;
    if (this.jobs) {
      await this.jobs.compact();
      if (this.dbDir) await clearCancel(this.dbDir, this.record.id).catch(() => {});
    }
    if (status === "finished") this.settle.resolve(structuredClone(this.record));
    else this.settle.reject(error ?? deserializeError(this.record.error ?? { name: "Error", message: status }));
  }

  snapshot(): JobRecord {
    return structuredClone(this.record);
  }

  /** Snapshots as they change (coalesced), ending with the final one. */
  async *snapshots(): AsyncGenerator<JobRecord> {
    let seen = -1;
    for (;;) {
      if (this.version !== seen) {
        seen = this.version;
        const s = this.snapshot();
        yield s;
        if (FINAL_STATUSES.has(s.status)) return;
      } else {
        await new Promise<void>((r) => this.waiters.push(r));
      }
    }
  }
}

/**
 * A running (or finished) backfill: what `backfillAsync` returns. Mirrors LanceDB's `Job`: `id`,
 * `status()`, `wait()`, `cancel()`, plus `progress()`.
 */
export class BackfillJob {
  readonly id: string;
  readonly #ctl: JobController;

  constructor(ctl: JobController) {
    this.id = ctl.record.id;
    this.#ctl = ctl;
  }

  /** `pending` → `running` → `finished` | `failed` | `cancelled`. */
  status(): JobStatus {
    return this.#ctl.record.status;
  }

  /** The current record (a copy). */
  record(): JobRecord {
    return this.#ctl.snapshot();
  }

  /** Progress snapshots as the job runs: monotone counters, ending with the final record. */
  progress(): AsyncIterable<JobRecord> {
    return { [Symbol.asyncIterator]: () => this.#ctl.snapshots() };
  }

  /** Resolves with the final record when the job finished; rejects with its error otherwise (CancelledError when cancelled). */
  wait(): Promise<JobRecord> {
    return this.#ctl.done;
  }

  /** Stops scheduling work; in-flight batches are checkpointed; complete fragments are committed; the job stays resumable. Resolves when the job has stopped. */
  async cancel(): Promise<JobRecord> {
    this.#ctl.requestCancel("the job handle");
    return this.#ctl.done.then(
      (r) => r,
      () => this.#ctl.snapshot(),
    );
  }
}

export { requestCancel };
