/** `lancet worker` (a long-running queue worker) and `lancet workers` (the live ones). */
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
    const worker = await LancetWorker.start({
      redis: redisUrl(values),
      queue: queueOpt(values),
      ...(concurrency !== undefined ? { concurrency } : {}),
      ...(typeof values.resources === "string" ? { resources: parseResources(values.resources, "--resources") } : {}),
      ...(port !== undefined ? { metricsPort: port } : {}),
      ...(exitWhenIdleMs !== undefined ? { exitWhenIdleMs } : {}),
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
