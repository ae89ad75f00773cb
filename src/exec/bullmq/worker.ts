/**
 * `lancet worker`: takes backfill tasks from a BullMQ queue on Redis and runs them on a pool of child
 * processes started from the same worker entry as the embedded executor — UDFs never run on this
 * process's event loop, so it keeps renewing its task locks however long a UDF blocks its own process.
 * It refreshes a record of itself in Redis (for the coordinator's admission check), polls for
 * cancels, and serves Prometheus metrics.
 *
 * Anyone who can write to its Redis can enqueue a task, so a task is trusted for nothing: the worker
 * runs only a content-addressed UDF bundle of the named table's own Lancet store whose content matches
 * its name (optionally only in databases under `allowedDbDirs`), passes the UDF only the job's declared
 * environment (never a name that changes how Node or the loader starts) plus a minimal base, and
 * refuses any other task with CONFIG_INVALID, never retried.
 */
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { existsSync } from "node:fs";
import { availableParallelism, hostname } from "node:os";
import * as path from "node:path";
import { DelayedError, Queue, UnrecoverableError, Worker, type Job } from "bullmq";
import { Redis } from "ioredis";
import type { Server } from "node:http";
import { checkpointStoreAt } from "../../checkpoint/store.ts";
import { dbLocation, isRemote } from "../../storage/location.ts";
import { BackfillError, ConfigError, isBackfillError, serializeError } from "../../errors.ts";
import { silentLogger, type Logger } from "../../log.ts";
import { gapsOf } from "../../plan/plan.ts";
import { checkTaskEnv, udfBaseEnv } from "../env.ts";
import { LocalPool } from "../pool.ts";
import { verifyStoredBundle } from "../../udf/bundle.ts";
import { assertBundleBound } from "../../udf/binding.ts";
import type { BatchReport } from "../protocol.ts";
import { WorkerMetrics } from "./metrics.ts";
import { cancelKey, putWorker, removeWorker, WORKER_REFRESH_MS, type WorkerInfo } from "./registry.ts";
import {
  checkQueueBase,
  classOf,
  connectionFor,
  DEFAULT_QUEUE,
  DEFAULT_STALL,
  ERROR_PREFIX,
  formatResources,
  queueName,
  redisFailure,
  satisfies,
  settleWithin,
  type Resources,
  type StallSettings,
  type TaskJobData,
  type TaskJobResult,
} from "./queue.ts";

export interface LancetWorkerOptions {
  readonly redis: string;
  /** Base queue name. @default "lancet" */
  readonly queue?: string;
  /** Tasks at once (worker processes). @default the GPU count when it has GPUs, else the number of cores */
  readonly concurrency?: number;
  /** What this worker offers; `gpu > 0` makes it take tasks of GPU UDFs (and only those). */
  readonly resources?: Resources;
  readonly stall?: Partial<StallSettings>;
  /** Serve Prometheus metrics and /healthz on this port. */
  readonly metricsPort?: number;
  /**
   * Stop by itself once it has had nothing to do (no task running, none waiting on its queue) for this
   * long: for a worker per backfill, e.g. a Kubernetes Indexed Job. @default never
   */
  readonly exitWhenIdleMs?: number;
  /** Close idle pools of worker processes after this long. @default 60000 */
  readonly poolIdleMs?: number;
  /**
   * Databases this worker serves: a task naming a database outside these directories is refused
   * (`lancet worker --allow-db DIR`). @default any database whose store holds the task's bundle
   */
  readonly allowedDbDirs?: readonly string[];
  /**
   * Names of this worker's own environment variables its UDF processes get too (`--pass-env`), e.g.
   * `HF_TOKEN` or `NODE_EXTRA_CA_CERTS`. @default none: PATH, HOME, TMPDIR and the locale only, plus
   * what each job declares
   */
  readonly passEnv?: readonly string[];
  readonly logger?: Logger;
}

interface PoolEntry {
  readonly pool: Promise<LocalPool>;
  active: number;
  lastUsed: number;
}

export class LancetWorker {
  readonly id: string;
  readonly queue: string;
  readonly queueName: string;
  readonly resources: Resources;
  readonly concurrency: number;
  readonly metrics = new WorkerMetrics();
  private readonly log: Logger;
  private readonly redis: Redis;
  private readonly worker: Worker<TaskJobData, TaskJobResult>;
  private readonly bullQueue: Queue;
  private readonly pools = new Map<string, PoolEntry>();
  /** Running tasks by queue job id. */
  private readonly running = new Map<string, AbortController>();
  private readonly storageChecked = new Set<string>();
  private readonly allowedDbDirs: readonly string[] | undefined;
  /** The environment UDF processes start from (see exec/env.ts). */
  private readonly baseEnv: Readonly<Record<string, string>>;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly startedAt = new Date().toISOString();
  private server: Server | undefined;
  private active = 0;
  private closing: Promise<void> | undefined;
  private markStopped!: () => void;
  private readonly stopped = new Promise<void>((r) => (this.markStopped = r));

  private constructor(options: LancetWorkerOptions) {
    this.queue = checkQueueBase(options.queue ?? DEFAULT_QUEUE, "queue");
    this.resources = options.resources ?? { cpu: availableParallelism() };
    const cls = classOf(this.resources);
    this.queueName = queueName(this.queue, cls);
    const concurrency = options.concurrency ?? (cls === "gpu" ? Math.max(1, Math.floor(this.resources.gpu!)) : availableParallelism());
    if (!Number.isInteger(concurrency) || concurrency < 1) throw new ConfigError("CONFIG_INVALID", `concurrency must be an integer >= 1 (got ${JSON.stringify(options.concurrency)})`);
    this.concurrency = concurrency;
    this.id = `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;
    this.log = (options.logger ?? silentLogger).child({ worker: this.id, queue: this.queueName });
    const stall = { ...DEFAULT_STALL, ...options.stall };
    const connection = connectionFor(options.redis, "--redis");
    this.redis = new Redis({ ...(connection as object), lazyConnect: false });
    this.redis.on("error", () => {}); // reconnects on its own; errors are reported by the commands that fail
    this.bullQueue = new Queue(this.queueName, { connection });
    this.bullQueue.on("error", () => {});
    this.worker = new Worker<TaskJobData, TaskJobResult>(this.queueName, (job, token, signal) => this.process(job, token, signal), {
      connection,
      concurrency,
      lockDuration: stall.lockDurationMs,
      stalledInterval: stall.stalledIntervalMs,
      maxStalledCount: stall.maxStalledCount,
      autorun: false,
    });
    let lastWarn = 0;
    this.worker.on("error", (e) => {
      // While Redis is away this fires on every reconnect attempt: say it every 10 s at most.
      if (Date.now() - lastWarn < 10_000) return;
      lastWarn = Date.now();
      this.log.warn(`queue connection: ${e.message} (reconnecting)`);
    });
    this.worker.on("lockRenewalFailed", (ids) => {
      for (const id of ids) this.running.get(id)?.abort();
    });
    this.worker.on("stalled", (id) => this.log.warn(`task ${id} stalled (its worker stopped renewing its lock); it is queued again`));
    this.metrics.slots.set({ queue: this.queueName }, concurrency);
    this.metrics.active.set({ queue: this.queueName }, 0);
    this.poolIdleMs = options.poolIdleMs ?? 60_000;
    const gpus = Math.floor(this.resources.gpu ?? 0);
    if (gpus > 0) {
      const visible = process.env.CUDA_VISIBLE_DEVICES?.split(",").map((d) => d.trim()).filter(Boolean);
      const ids = visible && visible.length > 0 ? visible : Array.from({ length: gpus }, (_, i) => String(i));
      const per = Math.max(1, Math.floor(ids.length / concurrency));
      this.gpuSlots = Array.from({ length: Math.min(concurrency, Math.max(1, Math.floor(ids.length / per))) }, (_, i) => ids.slice(i * per, i * per + per).join(","));
    }
    this.metricsPort = options.metricsPort;
    this.allowedDbDirs = options.allowedDbDirs?.map(dbLocation);
    this.baseEnv = udfBaseEnv(process.env, options.passEnv ?? []);
  }

  private readonly poolIdleMs: number;
  /**
   * With GPUs: the devices each worker process may see (`CUDA_VISIBLE_DEVICES`), one share per slot,
   * taken from the worker's own `CUDA_VISIBLE_DEVICES` when set, else 0 .. gpu-1.
   */
  private readonly gpuSlots: string[] | undefined;
  private readonly metricsPort: number | undefined;

  /** Connects, registers itself and starts taking tasks. */
  static async start(options: LancetWorkerOptions): Promise<LancetWorker> {
    const w = new LancetWorker(options);
    try {
      // A wrong or missing password fails here, with the URL named and its password masked.
      await w.redis.ping().catch((e: unknown) => {
        throw redisFailure(options.redis, e);
      });
      await w.register();
      if (w.metricsPort !== undefined) {
        w.server = await w.metrics.serve(w.metricsPort, () => w.bullQueue.exportPrometheusMetrics(), () => w.closing === undefined);
      }
    } catch (e) {
      await w.close();
      throw e;
    }
    w.timers.push(setInterval(() => void w.register().catch(() => {}), WORKER_REFRESH_MS));
    w.timers.push(setInterval(() => void w.closeIdlePools(), Math.min(10_000, w.poolIdleMs)));
    const idleLimit = options.exitWhenIdleMs;
    if (idleLimit !== undefined) {
      let idleSince = Date.now();
      w.timers.push(
        setInterval(() => {
          void (async () => {
            const c = await w.bullQueue.getJobCounts("waiting", "delayed", "prioritized");
            const busy = w.active > 0 || (c.waiting ?? 0) + (c.delayed ?? 0) + (c.prioritized ?? 0) > 0;
            if (busy) idleSince = Date.now();
            else if (Date.now() - idleSince >= idleLimit) {
              w.log.info(`idle for ${idleLimit} ms: stopping`);
              void w.close();
            }
          })().catch(() => {});
        }, Math.min(1000, idleLimit)),
      );
    }
    void w.worker.run().catch((e: unknown) => w.log.error(`worker loop ended: ${(e as Error).message}`));
    w.log.debug(`worker ${w.id} takes tasks from ${w.queueName} (resources ${formatResources(w.resources)}, concurrency ${w.concurrency})`);
    return w;
  }

  /** Resolves once the worker has stopped (after close(), or by itself with exitWhenIdleMs). */
  get closed(): Promise<void> {
    return this.stopped;
  }

  /** The port metrics are served on (useful with port 0). */
  get metricsAddress(): number | undefined {
    const a = this.server?.address();
    return typeof a === "object" && a ? a.port : undefined;
  }

  private info(): WorkerInfo {
    return {
      id: this.id,
      host: hostname(),
      pid: process.pid,
      queue: this.queue,
      resourceClass: classOf(this.resources),
      resources: this.resources,
      concurrency: this.concurrency,
      active: this.active,
      startedAt: this.startedAt,
      seenAt: new Date().toISOString(),
    };
  }

  private register(): Promise<void> {
    return putWorker(this.redis, this.info());
  }

  /** Fails a task with a structured error; `final` ones are never retried by the queue. */
  private fail(e: unknown, kind: string): never {
    this.metrics.failures.inc({ queue: this.queueName, kind });
    this.metrics.tasks.inc({ queue: this.queueName, status: "failed" });
    const text = ERROR_PREFIX + JSON.stringify(serializeError(e));
    throw kind === "udf" || kind === "crash" || kind === "oom" || kind === "hang" ? new Error(text) : new UnrecoverableError(text);
  }

  /**
   * What a task from Redis may ask for, checked before anything is touched: its declared environment
   * (no reserved names) and the shape of its paths (a bundle of the table's own store). Refused tasks
   * fail with CONFIG_INVALID and are never retried.
   */
  private checkTask(d: TaskJobData, id: string | undefined): void {
    const c = d.config;
    const where = { table: c?.table, column: c?.column, jobId: d.jobId };
    const subject = `task ${id} of column ${String(c?.column)} (table ${String(c?.table)})`;
    checkTaskEnv(d.pool?.env, `${subject}: env`, Object.keys(this.baseEnv), where);
    verifyStoredBundle(c, { subject, context: where, shapeOnly: true });
  }

  /** Refuses a task: logged as a warning (someone may be forging tasks), failed for good. */
  private refuse(e: unknown, id: string | undefined): never {
    this.log.warn(`refused task ${id}: ${(e as Error).message}`);
    return this.fail(e, "refused");
  }

  /** The storage a task names must be reachable (checked once per database and bundle). */
  private checkStorage(d: TaskJobData): void {
    const c = d.config;
    const k = `${c.dbDir}\n${c.bundlePath}\n${c.checkpointRoot}`;
    if (this.storageChecked.has(k)) return;
    // Object storage: reached with this worker's own credentials (--storage-option, AWS_*) when the task runs.
    if (isRemote(c.dbDir)) return;
    const where = { table: c.table, column: c.column, jobId: d.jobId };
    const tableDir = path.join(c.dbDir, `${c.table}.lance`);
    for (const [what, p] of [["database directory", c.dbDir], ["table", tableDir], ["UDF bundle", c.bundlePath]] as const) {
      if (!existsSync(p)) {
        throw new BackfillError(
          "STORAGE_UNREACHABLE",
          `worker ${this.id} cannot reach the ${what} ${p} (table ${c.table}, column ${c.column}); every worker must see the database at the same path as the coordinator: mount the shared filesystem there`,
          where,
        );
      }
    }
    this.storageChecked.add(k);
  }

  /**
   * The task's bundle must be one of its table's store (in an allowed database) whose content matches
   * its name, and the one the column's binding names at the job's version: checked for every task, so a file changed since the last one is caught before a process
   * of its pool starts again (the worker entry checks once more before importing it).
   */
  private async checkBundle(d: TaskJobData, id: string | undefined): Promise<void> {
    const c = d.config;
    const subject = `task ${id} of column ${c.column} (table ${c.table})`;
    verifyStoredBundle(c, {
      subject,
      context: { table: c.table, column: c.column, jobId: d.jobId },
      ...(this.allowedDbDirs ? { allowedDbDirs: this.allowedDbDirs } : {}),
    });
    // And it must be the bundle the column's binding names (a stored bundle of another column, or one
    // merely placed in the store under its own hash, is refused).
    await assertBundleBound(c, subject);
  }

  private poolFor(d: TaskJobData): PoolEntry {
    const key = JSON.stringify([d.config, d.pool]);
    let entry = this.pools.get(key);
    if (!entry) {
      const pool = LocalPool.create({
        size: this.concurrency,
        ...(this.gpuSlots ? { slotEnv: (i: number) => ({ CUDA_VISIBLE_DEVICES: this.gpuSlots![i % this.gpuSlots!.length]! }) } : {}),
        config: d.config,
        taskTimeoutMs: d.pool.taskTimeoutMs,
        baseEnv: this.baseEnv,
        env: { ...d.pool.env },
        ...(d.pool.memoryMb !== undefined ? { memoryMb: d.pool.memoryMb } : {}),
      });
      const created: PoolEntry = { pool, active: 0, lastUsed: Date.now() };
      entry = created;
      this.pools.set(key, created);
      // A pool that cannot start (the UDF does not load) is forgotten, so the next task tries again.
      pool.catch(() => {
        if (this.pools.get(key) === created) this.pools.delete(key);
      });
    }
    return entry;
  }

  /** Forgets a pool that can no longer start processes, so the next task of its UDF builds a fresh one. */
  private evict(entry: PoolEntry): void {
    for (const [k, e] of this.pools) {
      if (e === entry) {
        this.pools.delete(k);
        void e.pool.then((p) => p.close(), () => {});
      }
    }
  }

  private async closeIdlePools(): Promise<void> {
    const now = Date.now();
    for (const [k, e] of this.pools) {
      if (e.active === 0 && now - e.lastUsed > this.poolIdleMs) {
        this.pools.delete(k);
        await e.pool.then((p) => p.close(), () => {});
      }
    }
  }

  /** Puts a task back on the queue for another worker (or this one, later): BullMQ's DelayedError protocol. */
  private async handBack(job: Job<TaskJobData, TaskJobResult>, token: string | undefined, why: string): Promise<never> {
    this.log.info(`task ${job.id} handed back: ${why}`);
    await job.moveToDelayed(Date.now() + 1000, token);
    throw new DelayedError(why);
  }

  private async process(job: Job<TaskJobData, TaskJobResult>, token: string | undefined, signal: AbortSignal | undefined): Promise<TaskJobResult> {
    // Counted from the start, so a shutdown waits for tasks still in their first awaits too.
    this.active++;
    this.metrics.active.set({ queue: this.queueName }, this.active);
    try {
      return await this.run(job, token, signal);
    } finally {
      this.active--;
      this.metrics.active.set({ queue: this.queueName }, this.active);
    }
  }

  private async run(job: Job<TaskJobData, TaskJobResult>, token: string | undefined, signal: AbortSignal | undefined): Promise<TaskJobResult> {
    const d = job.data;
    if (d?.format !== 1) this.fail(new ConfigError("CONFIG_INVALID", `task ${job.id} was enqueued by an incompatible version of Lancet (format ${String(d?.format)})`), "setup");
    try {
      this.checkTask(d, job.id);
    } catch (e) {
      this.refuse(e, job.id);
    }
    // Fetched while closing: leave it to the other workers.
    if (this.closing) return this.handBack(job, token, "this worker is shutting down");
    const cancel = cancelKey(this.queue, d.jobId);
    if ((await this.redis.exists(cancel)) === 1) return { reports: [], stopped: true, worker: this.id, jobId: d.jobId };
    // Workers of one class share a queue; one too small for this UDF hands the task on to a bigger one
    // (the coordinator's admission check makes sure one is live).
    if (!satisfies(this.resources, d.needs)) {
      this.metrics.failures.inc({ queue: this.queueName, kind: "resources" });
      return this.handBack(job, token, `it offers ${formatResources(this.resources)} but the UDF of column ${d.config.column} (table ${d.config.table}) needs ${formatResources(d.needs)}`);
    }
    try {
      this.checkStorage(d);
    } catch (e) {
      this.fail(e, "storage");
    }
    try {
      await this.checkBundle(d, job.id);
    } catch (e) {
      this.refuse(e, job.id);
    }
    const entry = this.poolFor(d);
    entry.active++;
    const stop = new AbortController();
    // Its lock lost (this process stalled, or Redis restarted): the task runs elsewhere; stop this copy.
    this.running.set(String(job.id), stop);
    const onAbort = (): void => stop.abort();
    signal?.addEventListener("abort", onAbort, { once: true });
    const poll = setInterval(() => {
      this.redis.exists(cancel).then((n) => n === 1 && stop.abort(), () => {});
    }, 500);
    try {
      let pool: LocalPool;
      try {
        pool = await entry.pool;
      } catch (e) {
        this.fail(e, "setup");
      }
      // Batches a previous attempt checkpointed (its worker died) are reported, not recomputed.
      const task = d.task;
      const store = checkpointStoreAt(d.config.checkpointRoot);
      const covered = (await store.listBatches(task.batchKey)).filter((c) => task.gaps.some((g) => c.start >= g.start && c.end <= g.end));
      const reports: BatchReport[] = covered.map((c) => ({ start: c.start, end: c.end, rowsComputed: c.end - c.start, rowsSkipped: 0, errors: [], readMs: 0, udfMs: 0, udfCpuMs: 0, checkpointMs: 0 }));
      const gaps = task.gaps.flatMap((g) => gapsOf(g.start, g.end, covered));
      try {
        if (gaps.length > 0) {
          await pool.runTask(
            { ...task, gaps },
            (r) => {
              reports.push(r);
              this.metrics.rows.inc({ queue: this.queueName }, r.rowsComputed);
              if (r.rowsSkipped > 0) this.metrics.rowsSkipped.inc({ queue: this.queueName }, r.rowsSkipped);
              this.metrics.udfSeconds.inc({ queue: this.queueName }, r.udfMs / 1000);
              void job.updateProgress(r as unknown as object).catch(() => {});
            },
            stop.signal,
          );
        }
      } catch (e) {
        if (isBackfillError(e, "UDF_SETUP_FAILED") || isBackfillError(e, "WORKER_START_FAILED")) this.evict(entry);
        const kind = isBackfillError(e, "WORKER_CRASHED") ? ((e as { kind?: string }).kind ?? "crash") : "udf";
        this.fail(e, kind);
      }
      this.metrics.tasks.inc({ queue: this.queueName, status: stop.signal.aborted ? "stopped" : "completed" });
      return { reports, stopped: stop.signal.aborted, worker: this.id, jobId: d.jobId };
    } finally {
      clearInterval(poll);
      signal?.removeEventListener("abort", onAbort);
      entry.active--;
      entry.lastUsed = Date.now();
      if (this.running.get(String(job.id)) === stop) this.running.delete(String(job.id));
    }
  }

  /** Resolves when no task is running. */
  private async idle(): Promise<void> {
    while (this.active > 0) await sleep(100);
  }

  /**
   * Stops taking tasks, lets running ones finish, stops the worker processes. Idempotent. Steps that
   * need Redis are bounded, so a worker whose Redis is gone still exits once its tasks are done.
   */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      for (const t of this.timers) clearInterval(t);
      // Wait for the running tasks; BullMQ's close also waits for Redis, which may be gone, so a worker
      // idle for 2 s (tasks fetched meanwhile are handed back, see process) goes on without it.
      const drained = async (): Promise<void> => {
        do {
          await this.idle();
          await sleep(2000);
        } while (this.active > 0);
      };
      await Promise.race([this.worker.close().catch(() => {}), drained()]);
      await Promise.all([...this.pools.values()].map((e) => e.pool.then((p) => p.close(), () => {})));
      this.pools.clear();
      await settleWithin(removeWorker(this.redis, this.queue, this.id), 1000);
      await settleWithin(this.bullQueue.close(), 2000);
      void this.worker.close(true).catch(() => {});
      this.redis.disconnect();
      await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
      this.markStopped();
    })();
    return this.closing;
  }
}
