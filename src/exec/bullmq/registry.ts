/**
 * Live workers: each `lancet worker` keeps a small record in Redis with a short expiry and refreshes
 * it while it runs, so the coordinator can tell whether any live worker can serve a job (the
 * admission check) and `lancet workers` can list them. A killed worker drops out when its record expires.
 */
import type { Redis } from "ioredis";
import type { ResourceClass, Resources } from "./queue.ts";

export interface WorkerInfo {
  readonly id: string;
  readonly host: string;
  readonly pid: number;
  /** Base queue name. */
  readonly queue: string;
  /** The resource class (queue) it takes tasks from. */
  readonly resourceClass: ResourceClass;
  readonly resources: Resources;
  /** Tasks it runs at once. */
  readonly concurrency: number;
  /** Tasks running now. */
  readonly active: number;
  readonly startedAt: string;
  readonly seenAt: string;
}

/** How long a worker's record outlives its last refresh. */
export const WORKER_TTL_MS = 15_000;
/** How often a worker refreshes its record. */
export const WORKER_REFRESH_MS = 5_000;

const key = (queue: string, id: string): string => `lancet:workers:${queue}:${id}`;

export async function putWorker(redis: Redis, info: WorkerInfo): Promise<void> {
  await redis.set(key(info.queue, info.id), JSON.stringify(info), "PX", WORKER_TTL_MS);
}

export async function removeWorker(redis: Redis, queue: string, id: string): Promise<void> {
  await redis.del(key(queue, id));
}

/** Live workers on a base queue (every resource class). */
export async function listWorkers(redis: Redis, queue: string): Promise<WorkerInfo[]> {
  const keys: string[] = [];
  let cursor = "0";
  do {
    const [next, found] = await redis.scan(cursor, "MATCH", key(queue, "*"), "COUNT", 200);
    cursor = next;
    keys.push(...found);
  } while (cursor !== "0");
  if (keys.length === 0) return [];
  const values = await redis.mget(...keys);
  const out: WorkerInfo[] = [];
  for (const v of values) {
    if (v === null) continue;
    try {
      out.push(JSON.parse(v) as WorkerInfo);
    } catch {
      // a record from an incompatible version: not a worker we can use
    }
  }
  return out.sort((a, b) => a.id.localeCompare(b.id));
}

/** The key a coordinator sets to stop every running task of a Lancet job. */
export const cancelKey = (queue: string, jobId: string): string => `lancet:cancel:${queue}:${jobId}`;
