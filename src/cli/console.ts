/** `lancet console`: serves the web console until SIGTERM or SIGINT. */
import { existsSync, statSync } from "node:fs";
import * as path from "node:path";
import { checkQueueBase, connectionFor, DEFAULT_QUEUE } from "../exec/bullmq/queue.ts";
import { stderrLogger } from "../log.ts";
import { isRemote } from "../storage/location.ts";
import { DB, flagOrEnv, formatHelp, intOpt, parseFlags, report, STORAGE_OPTION, untilSignal, UsageError, type CliIo, type CommandSpec } from "./shared.ts";

/** `lancet console`. */
export const CONSOLE: CommandSpec = {
  name: "console",
  summary: "serve a web console of jobs, errors, tables, views and (with --redis) workers, until SIGTERM or SIGINT",
  synopsis: "--db DIR [--redis URL] [--queue NAME] [--port 4300] [--host 127.0.0.1] [--token T]",
  flags: [
    DB,
    STORAGE_OPTION,
    { name: "redis", type: "string", value: "URL", help: "the Redis of distributed mode: shows live workers and queue counts", default: "$LANCET_REDIS_URL, else no workers page" },
    { name: "queue", type: "string", value: "NAME", help: "base queue name with --redis", default: "$LANCET_QUEUE, else lancet" },
    { name: "port", type: "string", value: "P", integer: true, help: "port to listen on (0: any free one)", default: "4300" },
    { name: "host", type: "string", value: "ADDR", help: "address to listen on; one that is not loopback needs --token", default: "127.0.0.1" },
    { name: "token", type: "string", value: "T", help: "every request must carry it (Authorization: Bearer T or ?token=T)", default: "$LANCET_CONSOLE_TOKEN, else none (loopback only)" },
    { name: "verbose", type: "boolean", help: "log every failed request to stderr" },
  ],
  notes:
    "Prints its URL (with ?token=… when a token is set) and serves until SIGTERM or SIGINT, then exits 0.\n" +
    "Pages: #/jobs (live), #/jobs/ID (metrics, chart, errors, cancel), #/tables, #/views, #/workers; the JSON API is under /api.",
  example: "console --db ./data --port 4300",
};

/** Runs until SIGTERM or SIGINT; 2 for a usage error (a missing database, a non-loopback --host without a token). */
export async function consoleCommand(args: readonly string[], io: CliIo): Promise<number> {
  try {
    const { values, help } = parseFlags(CONSOLE, args);
    if (help) {
      io.stdout.write(formatHelp(CONSOLE));
      return 0;
    }
    const db = values.db as string;
    if (!isRemote(db)) {
      const dir = path.resolve(db);
      if (!existsSync(dir)) throw new UsageError(`--db ${db}: database directory ${dir} does not exist; pass the directory you gave lancedb.connect() (or s3://bucket/prefix)`, CONSOLE.name);
      if (!statSync(dir).isDirectory()) throw new UsageError(`--db ${db}: ${dir} is a file, not a database directory; pass the directory you gave lancedb.connect()`, CONSOLE.name);
    }
    const port = intOpt(values, "port", CONSOLE.name) ?? 4300;
    if (port < 0 || port > 65535) throw new UsageError(`--port must be between 0 and 65535 (got ${port})`, CONSOLE.name);
    const host = typeof values.host === "string" ? values.host : "127.0.0.1";
    // Loaded here, not at the CLI's start: other commands need no HTTP server.
    const { isLoopback, startConsole } = await import("../console/server.ts");
    const token = flagOrEnv(values, "token", "LANCET_CONSOLE_TOKEN") || undefined;
    if (!isLoopback(host) && token === undefined) {
      throw new UsageError(`--host ${host} is not a loopback address: anyone who can reach it would see this database's jobs and could cancel them; set --token T (or LANCET_CONSOLE_TOKEN), or keep the default --host 127.0.0.1`, CONSOLE.name);
    }
    const redis = flagOrEnv(values, "redis", "LANCET_REDIS_URL") || undefined;
    if (redis !== undefined) connectionFor(redis, "--redis"); // a clear error for a malformed URL, now
    const queue = checkQueueBase(flagOrEnv(values, "queue", "LANCET_QUEUE") ?? DEFAULT_QUEUE, "--queue");
    const server = await startConsole({
      db,
      port,
      host,
      queue,
      ...(redis !== undefined ? { redis } : {}),
      ...(token !== undefined ? { token } : {}),
      logger: stderrLogger(values.verbose === true ? "debug" : "warn"),
    });
    io.stdout.write(`lancet console: ${server.url}${token !== undefined ? `?token=${encodeURIComponent(token)}` : ""}\n`);
    await untilSignal(io, { stopping: (sig) => `lancet console: ${sig}: closing\n`, close: () => server.close(), graceMs: 1000 });
    return 0;
  } catch (e) {
    const listen = e as NodeJS.ErrnoException;
    if (listen?.code === "EADDRINUSE") return report(new UsageError(`--port: ${listen.message}; pick another port (--port 0 picks a free one)`, CONSOLE.name), io, { json: false, spec: CONSOLE });
    return report(e, io, { json: false, spec: CONSOLE });
  }
}
