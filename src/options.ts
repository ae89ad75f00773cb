/**
 * Backfill options: declared once, validated and defaulted once in {@link resolveBackfillOptions}, the
 * only place that throws for a bad option. Defaults follow Geneva's, scaled to this machine.
 */
import { checkFailpoints } from "./failpoints.ts";
import { availableParallelism } from "node:os";
import { ConfigError } from "./errors.ts";
import { redactRedisUrl } from "./exec/redis-url.ts";
import { checkUdfEnv } from "./exec/env.ts";
import type { Logger } from "./log.ts";
import type { Diagnosis, JobMetrics, JobStatus } from "./jobs/record.ts";
import { resolveErrorPolicy, type ErrorPolicy, type ErrorPolicySpec } from "./udf/policy.ts";

/** A progress snapshot, reported while a backfill runs: the job's metrics (counts are for this run), status and diagnosis. */
export type BackfillProgress = Readonly<JobMetrics> & {
  readonly phase: "planning" | "running" | "committing" | "finished" | "failed" | "cancelled";
  readonly status: JobStatus;
  readonly diagnosis: Diagnosis | null;
};

export interface BackfillOptions {
  /** Worker processes; in distributed mode, tasks in flight across all workers. @default min(8, available cores); distributed: the live workers' total slots, at least 8 */
  concurrency?: number;
  /** UDF calls in flight per worker process (async UDFs). @default 1 */
  intraApplierConcurrency?: number;
  /** Rows per checkpoint batch. When set without `maxCheckpointSize`, batches are fixed at this size. @default max(100, 8 × intraApplierConcurrency), growing adaptively */
  checkpointSize?: number;
  /** Upper bound of the adaptive checkpoint batch size. @default checkpointSize when that is set, else 65536 */
  maxCheckpointSize?: number;
  /** Rows per task (a task never spans fragments). @default rows to compute / (concurrency × 2), at most the largest fragment */
  taskSize?: number;
  /** Fragments per commit. @default min(64, max(1, ceil(fragments / 20))) */
  commitGranularity?: number;
  /** Fragment writers running at once (each fragment has one serial writer). @default min(4, concurrency) */
  writerConcurrency?: number;
  /** How often the job record is written to the jobs table (and the job heartbeats). @default 2000 */
  statusIntervalMs?: number;
  /** Overrides the UDF's error policy: "fail", "skip", "retry:N", { retry: N }, or a list of matchers. @default the UDF's, else "fail" */
  errorPolicy?: ErrorPolicySpec | string;
  /** A task whose worker reports no finished batch for this long is declared hung: the worker is killed and the task retried. @default 1800000 (30 min) */
  taskTimeoutMs?: number;
  /** JavaScript heap limit of each worker process, in MiB. @default the UDF's `memory` hint, else Node's default */
  workerMemoryMb?: number;
  /** How fragments are committed: "graft" (DataReplacement), "merge" (public mergeInsert), or "auto" (graft where safe). @default "auto" */
  commitMode?: "auto" | "graft" | "merge";
  /** SQL filter: recompute matching rows (filled or not) and keep other rows' values. @default only rows not yet computed */
  where?: string;
  /** Only the first N fragments of the table (a pilot run; a later run finishes the rest). */
  numFrags?: number;
  /** Plan only: report the plan and run nothing. @default false */
  planOnly?: boolean;
  /** Attempts per task when its worker process dies. @default 3 */
  maxTaskAttempts?: number;
  /**
   * Where tasks run: "local" (a pool of child processes on this machine) or a BullMQ queue on Redis
   * served by `lancet worker` processes on any number of machines. @default "local"
   */
  executor?: "local" | QueueExecutorSpec;
  /**
   * Environment variables for the UDF's processes. Locally they are added to this process's environment;
   * on `lancet worker`s they are all the UDF gets besides PATH, HOME, TMPDIR, the locale and what the
   * worker's operator passes (`--pass-env`); the coordinator's environment is never passed. Names that
   * change how Node or the loader starts (`NODE_*`, `LD_*`, `DYLD_*`, `OPENSSL_*`, `GCONV_PATH`,
   * `BASH_ENV`) are refused with CONFIG_INVALID.
   */
  env?: Record<string, string>;
  /** Called with progress snapshots as the job runs. */
  onProgress?: (p: BackfillProgress) => void;
  /** Where Lancet logs. @default silent */
  logger?: Logger;
}

/** Distributed execution: tasks go to a BullMQ queue on Redis. */
export interface QueueExecutorSpec {
  /** Redis URL, e.g. "redis://10.0.0.5:6379", "redis://:PASSWORD@10.0.0.5:6379" or "rediss://USER:PASSWORD@host:6380" (TLS); the password is never printed or recorded. */
  redis: string;
  /** Base queue name (tasks go to `<queue>-cpu` or `<queue>-gpu`). @default "lancet" */
  queue?: string;
  /** How long to wait for a live worker that can run the UDF before failing the job. @default 600000 */
  admissionTimeoutMs?: number;
  /** How long Redis may be unreachable mid-job before the job fails with QUEUE_UNAVAILABLE (completed fragments stay committed). @default 300000 */
  redisOutageMs?: number;
}

export interface ResolvedBackfillOptions {
  readonly concurrency: number;
  readonly intraApplierConcurrency: number;
  readonly checkpointSize: number;
  readonly maxCheckpointSize: number;
  /** undefined: derive from the table size at plan time. */
  readonly taskSize: number | undefined;
  readonly commitGranularity: number | undefined;
  readonly writerConcurrency: number;
  readonly statusIntervalMs: number;
  readonly errorPolicy: ErrorPolicy | undefined;
  readonly taskTimeoutMs: number;
  readonly workerMemoryMb: number | undefined;
  readonly commitMode: "auto" | "graft" | "merge";
  readonly where: string | undefined;
  readonly numFrags: number | undefined;
  readonly planOnly: boolean;
  readonly maxTaskAttempts: number;
  readonly executor: "local" | Readonly<QueueExecutorSpec>;
  /** Whether `concurrency` was given (distributed mode otherwise sizes it from the live workers). */
  readonly concurrencyGiven: boolean;
  readonly env: Readonly<Record<string, string>>;
  readonly onProgress: ((p: BackfillProgress) => void) | undefined;
  readonly logger: Logger | undefined;
}

const KNOWN = new Set([
  "concurrency", "intraApplierConcurrency", "checkpointSize", "maxCheckpointSize", "taskSize",
  "commitGranularity", "writerConcurrency", "statusIntervalMs", "errorPolicy", "taskTimeoutMs", "workerMemoryMb", "commitMode", "where", "numFrags", "planOnly", "maxTaskAttempts", "executor", "env", "onProgress", "logger",
]);

function posInt(o: Record<string, unknown>, name: string, max = 2 ** 31): number | undefined {
  const v = o[name];
  if (v === undefined) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1 || v > max) {
    throw new ConfigError("CONFIG_INVALID", `options.${name} must be a positive integer${max < 2 ** 31 ? ` no larger than ${max}` : ""} (got ${JSON.stringify(v) ?? String(v)})`);
  }
  return v;
}

function commitMode(v: unknown): "auto" | "graft" | "merge" {
  if (v === undefined) return "auto";
  if (v === "auto" || v === "graft" || v === "merge") return v;
  throw new ConfigError("CONFIG_INVALID", `options.commitMode must be "auto", "graft" or "merge" (got ${JSON.stringify(v)})`);
}

function executorOption(v: unknown): "local" | QueueExecutorSpec {
  if (v === undefined || v === "local") return "local";
  const bad = (why: string): never => {
    throw new ConfigError("CONFIG_INVALID", `options.executor ${why}; pass "local" or { redis: "redis://HOST:PORT", queue?: NAME, admissionTimeoutMs?: N, redisOutageMs?: N }`);
  };
  if (typeof v !== "object" || v === null) return bad(`must be "local" or an object (got ${JSON.stringify(v)})`);
  const e = v as Record<string, unknown>;
  for (const k of Object.keys(e)) if (!["redis", "queue", "admissionTimeoutMs", "redisOutageMs"].includes(k)) bad(`has an unknown key ${k}`);
  if (typeof e.redis !== "string" || !/^rediss?:\/\/./.test(e.redis)) bad(`.redis must be a Redis URL such as redis://127.0.0.1:6379 or redis://:PASSWORD@HOST:6379 (got ${JSON.stringify(typeof e.redis === "string" ? redactRedisUrl(e.redis) : e.redis)})`);
  if (e.queue !== undefined && (typeof e.queue !== "string" || !/^[A-Za-z0-9_.-]{1,100}$/.test(e.queue))) bad(`.queue must be letters, digits, '.', '_' or '-' (got ${JSON.stringify(e.queue)})`);
  if (e.admissionTimeoutMs !== undefined && (typeof e.admissionTimeoutMs !== "number" || !Number.isInteger(e.admissionTimeoutMs) || e.admissionTimeoutMs < 0)) bad(`.admissionTimeoutMs must be an integer >= 0 (got ${JSON.stringify(e.admissionTimeoutMs)})`);
  if (e.redisOutageMs !== undefined && (typeof e.redisOutageMs !== "number" || !Number.isInteger(e.redisOutageMs) || e.redisOutageMs < 1)) bad(`.redisOutageMs must be a positive integer (got ${JSON.stringify(e.redisOutageMs)})`);
  return Object.freeze({ ...(e as unknown as QueueExecutorSpec) });
}

function envOption(v: unknown): Readonly<Record<string, string>> {
  // Names that change how Node or the loader starts (NODE_OPTIONS, LD_PRELOAD, …) are refused: see exec/env.ts.
  return checkUdfEnv(v, "options.env");
}

/** Validates options and applies defaults. @throws ConfigError naming the option and the value. */
export function resolveBackfillOptions(options: BackfillOptions = {}): ResolvedBackfillOptions {
  if (typeof options !== "object" || options === null) throw new ConfigError("CONFIG_INVALID", `options must be an object (got ${String(options)})`);
  checkFailpoints();
  const o = options as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!KNOWN.has(k)) throw new ConfigError("CONFIG_INVALID", `options.${k} is not a backfill option; known options are ${[...KNOWN].join(", ")}`);
  }
  const executor = executorOption(o.executor);
  const concurrencyGiven = o.concurrency !== undefined;
  // Distributed: tasks run on other machines, so this machine's cores do not bound them (the
  // coordinator raises it to the live workers' slots when not given).
  const concurrency = posInt(o, "concurrency", 1024) ?? (executor === "local" ? Math.max(1, Math.min(8, availableParallelism())) : 8);
  const intra = posInt(o, "intraApplierConcurrency", 4096) ?? 1;
  const cs = posInt(o, "checkpointSize");
  const maxCs = posInt(o, "maxCheckpointSize");
  // Batches of at least 8 × the calls in flight, so an async UDF's window does not drain at every batch end.
  const checkpointSize = cs ?? Math.min(Math.max(100, 8 * intra), maxCs ?? Infinity);
  const maxCheckpointSize = maxCs ?? cs ?? 65536;
  if (maxCheckpointSize < checkpointSize) {
    throw new ConfigError("CONFIG_INVALID", `options.maxCheckpointSize (${maxCheckpointSize}) must be at least options.checkpointSize (${checkpointSize})`);
  }
  const where = o.where;
  if (where !== undefined && (typeof where !== "string" || where.trim().length === 0)) {
    throw new ConfigError("CONFIG_INVALID", `options.where must be a non-empty SQL filter string (got ${JSON.stringify(where)})`);
  }
  if (o.planOnly !== undefined && typeof o.planOnly !== "boolean") throw new ConfigError("CONFIG_INVALID", `options.planOnly must be a boolean (got ${JSON.stringify(o.planOnly)})`);
  if (o.onProgress !== undefined && typeof o.onProgress !== "function") throw new ConfigError("CONFIG_INVALID", "options.onProgress must be a function");
  return Object.freeze({
    concurrency,
    intraApplierConcurrency: intra,
    checkpointSize,
    maxCheckpointSize,
    taskSize: posInt(o, "taskSize"),
    commitGranularity: posInt(o, "commitGranularity"),
    writerConcurrency: posInt(o, "writerConcurrency", 64) ?? Math.min(4, concurrency),
    statusIntervalMs: posInt(o, "statusIntervalMs", 3_600_000) ?? 2000,
    errorPolicy: o.errorPolicy === undefined ? undefined : resolveErrorPolicy(o.errorPolicy, "options.errorPolicy"),
    taskTimeoutMs: posInt(o, "taskTimeoutMs", 7 * 24 * 3_600_000) ?? 1_800_000,
    workerMemoryMb: posInt(o, "workerMemoryMb", 1_048_576),
    commitMode: commitMode(o.commitMode),
    where: where === undefined ? undefined : (where as string).trim(),
    numFrags: posInt(o, "numFrags"),
    planOnly: o.planOnly === true,
    maxTaskAttempts: posInt(o, "maxTaskAttempts", 100) ?? 3,
    executor,
    concurrencyGiven,
    env: envOption(o.env),
    onProgress: options.onProgress,
    logger: options.logger,
  });
}
