/** `lancet worker` (a long-running queue worker) and `lancet workers` (the live ones). */
import * as path from "node:path";
import { parseArgs } from "node:util";
import { connectionFor, DEFAULT_QUEUE, checkQueueBase, formatResources, parseResources } from "../exec/bullmq/queue.ts";
import { withRedis } from "../exec/bullmq/executor.ts";
import { listWorkers } from "../exec/bullmq/registry.ts";
import { LancetWorker } from "../exec/bullmq/worker.ts";
import { stderrLogger } from "../log.ts";
import { flagOrEnv, intOpt, report, UsageError, type CliIo } from "./shared.ts";

function redisUrl(values: Record<string, unknown>): string {
  const url = flagOrEnv(values, "redis", "LANCET_REDIS_URL");
  if (!url) throw new UsageError("--redis URL is required (or set LANCET_REDIS_URL)");
  return url;
}

/** A repeatable flag's values, each split on `sep`, else the environment variable's; undefined when neither is set. */
function listOpt(flag: unknown, env: string | undefined, sep: string): string[] | undefined {
  const raw = Array.isArray(flag) && flag.length > 0 ? (flag as string[]) : env ? [env] : undefined;
  return raw?.flatMap((v) => v.split(sep)).map((v) => v.trim()).filter(Boolean);
}

function queueOpt(values: Record<string, unknown>): string {
  return checkQueueBase(flagOrEnv(values, "queue", "LANCET_QUEUE") ?? DEFAULT_QUEUE, "--queue");
}

/** Runs until SIGTERM or SIGINT, then finishes its running tasks and exits 0. */
export async function workerCommand(args: readonly string[], io: CliIo): Promise<number> {
  try {
    const values = parseArgs({
      args: [...args],
      options: {
        redis: { type: "string" },
        queue: { type: "string" },
        concurrency: { type: "string" },
        resources: { type: "string" },
        "metrics-port": { type: "string" },
        "lock-duration-ms": { type: "string" },
        "stalled-interval-ms": { type: "string" },
        "max-stalled-count": { type: "string" },
        "exit-when-idle-ms": { type: "string" },
        "allow-db": { type: "string", multiple: true },
        "pass-env": { type: "string", multiple: true },
        verbose: { type: "boolean" },
      },
      strict: true,
    }).values as Record<string, unknown>;
    const positive = (name: string): number | undefined => {
      const v = intOpt(values, name);
      if (v !== undefined && v < 1) throw new UsageError(`--${name} must be at least 1 (got ${v})`);
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
    const port = intOpt(values, "metrics-port");
    // --allow-db DIR (repeatable, or LANCET_ALLOW_DB=DIR:DIR): databases this worker serves.
    const allowDb = listOpt(values["allow-db"], process.env.LANCET_ALLOW_DB, path.delimiter);
    // --pass-env NAME[,NAME] (repeatable): variables of this worker's environment its UDFs get too.
    const passEnv = listOpt(values["pass-env"], undefined, ",");
    for (const n of passEnv ?? []) if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(n)) throw new UsageError(`--pass-env: ${JSON.stringify(n)} is not an environment variable name`);
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
    await new Promise<void>((resolve) => {
      let signalled = false;
      const stop = (sig: string): void => {
        signalled = true;
        io.stderr.write(`lancet worker: ${sig}: finishing running tasks, then exiting\n`);
        process.off("SIGTERM", onTerm);
        process.off("SIGINT", onInt);
        void worker.close().then(() => {
          // Redis clients still reconnecting (Redis gone) would keep the process alive: the work is done.
          setTimeout(() => process.exit(0), 500).unref();
          resolve();
        });
      };
      const onTerm = (): void => stop("SIGTERM");
      const onInt = (): void => stop("SIGINT");
      process.on("SIGTERM", onTerm);
      process.on("SIGINT", onInt);
      // --exit-when-idle-ms: the worker stops by itself.
      void worker.closed.then(() => {
        if (signalled) return;
        process.off("SIGTERM", onTerm);
        process.off("SIGINT", onInt);
        io.stderr.write("lancet worker: idle, exiting\n");
        setTimeout(() => process.exit(0), 500).unref();
        resolve();
      });
    });
    return 0;
  } catch (e) {
    return report(e, io, false);
  }
}

export async function workersCommand(args: readonly string[], io: CliIo): Promise<number> {
  let json = false;
  try {
    const values = parseArgs({ args: [...args], options: { redis: { type: "string" }, queue: { type: "string" }, json: { type: "boolean" } }, strict: true }).values as Record<string, unknown>;
    json = values.json === true;
    const url = redisUrl(values);
    connectionFor(url, "--redis"); // a clear error for a malformed URL
    const workers = await withRedis(url, {}, (redis) => listWorkers(redis, queueOpt(values)));
    if (json) io.stdout.write(JSON.stringify(workers) + "\n");
    else if (workers.length === 0) io.stdout.write(`no live workers on queue ${queueOpt(values)}\n`);
    else for (const w of workers) io.stdout.write(`${w.id}  ${w.resourceClass}  resources ${formatResources(w.resources)}  running ${w.active}/${w.concurrency}  since ${w.startedAt}\n`);
    return 0;
  } catch (e) {
    return report(e, io, json);
  }
}
