/**
 * What the coordinator and the workers of distributed mode agree on: queue names per resource
 * class, job ids, the job payload, the lock/stall settings and the Redis connection.
 */
import { createHash } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { ConnectionOptions } from "bullmq";
import { BackfillError, ConfigError, type ErrorContext } from "../../errors.ts";
import type { BatchReport, TaskSpec, WorkerConfig } from "../protocol.ts";
import { redactRedisUrl } from "../redis-url.ts";

export { redactRedisUrl };

/** Default base queue name; tasks go to `<queue>-cpu` or `<queue>-gpu`. */
export const DEFAULT_QUEUE = "lancet";

/** Resources a worker advertises, or a UDF needs. `memory` is in MiB. */
export interface Resources {
  readonly cpu?: number;
  readonly gpu?: number;
  readonly memory?: number;
}

/** A resource class: one queue each, so a GPU task only reaches workers that have a GPU. */
export type ResourceClass = "cpu" | "gpu";

export function classOf(needs: Resources): ResourceClass {
  return (needs.gpu ?? 0) > 0 ? "gpu" : "cpu";
}

export function queueName(base: string, cls: ResourceClass): string {
  return `${base}-${cls}`;
}

export function checkQueueBase(base: string, where: string): string {
  if (typeof base !== "string" || !/^[A-Za-z0-9_.-]{1,100}$/.test(base)) {
    throw new ConfigError("CONFIG_INVALID", `${where} ${JSON.stringify(base)} is not a valid queue name; use letters, digits, '.', '_' or '-' (no ':')`);
  }
  return base;
}

/** Parses `cpu=4,gpu=1,memory=16384`. */
export function parseResources(text: string, where: string): Resources {
  const out: Record<string, number> = {};
  for (const part of text.split(",").map((p) => p.trim()).filter(Boolean)) {
    const m = /^(cpu|gpu|memory)=(\d+(?:\.\d+)?)$/.exec(part);
    if (!m) throw new ConfigError("CONFIG_INVALID", `${where}: ${JSON.stringify(part)} is not a resource; write cpu=N, gpu=N or memory=MiB separated by commas, e.g. cpu=4,gpu=1`);
    out[m[1]!] = Number(m[2]);
  }
  return out;
}

export function formatResources(r: Resources): string {
  return Object.entries(r).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${v}`).join(",") || "none";
}

/** Whether a worker with `have` can run a task that needs `need`. */
export function satisfies(have: Resources, need: Resources): boolean {
  if ((need.gpu ?? 0) > (have.gpu ?? 0)) return false;
  if (need.cpu !== undefined && have.cpu !== undefined && need.cpu > have.cpu) return false;
  if (need.memory !== undefined && have.memory !== undefined && need.memory > have.memory) return false;
  return true;
}

/** Lock and stall settings shared by workers (BullMQ's stall detection re-queues a dead worker's task). */
export interface StallSettings {
  /** How long a worker's lock on a task lasts; renewed every half of it by the worker's event loop. @default 30000 */
  readonly lockDurationMs: number;
  /** How often workers look for tasks whose lock expired. @default 5000 */
  readonly stalledIntervalMs: number;
  /** Times a task may be re-queued after its worker vanished before it fails. @default 3 */
  readonly maxStalledCount: number;
}

export const DEFAULT_STALL: StallSettings = { lockDurationMs: 30_000, stalledIntervalMs: 5_000, maxStalledCount: 3 };

/** Settings of the worker processes a task runs on (the same as the embedded pool's). */
export interface PoolSettings {
  readonly taskTimeoutMs: number;
  readonly memoryMb?: number;
  /** Environment variables for the UDF processes, passed explicitly (never the coordinator's own environment). */
  readonly env: Readonly<Record<string, string>>;
}

/** The payload of one queue job: small (paths, not data). */
export interface TaskJobData {
  readonly format: 1;
  /** The Lancet job (backfill) this task belongs to. */
  readonly jobId: string;
  readonly config: WorkerConfig;
  readonly pool: PoolSettings;
  readonly task: TaskSpec;
  readonly needs: Resources;
}

/** Job events of distributed runs: which queue, a task whose worker vanished, a task Redis lost, no worker yet. */
export type QueueEventType = "queue" | "task-stalled" | "task-requeued" | "waiting-for-workers";

/** Prefix of a failed task's reason: the serialized BackfillError follows as JSON. */
export const ERROR_PREFIX = "lancet-error:";

/** A task job's return value. */
export interface TaskJobResult {
  readonly reports: readonly BatchReport[];
  /** Ended early by a cancel. */
  readonly stopped: boolean;
  /** The Lancet job whose task this was (the job data's). */
  readonly jobId: string;
  readonly worker: string;
}

/**
 * The queue job id of a task: the same task (same table, column, batch key — which covers the UDF
 * version, the selection and the fragment's data — and the same row ranges) always gets the same id,
 * so enqueueing it again while it is known to the queue is a no-op. No ':' and never an integer.
 */
export function taskJobId(config: WorkerConfig, task: TaskSpec): string {
  const h = createHash("sha256")
    .update(JSON.stringify([config.dbDir, config.table, config.column, task.batchKey, task.selection, task.gaps.map((g) => [g.start, g.end])]))
    .digest("hex")
    .slice(0, 20);
  const first = task.gaps[0]?.start ?? 0;
  return `t-f${task.fragmentId}-o${first}-${h}`;
}

/**
 * Redis connection options from a URL: `redis://HOST:PORT/DB`, with `redis://:PASSWORD@…` or
 * `redis://USER:PASSWORD@…` (ACL users; percent-encode special characters), and `rediss://` for
 * TLS. `maxRetriesPerRequest: null` so commands wait out a Redis restart.
 * @throws ConfigError CONFIG_INVALID naming the URL with its password masked
 */
export function connectionFor(url: string, where = "redis"): ConnectionOptions {
  const bad = (why: string): never => {
    throw new ConfigError("CONFIG_INVALID", `${where} ${JSON.stringify(redactRedisUrl(url))} ${why}; write redis://HOST:PORT, redis://:PASSWORD@HOST:PORT or redis://USER:PASSWORD@HOST:PORT (rediss:// for TLS)`);
  };
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return bad("is not a Redis URL");
  }
  if (u.protocol !== "redis:" && u.protocol !== "rediss:") bad("is not a Redis URL");
  const db = u.pathname.length > 1 ? Number(u.pathname.slice(1)) : undefined;
  if (db !== undefined && (!Number.isInteger(db) || db < 0)) bad(`names database ${JSON.stringify(u.pathname.slice(1))}, not a number`);
  let username: string;
  let password: string;
  try {
    username = decodeURIComponent(u.username);
    password = decodeURIComponent(u.password);
  } catch {
    return bad("has a user name or password that is not percent-encoded correctly");
  }
  return {
    host: u.hostname.replace(/^\[(.*)\]$/, "$1") || "127.0.0.1",
    port: u.port ? Number(u.port) : 6379,
    ...(username ? { username } : {}),
    ...(password ? { password } : {}),
    ...(db !== undefined ? { db } : {}),
    ...(u.protocol === "rediss:" ? { tls: {} } : {}),
    maxRetriesPerRequest: null,
    retryStrategy: (times: number) => Math.min(times * 200, 2000),
  };
}

/**
 * A clear error for a Redis that refused us: wrong or missing password (WRONGPASS/NOAUTH), or an
 * unreachable server, naming the URL with its password masked.
 */
export function redisFailure(url: string, e: unknown, where: ErrorContext = {}): BackfillError {
  const msg = ((e as Error)?.message ?? String(e)).split("\n")[0]!.replace(/\.$/, "");
  const shown = redactRedisUrl(url);
  if (/WRONGPASS|NOAUTH|invalid password|invalid username-password/i.test(msg)) {
    return new BackfillError("QUEUE_UNAVAILABLE", `Redis at ${shown} did not accept the credentials: ${msg}; put the right password in the URL (redis://:PASSWORD@HOST:PORT, or redis://USER:PASSWORD@HOST:PORT for an ACL user)`, { ...where, cause: e });
  }
  return new BackfillError("QUEUE_UNAVAILABLE", `cannot reach Redis at ${shown}: ${msg}; start redis-server (or Valkey) there, or fix --redis`, { ...where, cause: e });
}

/** Waits for `p` (ignoring its failure) at most `ms`: for steps that need a Redis that may be gone. */
export async function settleWithin(p: Promise<unknown>, ms: number): Promise<void> {
  const timer = sleep(ms, undefined, { ref: false });
  await Promise.race([p.then(() => {}, () => {}), timer]);
}
