/** `lancet worker` (a long-running queue worker) and `lancet workers` (the live ones). */
import { useDefaultStorage } from "../storage/location.ts";
import * as path from "node:path";
import { connectionFor, DEFAULT_QUEUE, checkQueueBase, formatResources, parseResources } from "../exec/bullmq/queue.ts";
import { withRedis } from "../exec/bullmq/executor.ts";
import { listWorkers } from "../exec/bullmq/registry.ts";
import { LancetWorker } from "../exec/bullmq/worker.ts";
import { stderrLogger } from "../log.ts";
import { flagOrEnv, formatHelp, intOpt, JSON_FLAG, parseFlags, report, storageOptionFlags, untilSignal, UsageError, type CliIo, type CommandSpec, type FlagValues } from "./shared.ts";

const REDIS = { name: "redis", type: "string", value: "URL", option: "redis", help: "the Redis the queue lives on", default: "$LANCET_REDIS_URL" } as const;
const QUEUE = { name: "queue", type: "string", value: "NAME", option: "queue", help: "base queue name (tasks come from NAME-cpu or NAME-gpu)", default: "$LANCET_QUEUE, else lancet" } as const;

/** `lancet worker`. */
export const WORKER: CommandSpec = {
  name: "worker",
  summary: "take backfill tasks from a BullMQ queue on Redis until SIGTERM or SIGINT (then finish running tasks, exit 0)",
  synopsis: "--redis URL [--queue NAME] [--concurrency N] [--resources cpu=4,gpu=1,memory=MiB] [options]",
  flags: [
    REDIS,
    QUEUE,
    { name: "concurrency", type: "string", value: "N", integer: true, option: "concurrency", help: "tasks run at once", default: "cores; with gpu=G in --resources, G" },
    { name: "resources", type: "string", value: "SPEC", option: "resources", help: "what this machine offers, e.g. cpu=4,gpu=1,memory=16384 (MiB)", default: "cpu=cores" },
    { name: "metrics-port", type: "string", value: "P", integer: true, option: "metricsPort", help: "serve Prometheus metrics on :P/metrics", default: "none" },
    { name: "lock-duration-ms", type: "string", value: "N", integer: true, option: "lockDurationMs", help: "BullMQ job lock duration", default: "30000" },
    { name: "stalled-interval-ms", type: "string", value: "N", integer: true, option: "stalledIntervalMs", help: "how often stalled tasks are looked for", default: "5000" },
    { name: "max-stalled-count", type: "string", value: "N", integer: true, option: "maxStalledCount", help: "stalls before a task fails", default: "3" },
    { name: "exit-when-idle-ms", type: "string", value: "N", integer: true, option: "exitWhenIdleMs", help: "exit after N ms without tasks", default: "never" },
    { name: "allow-db", type: "string", value: "DIR|URI", multiple: true, option: "allowedDbDirs", help: "serve only databases under DIR (or s3://bucket/prefix)", default: "$LANCET_ALLOW_DB (DIR:DIR), else any" },
    { name: "storage-option", type: "string", value: "KEY=VALUE", multiple: true, help: "for databases on object storage: a LanceDB storage option (endpoint, region, access_key_id, secret_access_key, …)", default: "from AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY" },
    { name: "pass-env", type: "string", value: "NAME[,NAME]", multiple: true, option: "passEnv", help: "variables of this worker's environment its UDFs get too", default: "none" },
    { name: "verbose", type: "boolean", help: "debug logging" },
  ],
  example: "worker --redis redis://10.0.0.5:6379 --resources cpu=8 --metrics-port 9464",
};

/** `lancet workers`. */
export const WORKERS: CommandSpec = {
  name: "workers",
  summary: "list the live workers of a queue with their resources and load",
  synopsis: "--redis URL [--queue NAME] [--json]",
  flags: [REDIS, QUEUE, JSON_FLAG],
  example: "workers --redis redis://10.0.0.5:6379",
};

function redisUrl(values: FlagValues): string {
  const url = flagOrEnv(values, "redis", "LANCET_REDIS_URL");
  if (!url) throw new UsageError("--redis URL is required (or set LANCET_REDIS_URL)");
  return url;
}

/** A repeatable flag's values, each split on `sep`, else the environment variable's; undefined when neither is set. */
function listOpt(flag: unknown, env: string | undefined, sep: string | RegExp): string[] | undefined {
  const raw = Array.isArray(flag) && flag.length > 0 ? (flag as string[]) : env ? [env] : undefined;
  return raw?.flatMap((v) => v.split(sep)).map((v) => v.trim()).filter(Boolean);
}

function queueOpt(values: FlagValues): string {
  return checkQueueBase(flagOrEnv(values, "queue", "LANCET_QUEUE") ?? DEFAULT_QUEUE, "--queue");
}

/** Runs until SIGTERM or SIGINT, then finishes its running tasks and exits 0. */
export async function workerCommand(args: readonly string[], io: CliIo): Promise<number> {
  try {
    const { values, help } = parseFlags(WORKER, args);
    if (help) {
      io.stdout.write(formatHelp(WORKER));
      return 0;
    }
    const positive = (name: string): number | undefined => {
      const v = intOpt(values, name, WORKER.name);
      if (v !== undefined && v < 1) throw new UsageError(`--${name} must be at least 1 (got ${v})`, WORKER.name);
      return v;
    };
    const stall: Record<string, number> = {};
    const lock = positive("lock-duration-ms");
    const interval = positive("stalled-interval-ms");
    const maxStalled = positive("max-stalled-count");
    if (lock !== undefined) stall.lockDurationMs = lock;
    if (interval !== undefined) stall.stalledIntervalMs = interval;
    if (maxStalled !== undefined) stall.maxStalledCount = maxStalled;
    const concurrency = positive("concurrency");
    const exitWhenIdleMs = positive("exit-when-idle-ms");
    const port = intOpt(values, "metrics-port", WORKER.name);
    // --allow-db DIR (repeatable, or LANCET_ALLOW_DB=DIR:DIR): databases this worker serves.
    const allowDb = listOpt(values["allow-db"], process.env.LANCET_ALLOW_DB, path.delimiter === ":" ? /:(?!\/\/)/ : path.delimiter);
    // --storage-option KEY=VALUE (repeatable): how this worker reaches databases on object storage.
    useDefaultStorage(storageOptionFlags(values, WORKER.name));
    // --pass-env NAME[,NAME] (repeatable): variables of this worker's environment its UDFs get too.
    const passEnv = listOpt(values["pass-env"], undefined, ",");
    for (const n of passEnv ?? []) if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(n)) throw new UsageError(`--pass-env: ${JSON.stringify(n)} is not an environment variable name`, WORKER.name);
    const worker = await LancetWorker.start({
      redis: redisUrl(values),
      queue: queueOpt(values),
      ...(concurrency !== undefined ? { concurrency } : {}),
      ...(typeof values.resources === "string" ? { resources: parseResources(values.resources, "--resources") } : {}),
      ...(port !== undefined ? { metricsPort: port } : {}),
      ...(exitWhenIdleMs !== undefined ? { exitWhenIdleMs } : {}),
      ...(allowDb ? { allowedDbDirs: allowDb } : {}),
      ...(passEnv ? { passEnv } : {}),
      stall,
      logger: stderrLogger(values.verbose === true ? "debug" : "info"),
    });
    io.stderr.write(
      `lancet worker ${worker.id}: taking tasks from ${worker.queueName} (resources ${formatResources(worker.resources)}, concurrency ${worker.concurrency})` +
        (worker.metricsAddress !== undefined ? `, metrics on :${worker.metricsAddress}/metrics` : "") +
        "\n",
    );
    // Redis clients still reconnecting (Redis gone) would keep the process alive once the work is done.
    await untilSignal(io, {
      stopping: (sig) => `lancet worker: ${sig}: finishing running tasks, then exiting\n`,
      close: () => worker.close(),
      graceMs: 500,
      // --exit-when-idle-ms: the worker stops by itself.
      ended: { closed: worker.closed, message: "lancet worker: idle, exiting\n" },
    });
    return 0;
  } catch (e) {
    return report(e, io, { json: false, spec: WORKER });
  }
}

export async function workersCommand(args: readonly string[], io: CliIo): Promise<number> {
  const json = args.includes("--json");
  try {
    const { values, help } = parseFlags(WORKERS, args);
    if (help) {
      io.stdout.write(formatHelp(WORKERS));
      return 0;
    }
    const url = redisUrl(values);
    connectionFor(url, "--redis"); // a clear error for a malformed URL
    const workers = await withRedis(url, {}, (redis) => listWorkers(redis, queueOpt(values)));
    if (json) io.stdout.write(JSON.stringify(workers) + "\n");
    else if (workers.length === 0) io.stdout.write(`no live workers on queue ${queueOpt(values)}\n`);
    else for (const w of workers) io.stdout.write(`${w.id}  ${w.resourceClass}  resources ${formatResources(w.resources)}  running ${w.active}/${w.concurrency}  since ${w.startedAt}\n`);
    return 0;
  } catch (e) {
    return report(e, io, { json, spec: WORKERS });
  }
}
