/**
 * The distributed executor: the coordinator's side of a queue. Each task becomes a BullMQ job with a
 * deterministic id on the queue of the UDF's resource class; `lancet worker`s run it and stream its
 * batch reports back as progress events; the return value repeats them all, so reports missed while
 * Redis was away are recovered. A sweep re-enqueues tasks Redis lost (a restart without persistence)
 * and settles tasks whose events were missed. Cancelling removes waiting tasks and asks running
 * ones to stop after their current batch.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { Queue, QueueEvents, type Job } from "bullmq";
import { Redis } from "ioredis";
import type { BatchRange } from "../../checkpoint/store.ts";
import { BackfillError, CancelledError, deserializeError, type ErrorContext, type SerializedError } from "../../errors.ts";
import { gapsOf } from "../../plan/plan.ts";
import type { BatchReport, Executor, TaskSpec, WorkerConfig } from "../protocol.ts";
import { cancelKey, listWorkers, type WorkerInfo } from "./registry.ts";
import {
  checkQueueBase,
  classOf,
  connectionFor,
  DEFAULT_QUEUE,
  ERROR_PREFIX,
  formatResources,
  queueName,
  redactRedisUrl,
  redisFailure,
  satisfies,
  settleWithin,
  taskJobId,
  type PoolSettings,
  type QueueEventType,
  type Resources,
  type TaskJobData,
  type TaskJobResult,
} from "./queue.ts";

export interface QueueExecutorOptions {
  readonly redis: string;
  /** Base queue name. @default "lancet" */
  readonly queue?: string;
  /** How long to wait for a live worker that can run the UDF before failing. @default 600000 (10 min) */
  readonly admissionTimeoutMs?: number;
  /** How often unsettled tasks are checked against the queue. @default 3000 */
  readonly sweepIntervalMs?: number;
  /** How long Redis may be unreachable mid-job before the job fails with QUEUE_UNAVAILABLE. @default 300000 */
  readonly redisOutageMs?: number;
}

export interface QueueExecutorInit extends QueueExecutorOptions {
  /** The Lancet job id (cancel scope). */
  readonly jobId: string;
  readonly config: WorkerConfig;
  readonly pool: PoolSettings;
  readonly needs: Resources;
  /** A dead coordinator's job on this column: its tasks still on the queue are told to stop. */
  readonly supersedes?: string;
  /** Notable things (a task re-enqueued, no worker yet), for the job's events. */
  readonly onEvent?: (kind: QueueEventType, message: string) => void;
}

interface Pending {
  readonly id: string;
  readonly data: TaskJobData;
  /** Row ranges already reported to the coordinator. */
  readonly seen: BatchRange[];
  readonly onBatch: (r: BatchReport) => void;
  readonly resolve: () => void;
  readonly reject: (e: unknown) => void;
  lastHeard: number;
}

function parseFailure(reason: string | undefined, d: TaskJobData): BackfillError {
  if (reason?.startsWith(ERROR_PREFIX)) {
    try {
      return deserializeError(JSON.parse(reason.slice(ERROR_PREFIX.length)) as SerializedError);
    } catch {
      // fall through
    }
  }
  // BullMQ's own failures, e.g. a task that stalled more often than maxStalledCount (its workers kept dying).
  const where = { table: d.config.table, column: d.config.column, fragmentId: d.task.fragmentId, jobId: d.jobId, retryable: true };
  return /stalled/i.test(reason ?? "")
    ? new BackfillError("WORKER_CRASHED", `the workers running fragment ${d.task.fragmentId} rows ${d.task.gaps[0]?.start ?? 0}-${(d.task.gaps.at(-1)?.end ?? 1) - 1} kept vanishing (${reason})`, where)
    : new BackfillError("WORKER_CRASHED", `task for fragment ${d.task.fragmentId} failed on the queue: ${reason ?? "unknown reason"}`, where);
}

/**
 * Runs `fn` on a one-shot connection: one attempt, no retries. Redis must answer now, or this throws
 * QUEUE_UNAVAILABLE naming the URL, its password masked (the coordinator's start, `lancet workers`).
 */
export async function withRedis<T>(url: string, where: ErrorContext, fn: (client: Redis) => Promise<T>): Promise<T> {
  const client = new Redis({ ...(connectionFor(url) as object), lazyConnect: true, connectTimeout: 5000, maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: false });
  let last: Error | undefined;
  client.on("error", (e: Error) => (last = e));
  try {
    try {
      await client.connect();
      await client.ping(); // a missing password shows here (NOAUTH), not at connect
    } catch (e) {
      throw redisFailure(url, last ?? e, where);
    }
    return await fn(client);
  } finally {
    client.disconnect();
  }
}

/** Live workers on the queue for `needs`' resource class, and those of them that can run it. */
async function workersFor(redis: Redis, queue: string, needs: Resources): Promise<{ onQueue: WorkerInfo[]; capable: WorkerInfo[] }> {
  const onQueue = (await listWorkers(redis, queue)).filter((w) => w.resourceClass === classOf(needs));
  return { onQueue, capable: onQueue.filter((w) => satisfies(w.resources, needs)) };
}

/**
 * Stops the tasks of Lancet job `jobId` (a dead coordinator's): workers skip its waiting tasks and stop
 * its running ones after their current batch, which this waits for (at most `waitMs`), so that what
 * they checkpoint is on disk before the caller plans.
 */
export async function stopQueuedJob(url: string, queue: string | undefined, needs: Resources, jobId: string, where: ErrorContext = {}, waitMs = 60_000): Promise<void> {
  const base = queue ?? DEFAULT_QUEUE;
  await withRedis(url, where, async (c) => {
    await c.set(cancelKey(base, jobId), "1", "EX", 7 * 24 * 3600);
    const q = new Queue<TaskJobData, TaskJobResult>(queueName(base, classOf(needs)), { connection: connectionFor(url) });
    q.on("error", () => {});
    try {
      const deadline = Date.now() + waitMs;
      while (Date.now() < deadline && (await q.getActive()).some((j) => j.data?.jobId === jobId)) await sleep(200);
    } finally {
      await settleWithin(q.close(), 2000);
    }
  });
}

/** Total task slots of the live workers that can run `needs` (QUEUE_UNAVAILABLE when Redis does not answer). */
export async function liveSlots(url: string, queue: string | undefined, needs: Resources, where: ErrorContext = {}): Promise<number> {
  return withRedis(url, where, async (client) => (await workersFor(client, queue ?? DEFAULT_QUEUE, needs)).capable.reduce((s, w) => s + w.concurrency, 0));
}

export class QueueExecutor implements Executor {
  private readonly init: QueueExecutorInit;
  private readonly queue: Queue<TaskJobData, TaskJobResult>;
  private readonly events: QueueEvents;
  private readonly redis: Redis;
  private readonly pending = new Map<string, Pending>();
  private readonly base: string;
  readonly queueName: string;
  private sweepTimer: NodeJS.Timeout | undefined;
  private admission: BackfillError | undefined;
  /** Whether the start-up admission wait is over (later waits are announced again). */
  private admitted = false;
  /** Since when no live worker could serve this job's tasks. */
  private noWorkerSince: number | undefined;
  /** The coordinator asked this job's tasks to stop. */
  private aborted = false;
  private sweeping = false;
  private outageSince: number | undefined;
  private closed: Promise<void> | undefined;
  private readonly startedAt = Date.now();

  private constructor(init: QueueExecutorInit) {
    this.init = init;
    this.base = checkQueueBase(init.queue ?? DEFAULT_QUEUE, "queue");
    this.queueName = queueName(this.base, classOf(init.needs));
    const connection = connectionFor(init.redis);
    this.redis = new Redis({ ...(connection as object) });
    this.redis.on("error", () => {});
    this.queue = new Queue<TaskJobData, TaskJobResult>(this.queueName, { connection });
    this.queue.on("error", () => {});
    this.events = new QueueEvents(this.queueName, { connection });
    this.events.on("error", () => {});
    this.events.on("progress", ({ jobId, data }) => {
      const p = this.pending.get(jobId);
      if (p && typeof data === "object" && data !== null) this.report(p, data as unknown as BatchReport);
    });
    this.events.on("completed", ({ jobId, returnvalue }) => {
      const p = this.pending.get(jobId);
      if (p) this.settle(p, returnvalue as unknown as TaskJobResult);
    });
    this.events.on("failed", ({ jobId, failedReason }) => {
      const p = this.pending.get(jobId);
      if (p) this.settle(p, undefined, failedReason);
    });
    this.events.on("stalled", ({ jobId }) => {
      const p = this.pending.get(jobId);
      if (p) init.onEvent?.("task-stalled", `task ${jobId} (fragment ${p.data.task.fragmentId}) lost its worker; the queue runs it again elsewhere`);
    });
  }

  /** Connects (a clear error when Redis cannot be reached) and starts the admission check. */
  static async create(init: QueueExecutorInit): Promise<QueueExecutor> {
    await withRedis(init.redis, { table: init.config.table, column: init.config.column, jobId: init.jobId }, (c) => c.ping());
    const ex = new QueueExecutor(init);
    try {
      await ex.events.waitUntilReady();
      if (init.supersedes) await ex.requestCancel(init.supersedes);
      await ex.checkAdmission();
    } catch (e) {
      await ex.close();
      throw e;
    }
    ex.sweepTimer = setInterval(() => void ex.sweep(), init.sweepIntervalMs ?? 3000);
    return ex;
  }

  /**
   * Geneva's admission check: some live worker must be able to run the UDF. Live workers on the queue
   * that all lack what it needs fail the job at once; no live worker at all is waited for (an
   * autoscaler starts workers when tasks wait) up to admissionTimeoutMs.
   */
  private async checkAdmission(): Promise<void> {
    const { onQueue: workers, capable } = await workersFor(this.redis, this.base, this.init.needs);
    const { config, needs } = this.init;
    if (capable.length > 0) {
      this.admitted = true;
      return;
    }
    this.noWorkerSince = Date.now();
    const where = { table: config.table, column: config.column, jobId: this.init.jobId };
    if (workers.length > 0) {
      throw new BackfillError(
        "NO_WORKER",
        `no live worker on queue ${this.queueName} can run the UDF of column ${config.column} (table ${config.table}): it needs ${formatResources(needs)}, the workers offer ${workers.map((w) => formatResources(w.resources)).join("; ")}. Start a worker with enough resources (lancet worker --resources …)`,
        where,
      );
    }
    const limit = this.init.admissionTimeoutMs ?? 600_000;
    this.init.onEvent?.("waiting-for-workers", `no live worker on queue ${this.queueName} yet (the UDF needs ${formatResources(needs)}); waiting up to ${Math.round(limit / 1000)} s for one (lancet worker --redis … --queue ${this.base}${needs.gpu ? ` --resources gpu=${needs.gpu}` : ""})`);
  }

  private async sweep(): Promise<void> {
    if (this.closed) return;
    // Redis away: wait for it (clients reconnect on their own), up to redisOutageMs.
    if (this.redis.status !== "ready") {
      this.outageSince ??= Date.now();
      const limit = this.init.redisOutageMs ?? 300_000;
      if (Date.now() - this.outageSince > limit) {
        const c = this.init.config;
        this.admission = new BackfillError("QUEUE_UNAVAILABLE", `lost Redis at ${redactRedisUrl(this.init.redis)} for more than ${(limit / 1000).toFixed(limit % 1000 === 0 ? 0 : 1)} s during the backfill of column ${c.column} (table ${c.table}); completed fragments are committed and checkpoints kept: run the backfill again once Redis is back`, { table: c.table, column: c.column, jobId: this.init.jobId, retryable: true });
        for (const p of [...this.pending.values()]) {
          this.pending.delete(p.id);
          p.reject(this.admission);
        }
      }
      return;
    }
    this.outageSince = undefined;
    if (this.sweeping) return; // the last sweep still waits for Redis
    this.sweeping = true;
    try {
      // Some live worker must be able to serve the tasks: at the start (admission) and all along (all
      // workers may die later). None for admissionTimeoutMs fails the job instead of waiting silently.
      if (this.admission === undefined && this.pending.size > 0) {
        if ((await workersFor(this.redis, this.base, this.init.needs)).capable.length > 0) this.noWorkerSince = undefined;
        else {
          const limit = this.init.admissionTimeoutMs ?? 600_000;
          if (this.noWorkerSince === undefined) {
            this.noWorkerSince = Date.now();
            if (this.admitted) this.init.onEvent?.("waiting-for-workers", `no live worker on queue ${this.queueName} can run the UDF any more (it needs ${formatResources(this.init.needs)}); waiting up to ${Math.round(limit / 1000)} s for one`);
          }
          if (Date.now() - this.noWorkerSince > limit) {
            const c = this.init.config;
            this.admission = new BackfillError(
              "NO_WORKER",
              `no live worker served queue ${this.queueName} for ${Math.round(limit / 1000)} s (table ${c.table}, column ${c.column}, UDF needs ${formatResources(this.init.needs)}); start one with lancet worker --redis ${redactRedisUrl(this.init.redis)} --queue ${this.base}${this.init.needs.gpu ? ` --resources gpu=${this.init.needs.gpu}` : ""}, or raise admissionTimeoutMs`,
              { table: c.table, column: c.column, jobId: this.init.jobId },
            );
            for (const p of [...this.pending.values()]) {
              await this.removeWaiting(p.id);
              this.pending.delete(p.id);
              p.reject(this.admission);
            }
            return;
          }
        }
        this.admitted = true;
      }
      const now = Date.now();
      const quiet = [...this.pending.values()].filter((p) => now - p.lastHeard >= (this.init.sweepIntervalMs ?? 3000));
      for (const p of quiet) {
        if (!this.pending.has(p.id)) continue;
        const job = await this.queue.getJob(p.id);
        if (!job && this.aborted) {
          // Cancelled, and gone from the queue (Redis restarted): nothing is left to stop.
          this.pending.delete(p.id);
          p.resolve();
          continue;
        }
        if (!job) {
          // Lost from the queue (Redis restarted without persistence): enqueue it again.
          this.init.onEvent?.("task-requeued", `task ${p.id} (fragment ${p.data.task.fragmentId}) was no longer in the queue; enqueued it again`);
          await this.add(p);
          continue;
        }
        const state = await job.getState();
        if (state === "completed") this.settle(p, job.returnvalue);
        else if (state === "failed") this.settle(p, undefined, job.failedReason);
        else {
          if (job.progress && typeof job.progress === "object") this.report(p, job.progress as unknown as BatchReport);
          p.lastHeard = now;
        }
      }
    } catch {
      // Redis unreachable for now: the next sweep tries again.
    } finally {
      this.sweeping = false;
    }
  }

  /**
   * Delivers a batch report once per row: a task that ran twice (its first worker lost its lock but
   * went on, or Redis lost the job) may report ranges cut differently; only rows not yet reported are
   * passed on (row counts and errors clipped to them).
   */
  private report(p: Pending, r: BatchReport): void {
    p.lastHeard = Date.now();
    for (const g of gapsOf(r.start, r.end, p.seen)) {
      const whole = g.start === r.start && g.end === r.end;
      const share = (g.end - g.start) / Math.max(1, r.end - r.start);
      const errors = whole ? r.errors : r.errors.filter((e) => e.rowOffset >= g.start && e.rowOffset < g.end);
      p.onBatch(
        whole
          ? r
          : {
              ...r,
              start: g.start,
              end: g.end,
              rowsComputed: Math.round(r.rowsComputed * share),
              // Exact where the report carries a record per skipped row (a batch reused from checkpoints carries none).
              rowsSkipped: r.errors.length === r.rowsSkipped ? errors.length : Math.round(r.rowsSkipped * share),
              errors,
              readMs: r.readMs * share,
              udfMs: r.udfMs * share,
              udfCpuMs: r.udfCpuMs * share,
              checkpointMs: r.checkpointMs * share,
            },
      );
      p.seen.push(g);
    }
  }

  private settle(p: Pending, result: TaskJobResult | undefined, failedReason?: string): void {
    if (!this.pending.has(p.id)) return;
    this.pending.delete(p.id);
    if (result) {
      for (const r of result.reports ?? []) this.report(p, r);
      if (result.stopped && !this.aborted && result.jobId === this.init.jobId) {
        // Our own task stopped by someone else's cancel: another backfill of this column took this job
        // over. (A dead job's task this one attached to by id stops too; then the caller runs what is left.)
        const c = this.init.config;
        p.reject(new CancelledError(`job ${this.init.jobId} was taken over by another backfill of column ${c.column} (table ${c.table}), which stopped its tasks; see lancet jobs`, { table: c.table, column: c.column, jobId: this.init.jobId }));
        return;
      }
      p.resolve();
    } else {
      p.reject(parseFailure(failedReason, p.data));
    }
  }

  private async add(p: Pending): Promise<void> {
    const opts = { jobId: p.id, attempts: 1, removeOnComplete: { age: 24 * 3600 }, removeOnFail: { age: 7 * 24 * 3600 } };
    await this.queue.add("task", p.data, opts);
    // A finished job with this id that another run enqueued, or that finished before this run started,
    // is not this run's result (its checkpoints may be committed and gone, or it was stopped): run the
    // task again. One this run enqueued that finished since is its own result, its event on its way.
    const stored: Job<TaskJobData, TaskJobResult> | undefined = await this.queue.getJob(p.id);
    if (stored?.finishedOn !== undefined && (stored.finishedOn < this.startedAt || stored.data?.jobId !== this.init.jobId) && this.pending.has(p.id)) {
      await stored.remove();
      await this.queue.add("task", p.data, opts);
    }
  }

  /** Asks every worker to stop the tasks of Lancet job `jobId` after their current batch (and to skip its waiting ones). */
  private async requestCancel(jobId: string): Promise<void> {
    await this.redis.set(cancelKey(this.base, jobId), "1", "EX", 7 * 24 * 3600);
  }

  private async removeWaiting(id: string): Promise<boolean> {
    const job = await this.queue.getJob(id).catch(() => undefined);
    if (!job) return true;
    const state = await job.getState().catch(() => "unknown");
    if (state !== "waiting" && state !== "delayed" && state !== "prioritized") return false;
    try {
      await job.remove();
      return true;
    } catch {
      return false; // taken by a worker meanwhile
    }
  }

  async runTask(task: TaskSpec, onBatch: (r: BatchReport) => void, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return;
    if (this.admission) throw this.admission;
    const data: TaskJobData = { format: 1, jobId: this.init.jobId, config: this.init.config, pool: this.init.pool, task, needs: this.init.needs };
    const id = taskJobId(this.init.config, task);
    let resolveOuter!: () => void;
    let rejectOuter!: (e: unknown) => void;
    const done = new Promise<void>((res, rej) => {
      resolveOuter = res;
      rejectOuter = rej;
    });
    const p: Pending = { id, data, seen: [], onBatch, resolve: resolveOuter, reject: rejectOuter, lastHeard: Date.now() };
    this.pending.set(id, p);
    const onAbort = (): void => {
      this.aborted = true;
      void (async () => {
        await this.requestCancel(this.init.jobId).catch(() => {});
        if (await this.removeWaiting(id)) {
          this.pending.delete(id);
          resolveOuter();
        }
      })();
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      await this.add(p);
      if (signal?.aborted) onAbort();
      await done;
    } finally {
      this.pending.delete(id);
      signal?.removeEventListener("abort", onAbort);
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  close(): Promise<void> {
    this.closed ??= (async () => {
      clearInterval(this.sweepTimer);
      // Bounded: with Redis gone, BullMQ's close would wait for it forever.
      await settleWithin(this.events.close(), 2000);
      await settleWithin(this.queue.close(), 2000);
      this.events.disconnect().catch(() => {});
      this.queue.disconnect().catch(() => {});
      this.redis.disconnect();
    })();
    return this.closed;
  }
}
