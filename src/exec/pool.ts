/**
 * The embedded executor: a pool of child processes on this machine, each running the shared worker
 * entry. `lancet worker` runs its queue's tasks on the same pool, so both modes execute UDFs alike. A crashing UDF (process.exit, a native crash, out of memory) takes down only its process;
 * the task it was running is rejected with a retryable WorkerCrashedError and the next task gets a
 * fresh process. A process that fails its start-up handshake is never reused, and the pool stops
 * spawning (no respawn loop): every later task is rejected with that error.
 */
import { fork, type ChildProcess } from "node:child_process";
import { homedir } from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { deserializeError, WorkerCrashedError, type BackfillError } from "../errors.ts";
import { storageEnv } from "../storage/location.ts";
import { checkUdfEnv } from "./env.ts";
import type { BatchReport, Executor, FromWorker, TaskSpec, ToWorker, WorkerConfig } from "./protocol.ts";

// ".ts" when running from source (type stripping), ".js" when running the built package.
/**
 * Where worker processes keep Node's compile cache (V8 code of Lancet's modules, LanceDB's and
 * Arrow's JS, the UDF bundle): a process start loads them ~2× faster from it (~130 → ~70 ms on the
 * benchmark machine). Per user; Node checks each entry against its source, and ignores a directory
 * it cannot write.
 */
const COMPILE_CACHE = path.join(process.env.XDG_CACHE_HOME || path.join(homedir(), ".cache"), "lancet", "node-compile-cache");

/** How long a process parked by a closed pool waits for the next pool of this process. */
const PARK_MS = 5_000;
const parked = new Map<string, { child: ChildProcess; timer: NodeJS.Timeout }[]>();

/**
 * Keeps an idle worker process for the next pool of this process that starts processes with the same
 * options (`key`): its listeners are removed and it no longer keeps this process alive; it exits
 * after {@link PARK_MS}, or when this process does. Returns false when it cannot be kept.
 */
function park(key: string | undefined, child: ChildProcess): boolean {
  if (key === undefined || process.env.LANCET_NO_PARK === "1") return false;
  for (const e of ["message", "exit", "error"] as const) child.removeAllListeners(e);
  child.stdout?.unpipe();
  child.stdout?.removeAllListeners("data");
  child.stderr?.removeAllListeners("data");
  child.on("error", () => {});
  const list = parked.get(key) ?? [];
  const entry = {
    child,
    timer: setTimeout(() => {
      drop();
      if (child.connected) child.send({ type: "shutdown" } satisfies ToWorker);
      else child.kill("SIGKILL");
    }, PARK_MS),
  };
  const drop = (): void => {
    clearTimeout(entry.timer);
    const l = parked.get(key);
    const i = l?.indexOf(entry) ?? -1;
    if (i >= 0) l!.splice(i, 1);
  };
  child.once("exit", drop);
  entry.timer.unref();
  child.unref();
  child.channel?.unref();
  (child.stdout as { unref?: () => void } | null)?.unref?.();
  (child.stderr as { unref?: () => void } | null)?.unref?.();
  list.push(entry);
  parked.set(key, list);
  return true;
}

/** A parked process started with options `key`, made this pool's (listeners back, keeping this process alive). */
function takeParked(key: string): ChildProcess | undefined {
  const list = parked.get(key);
  for (let e = list?.pop(); e !== undefined; e = list?.pop()) {
    clearTimeout(e.timer);
    const child = e.child;
    child.removeAllListeners("exit");
    if (!child.connected || child.exitCode !== null || child.signalCode !== null) continue;
    child.ref();
    child.channel?.ref();
    (child.stdout as { ref?: () => void } | null)?.ref?.();
    (child.stderr as { ref?: () => void } | null)?.ref?.();
    return child;
  }
  return undefined;
}

const WORKER_ENTRY = fileURLToPath(new URL(`./worker-entry${import.meta.url.endsWith(".ts") ? ".ts" : ".js"}`, import.meta.url));

interface Slot {
  readonly child: ChildProcess;
  /** 0 .. size-1, unique among live processes (for per-slot environment, e.g. a GPU each). */
  readonly index: number;
  busy: boolean;
  /** Killed by the task timeout. */
  hung: boolean;
  current: { id: number; task: TaskSpec; onBatch: (r: BatchReport) => void; resolve: () => void; reject: (e: unknown) => void } | undefined;
}

export interface LocalPoolOptions {
  /** Worker processes at most. */
  readonly size: number;
  readonly config: WorkerConfig;
  /**
   * The job's declared environment for the UDF (added to `baseEnv`). Names that change how Node or
   * the loader starts (`NODE_OPTIONS`, `LD_PRELOAD`, … see exec/env.ts) are refused with CONFIG_INVALID.
   */
  readonly env?: Readonly<Record<string, string>>;
  /**
   * The environment worker processes start from. `lancet worker` passes a minimal one (PATH, HOME,
   * TMPDIR, locale and its `--pass-env` names), so nothing else of its environment reaches a UDF.
   * @default this process's environment (the embedded executor: the user's own)
   */
  readonly baseEnv?: Readonly<Record<string, string | undefined>>;
  /** JavaScript heap limit of each worker, in MiB (`--max-old-space-size`). */
  readonly memoryMb?: number;
  /** A task that reports no batch for this long is declared hung: its worker is killed and the task fails (retryable). */
  readonly taskTimeoutMs?: number;
  /** Extra environment of the process in slot `index` (0 .. size-1), e.g. `CUDA_VISIBLE_DEVICES` for one GPU per process. */
  readonly slotEnv?: (index: number) => Record<string, string>;
}

export class LocalPool implements Executor {
  private readonly options: LocalPoolOptions;
  private readonly slots = new Set<Slot>();
  private readonly indices = new Set<number>();
  private readonly waiters: ((s: Slot | Error) => void)[] = [];
  private broken: BackfillError | undefined;
  private closed: Promise<void> | undefined;
  private spawning = 0;
  /** The parking key (start options) of each process this pool started or took. */
  private readonly keys = new Map<ChildProcess, string>();
  private nextId = 1;

  private constructor(options: LocalPoolOptions) {
    this.options = options;
  }

  /**
   * Creates the pool and starts its first worker, so a UDF that cannot load fails fast.
   * @throws ConfigError CONFIG_INVALID for a reserved name in `options.env`
   */
  static async create(options: LocalPoolOptions): Promise<LocalPool> {
    const c = options.config;
    checkUdfEnv(options.env, `the environment of column ${c.column}'s UDF (table ${c.table})`, { table: c.table, column: c.column });
    const pool = new LocalPool(options);
    for (let attempt = 1; ; attempt++) {
      try {
        const slot = await pool.spawn();
        pool.release(slot);
        return pool;
      } catch (e) {
        // A process that died while starting (killed, out of memory) may start the next time; a
        // UDF that failed to load will not (the pool is broken then).
        if (pool.broken || attempt >= 5 || (e as { kind?: string }).kind === "hang") throw e;
      }
    }
  }

  private spawn(): Promise<Slot> {
    this.spawning++;
    return new Promise<Slot>((resolve, reject) => {
      const memoryMb = this.options.memoryMb;
      let index = 0;
      while (this.indices.has(index)) index++;
      this.indices.add(index);
      const execArgv = memoryMb ? [`--max-old-space-size=${memoryMb}`] : [];
      const env = { NODE_COMPILE_CACHE: COMPILE_CACHE, ...(this.options.baseEnv ?? process.env), ...this.options.env, ...this.options.slotEnv?.(index), ...storageEnv(this.options.config.dbDir) };
      // A process an earlier pool of this process parked, started with the same environment, is
      // initialised for this job instead of starting a new one (~0.1 s saved per job).
      const key = JSON.stringify([execArgv, Object.entries(env).sort(([a], [b]) => (a < b ? -1 : 1))]);
      const child = takeParked(key) ?? fork(WORKER_ENTRY, [], { execArgv, serialization: "advanced", stdio: ["ignore", "pipe", "pipe", "ipc"], env });
      this.keys.set(child, key);
      // UDF output goes to stderr so it never mixes with a command's machine-readable stdout; the
      // tail of stderr is kept to tell an out-of-memory death from other crashes.
      let stderrTail = "";
      child.stdout?.pipe(process.stderr, { end: false });
      child.stderr?.on("data", (d: Buffer) => {
        process.stderr.write(d);
        stderrTail = (stderrTail + d.toString()).slice(-4096);
      });
      const slot: Slot = { child, index, busy: true, current: undefined, hung: false };
      let started = false;
      // A UDF whose setup() never finishes would hold its task forever: the task timeout covers start-up too.
      const limit = this.options.taskTimeoutMs;
      const startTimer =
        limit === undefined
          ? undefined
          : setTimeout(() => {
              slot.hung = true;
              child.kill("SIGKILL");
            }, limit);
      const onExit = (code: number | null, signal: NodeJS.Signals | null): void => {
        this.slots.delete(slot);
        this.indices.delete(index);
        const oom = /heap out of memory|Reached heap limit|Allocation failed/i.test(stderrTail) || signal === "SIGABRT" || code === 134;
        const how = slot.hung
          ? `made no progress for ${this.options.taskTimeoutMs} ms (taskTimeoutMs) and was killed`
          : oom
            ? `ran out of memory${memoryMb ? ` (heap limit ${memoryMb} MiB; raise the UDF's memory hint or options.workerMemoryMb)` : ""}`
            : signal
              ? `was killed by ${signal}`
              : `exited with code ${code}`;
        if (!started) {
          clearTimeout(startTimer);
          this.spawning--;
          reject(
            Object.assign(new WorkerCrashedError(`worker process ${how} while starting${slot.hung ? ` (the UDF's setup() of ${this.options.config.label} did not finish; raise taskTimeoutMs if it needs longer)` : ""}`), {
              kind: slot.hung ? "hang" : "crash",
            }),
          );
          return;
        }
        const cur = slot.current;
        slot.current = undefined;
        if (cur) {
          const t = cur.task;
          cur.reject(
            Object.assign(
              new WorkerCrashedError(`worker process ${how} while computing fragment ${t.fragmentId} rows ${t.gaps[0]?.start ?? 0}-${(t.gaps.at(-1)?.end ?? 1) - 1}`, {
                fragmentId: t.fragmentId,
              }),
              { kind: slot.hung ? "hang" : oom ? "oom" : "crash" },
            ),
          );
        }
        this.wakeWaiter();
      };
      child.on("exit", onExit);
      child.on("error", () => {});
      child.on("message", (raw) => {
        const m = raw as FromWorker;
        switch (m.type) {
          case "ready":
            clearTimeout(startTimer);
            started = true;
            this.spawning--;
            this.slots.add(slot);
            resolve(slot);
            break;
          case "initFailed": {
            clearTimeout(startTimer);
            const err = deserializeError(m.error);
            this.broken ??= err;
            started = true;
            this.spawning--;
            child.removeListener("exit", onExit);
            this.indices.delete(index);
            child.kill("SIGKILL");
            reject(err);
            this.failWaiters(err);
            break;
          }
          case "batch":
            if (slot.current?.id === m.id) slot.current.onBatch(m.report);
            break;
          case "taskDone":
          case "taskFailed": {
            const cur = slot.current;
            if (!cur || cur.id !== m.id) break;
            slot.current = undefined;
            this.release(slot);
            if (m.type === "taskDone") cur.resolve();
            else cur.reject(deserializeError(m.error));
            break;
          }
        }
      });
      this.post(child, { type: "init", config: this.options.config });
    });
  }

  private post(child: ChildProcess, m: ToWorker): void {
    if (child.connected) child.send(m);
  }

  private release(slot: Slot): void {
    slot.busy = false;
    const w = this.waiters.shift();
    if (w) {
      slot.busy = true;
      w(slot);
    }
  }

  private wakeWaiter(): void {
    if (this.waiters.length === 0 || this.closed) return;
    if (this.broken) return this.failWaiters(this.broken);
    if (this.slots.size + this.spawning < this.options.size) {
      const w = this.waiters.shift()!;
      this.spawn().then(w, (e: Error) => w(e));
    }
  }

  private failWaiters(e: Error): void {
    for (const w of this.waiters.splice(0)) w(e);
  }

  private async acquire(): Promise<Slot> {
    if (this.closed) throw new WorkerCrashedError("the worker pool is closed");
    if (this.broken) throw this.broken;
    for (const s of this.slots) {
      if (!s.busy) {
        s.busy = true;
        return s;
      }
    }
    if (this.slots.size + this.spawning < this.options.size) return this.spawn();
    const got = await new Promise<Slot | Error>((r) => this.waiters.push(r));
    if (got instanceof Error) throw got;
    return got;
  }

  async runTask(task: TaskSpec, onBatch: (r: BatchReport) => void, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return;
    const slot = await this.acquire();
    if (signal?.aborted) {
      this.release(slot);
      return;
    }
    const id = this.nextId++;
    const stop = (): void => this.post(slot.child, { type: "stop", id });
    signal?.addEventListener("abort", stop, { once: true });
    const limit = this.options.taskTimeoutMs;
    let watchdog: NodeJS.Timeout | undefined;
    const arm = (): void => {
      if (limit === undefined) return;
      clearTimeout(watchdog);
      watchdog = setTimeout(() => {
        slot.hung = true;
        slot.child.kill("SIGKILL");
      }, limit);
    };
    arm();
    return new Promise<void>((resolve, reject) => {
      const progress = (r: BatchReport): void => {
        arm();
        onBatch(r);
      };
      slot.current = { id, task, onBatch: progress, resolve, reject };
      this.post(slot.child, { type: "task", id, task });
    }).finally(() => {
      clearTimeout(watchdog);
      signal?.removeEventListener("abort", stop);
    });
  }

  /** Worker processes busy with a task. */
  get busy(): number {
    let n = 0;
    for (const s of this.slots) if (s.current) n++;
    return n;
  }

  /** Number of live worker processes. */
  get size(): number {
    return this.slots.size;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  close(): Promise<void> {
    this.closed ??= (async () => {
      this.failWaiters(new WorkerCrashedError("the worker pool is closed"));
      await Promise.all(
        [...this.slots].map(
          (s) =>
            new Promise<void>((resolve) => {
              if (s.child.exitCode !== null || s.child.signalCode !== null) return resolve();
              // A healthy idle process is kept a few seconds for the next pool of this process.
              if (!s.hung && !s.current && !this.broken && s.child.connected && park(this.keys.get(s.child), s.child)) return resolve();
              const timer = setTimeout(() => s.child.kill("SIGKILL"), 2000);
              s.child.once("exit", () => {
                clearTimeout(timer);
                resolve();
              });
              this.post(s.child, { type: "shutdown" });
              if (!s.child.connected) s.child.kill("SIGKILL");
            }),
        ),
      );
      this.slots.clear();
    })();
    return this.closed;
  }
}
