/**
 * `lancet console`: a small web app over a database's jobs, errors, tables, views and (with Redis)
 * live workers. A Hono app on Node's HTTP server: a JSON API under `/api`, Server-Sent Events for
 * live jobs, and the static page (`assets/`, plus uPlot from its package).
 *
 * Access: it binds to loopback unless a token is set (the CLI refuses otherwise); with a token every
 * request carries it (`Authorization: Bearer T` or `?token=T`), compared in constant time. Without a
 * token, requests must name a loopback host (DNS rebinding). POSTs from another origin are refused.
 */
import { createHash, randomUUID, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { Hono, type Context } from "hono";
import { getCookie, setCookie } from "hono/cookie";
import { streamSSE, type SSEStreamingApi } from "hono/streaming";
import { ConfigError, isBackfillError } from "../errors.ts";
import { cancelJob, listJobs } from "../jobs/api.ts";
import type { JobRecord, JobStatus } from "../jobs/record.ts";
import { silentLogger, type Logger } from "../log.ts";
import { resolveTable } from "../table.ts";
import { listViews } from "../views/view.ts";
import { dbLocation } from "../storage/location.ts";
import { jobDetail, tableEntry, tableNames, workersAndQueues } from "./data.ts";

export interface ConsoleOptions {
  /** The database: a directory or `s3://bucket/prefix` (storage options registered beforehand). */
  readonly db: string;
  /** Redis URL of distributed mode: enables the workers page. @default none */
  readonly redis?: string;
  /** Base queue name. @default "lancet" */
  readonly queue?: string;
  /** @default 4300; 0 picks a free port */
  readonly port?: number;
  /** @default "127.0.0.1" */
  readonly host?: string;
  /** Every request must carry it. @default none (loopback only) */
  readonly token?: string;
  /** How often live streams poll the jobs table. @default 1000 */
  readonly pollMs?: number;
  /** Comments that keep idle streams open. @default 15000 */
  readonly pingMs?: number;
  /** @default silent */
  readonly logger?: Logger;
}

/** A running console: its address, and `close()` (idempotent: ends streams, stops polling, closes the server). */
export interface ConsoleServer extends AsyncDisposable {
  /** `http://HOST:PORT/`, without the token. */
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

/** An API failure: HTTP status, a stable code, what happened and what to do. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly hint: string;
  constructor(status: number, code: string, message: string, hint: string) {
    super(message);
    this.status = status;
    this.code = code;
    this.hint = hint;
  }
}

const STATUSES: readonly JobStatus[] = ["pending", "running", "finished", "failed", "cancelled"];
const LOOPBACK_NAMES = new Set(["localhost", "127.0.0.1", "::1", "[::1]"]);

/** Whether a host name or address is a loopback one (`localhost`, 127.0.0.0/8, ::1). */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase();
  return LOOPBACK_NAMES.has(h) || /^127(\.\d{1,3}){3}$/.test(h) || h.endsWith(".localhost");
}

const ASSETS = fileURLToPath(new URL("./assets/", import.meta.url));
const UPLOT_DIST = path.join(path.dirname(createRequire(import.meta.url).resolve("uplot/package.json")), "dist");
const STATIC: Record<string, { file: string; type: string }> = {
  "/assets/app.js": { file: path.join(ASSETS, "app.js"), type: "text/javascript; charset=utf-8" },
  "/assets/style.css": { file: path.join(ASSETS, "style.css"), type: "text/css; charset=utf-8" },
  "/vendor/uPlot.esm.js": { file: path.join(UPLOT_DIST, "uPlot.esm.js"), type: "text/javascript; charset=utf-8" },
  "/vendor/uPlot.min.css": { file: path.join(UPLOT_DIST, "uPlot.min.css"), type: "text/css; charset=utf-8" },
};

function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }).version;
  } catch {
    return "unknown";
  }
}

/** Any failure as an ApiError: Lancet's codes keep their message; anything else is INTERNAL. */
function toApiError(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  const message = ((e as Error)?.message ?? String(e)).split(/\n|\s+Caused by:/)[0]!;
  if (isBackfillError(e)) {
    switch (e.code) {
      case "JOB_NOT_FOUND":
        return new ApiError(404, e.code, message, "check the job id; the jobs page lists every job of this database");
      case "TABLE_NOT_FOUND":
        return new ApiError(404, e.code, message, "the table does not exist (or was dropped); the tables page lists the tables there are");
      case "DB_NOT_FOUND":
        return new ApiError(404, e.code, message, "the database directory is gone; restart the console with --db pointing at it");
      case "QUEUE_UNAVAILABLE":
      case "STORAGE_UNREACHABLE":
      case "STORAGE_FAILED":
        return new ApiError(503, e.code, message, "check that the server is up and reachable from the console's machine, then reload");
      case "CONFIG_INVALID":
        return new ApiError(400, e.code, message, "fix the request");
      default:
        return new ApiError(500, e.code, message, "see the console's stderr for details; reload to retry");
    }
  }
  return new ApiError(500, "INTERNAL", message, "see the console's stderr for details; reload to retry");
}

function errorBody(e: ApiError): { error: { code: string; message: string; hint: string } } {
  return { error: { code: e.code, message: e.message, hint: e.hint } };
}

/** A job list's fingerprint for change detection: everything but the heartbeat. */
function jobsSignature(jobs: readonly JobRecord[]): string {
  return JSON.stringify(jobs.map(({ heartbeatAt: _h, ...rest }) => rest));
}

type Send = (event: string, data: string) => void;

/**
 * Polled topics shared by every stream that follows them: one poll per topic per interval however
 * many clients listen, none while nobody does. A new listener gets the last value at once.
 */
class Hub {
  readonly #topics = new Map<string, { subs: Set<Send>; fetch: () => Promise<{ event: string; data: string; sig: string }>; last?: { event: string; data: string; sig: string }; timer?: NodeJS.Timeout; polling: boolean }>();
  readonly #pollMs: number;
  readonly #log: Logger;
  #closed = false;

  constructor(pollMs: number, log: Logger) {
    this.#pollMs = pollMs;
    this.#log = log;
  }

  /** Listens to `key` (fetched by `fetch` while anyone listens); returns the unsubscribe function. */
  subscribe(key: string, fetch: () => Promise<{ event: string; data: string; sig: string }>, send: Send): () => void {
    let topic = this.#topics.get(key);
    if (!topic) this.#topics.set(key, (topic = { subs: new Set(), fetch, polling: false }));
    topic.subs.add(send);
    if (topic.last) send(topic.last.event, topic.last.data);
    if (topic.subs.size === 1) this.#log.debug(`console: polling ${key} for its first listener`);
    if (!topic.polling && topic.timer === undefined) void this.#poll(key);
    return () => {
      const t = this.#topics.get(key);
      if (!t) return;
      t.subs.delete(send);
      if (t.subs.size === 0) {
        clearTimeout(t.timer);
        this.#topics.delete(key);
        this.#log.debug(`console: stopped polling ${key}: no one listens`);
      }
    };
  }

  async #poll(key: string): Promise<void> {
    const topic = this.#topics.get(key);
    if (!topic || this.#closed) return;
    topic.polling = true;
    let value: { event: string; data: string; sig: string };
    try {
      value = await topic.fetch();
    } catch (e) {
      const err = toApiError(e);
      if (err.status >= 500) this.#log.warn(`console: polling ${key} failed: ${err.message}`);
      const data = JSON.stringify(errorBody(err));
      value = { event: "failure", data, sig: data };
    }
    topic.polling = false;
    if (this.#topics.get(key) !== topic || this.#closed) return; // everyone left meanwhile
    if (topic.last?.sig !== value.sig) {
      topic.last = value;
      for (const s of topic.subs) s(value.event, value.data);
    }
    topic.timer = setTimeout(() => void this.#poll(key), this.#pollMs);
  }

  close(): void {
    this.#closed = true;
    for (const t of this.#topics.values()) clearTimeout(t.timer);
    this.#topics.clear();
  }
}

/** The HTML page, with the token (when the page was opened with one) carried into its asset URLs. */
async function indexHtml(tokenQuery: string): Promise<string> {
  const html = await readFile(path.join(ASSETS, "index.html"), "utf8");
  return html.replaceAll("__TOKEN_QUERY__", tokenQuery);
}

const UNAUTHORIZED_HTML = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Lancet console: unauthorized</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em;color:#1f2933}code{background:#eef2f6;padding:0 .3em;border-radius:3px}</style></head>
<body data-testid="error"><h1>401: this console needs its token</h1>
<p>The console was started with a token, and this request did not carry the right one.</p>
<p>Open the URL <code>lancet console</code> printed (it ends in <code>?token=…</code>), or send the header <code>Authorization: Bearer TOKEN</code>.</p></body></html>`;

/**
 * Starts the console. Resolves once it listens.
 * @throws when the port is taken or the host cannot be bound (the listen error)
 */
export async function startConsole(options: ConsoleOptions): Promise<ConsoleServer> {
  const db = options.db;
  const log = options.logger ?? silentLogger;
  const host = options.host ?? "127.0.0.1";
  const token = options.token !== undefined && options.token !== "" ? options.token : undefined;
  const tokenDigest = token === undefined ? undefined : createHash("sha256").update(token).digest();
  const queue = options.queue ?? "lancet";
  const version = packageVersion();
  const hub = new Hub(options.pollMs ?? 1000, log);
  const pingMs = options.pingMs ?? 15_000;
  /** Ends every open stream (on close). */
  const streamEnders = new Set<() => void>();

  /** The page's session cookie (HttpOnly, SameSite=Strict): set when the page is opened with the right ?token=, named per console run. */
  const cookieName = `lancet_console_${randomUUID().slice(0, 8)}`;
  const tokenOk = (given: string | undefined): boolean => {
    if (tokenDigest === undefined) return true;
    if (given === undefined) return false;
    return timingSafeEqual(createHash("sha256").update(given).digest(), tokenDigest);
  };

  const app = new Hono();

  app.onError((e, c) => {
    const err = toApiError(e);
    if (err.status >= 500) log.error(`console: ${c.req.method} ${c.req.path}: ${(e as Error)?.stack ?? String(e)}`);
    return c.json(errorBody(err), err.status as 400);
  });
  app.notFound((c) => c.json(errorBody(new ApiError(404, "NOT_FOUND", `no such path ${c.req.path}`, "the API is under /api: health, jobs, jobs/ID, tables, tables/NAME, views, workers, stream")), 404));

  // Every answer: no framing (the cancel button cannot be clickjacked), only the console's own scripts,
  // no Referer (a URL can carry the token).
  app.use("*", async (c, next) => {
    await next();
    c.header("content-security-policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'");
    c.header("x-frame-options", "DENY");
    c.header("x-content-type-options", "nosniff");
    c.header("referrer-policy", "no-referrer");
    // The page can carry the token in its URL, and the API answers with live data: neither is cached.
    if (c.req.path === "/" || c.req.path.startsWith("/api/")) c.header("cache-control", "no-store");
  });

  // Access: the Host a browser sent (DNS rebinding), the token, and the Origin of writes (CSRF).
  app.use("*", async (c, next) => {
    const api = c.req.path.startsWith("/api/");
    const hostHeader = c.req.header("host") ?? "";
    const hostName = hostHeader.replace(/:\d+$/, "");
    if (token === undefined && !isLoopback(hostName) && hostName !== host) {
      const e = new ApiError(403, "FORBIDDEN_HOST", `requests to host ${JSON.stringify(hostHeader)} are refused: this console serves loopback only`, "open it at 127.0.0.1 or localhost, or restart it with --token to serve other hosts");
      return c.json(errorBody(e), 403);
    }
    const auth = c.req.header("authorization");
    const bearer = auth !== undefined && /^Bearer /i.test(auth) ? auth.slice(7).trim() : undefined;
    if (!tokenOk(bearer ?? c.req.query("token") ?? getCookie(c, cookieName))) {
      if (!api && (c.req.path === "/" || c.req.path === "/index.html")) return c.html(UNAUTHORIZED_HTML, 401);
      const e = new ApiError(401, "UNAUTHORIZED", "this console needs its token, and the request did not carry the right one", "open the URL `lancet console` printed (with ?token=…), or send the header Authorization: Bearer TOKEN");
      return c.json(errorBody(e), 401);
    }
    if (c.req.method !== "GET" && c.req.method !== "HEAD") {
      // Same host and port as the request (http, or https behind a TLS proxy); "null" and garbage refused.
      const origin = c.req.header("origin");
      if (origin !== undefined && originHost(origin) !== hostHeader.toLowerCase()) {
        const e = new ApiError(403, "FORBIDDEN_ORIGIN", `a ${c.req.method} from origin ${origin} is refused: only the console's own page (http://${hostHeader}) may change anything`, "use the console's page, or send the request without an Origin header (curl, scripts)");
        return c.json(errorBody(e), 403);
      }
    }
    await next();
  });

  app.get("/", async (c) => {
    const t = c.req.query("token");
    // The page then drops the token from its address (history, screen shares); reloads carry the cookie.
    if (token !== undefined && t !== undefined) setCookie(c, cookieName, t, { httpOnly: true, sameSite: "Strict", path: "/" });
    return c.html(await indexHtml(t !== undefined ? `?token=${encodeURIComponent(t)}` : ""));
  });
  app.get("/index.html", (c) => c.redirect(`/${new URL(c.req.url).search}`));
  for (const [route, { file, type }] of Object.entries(STATIC)) {
    app.get(route, async (c) => c.body(await readFile(file), 200, { "content-type": type, "cache-control": "no-cache" }));
  }

  app.get("/api/health", (c) => c.json({ ok: true, db: dbLocation(db), redis: options.redis !== undefined, version }));

  const jobFilter = (c: Context): { table?: string; status?: JobStatus } => {
    const status = c.req.query("status");
    const table = c.req.query("table");
    if (status !== undefined && status !== "" && !STATUSES.includes(status as JobStatus)) {
      throw new ApiError(400, "INVALID_STATUS", `status must be one of ${STATUSES.join(", ")} (got ${JSON.stringify(status)})`, "leave status out to list every job");
    }
    return { ...(table ? { table } : {}), ...(status ? { status: status as JobStatus } : {}) };
  };

  app.get("/api/jobs", async (c) => c.json({ jobs: await listJobs(db, jobFilter(c)) }));
  app.get("/api/jobs/:id", async (c) => c.json(await jobDetail(db, c.req.param("id"))));
  app.post("/api/jobs/:id/cancel", async (c) => {
    // cancelJob refuses a job that already ended (CONFIG_INVALID, "already ended"): a 409 here. It waits
    // (a while) for the job to stop; a job still stopping comes back running, and the page follows it live.
    try {
      return c.json({ job: await cancelJob(db, c.req.param("id"), { timeoutMs: 20_000 }) });
    } catch (e) {
      if (isBackfillError(e, "CONFIG_INVALID") && /already ended/.test((e as Error).message)) throw new ApiError(409, "JOB_ENDED", (e as Error).message, "only a pending or running job can be cancelled");
      throw e;
    }
  });

  const tableNotFoundOnFailure = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (e) {
      // A table dropped mid-request fails inside LanceDB: say what happened. (On object storage
      // resolveTable cannot tell a missing table, so the database's table list decides.)
      if (!isBackfillError(e)) {
        resolveTable({ db, table: name });
        if (!(await tableNames(db)).includes(name)) throw new ConfigError("TABLE_NOT_FOUND", `table ${name} does not exist in ${dbLocation(db)} (dropped while the console read it)`, { table: name });
      }
      throw e;
    }
  };
  app.get("/api/tables", async (c) => {
    const tables = [];
    for (const name of await tableNames(db)) {
      try {
        tables.push(await tableNotFoundOnFailure(name, () => tableEntry(db, name)));
      } catch (e) {
        if (isBackfillError(e, "TABLE_NOT_FOUND")) continue; // dropped while we listed
        throw e;
      }
    }
    return c.json({ tables });
  });
  app.get("/api/tables/:name", async (c) => {
    const name = c.req.param("name");
    if (name.startsWith("_lancet")) throw new ApiError(404, "TABLE_NOT_FOUND", `${name} is one of Lancet's system tables, not a table of yours`, "its contents are on the jobs page (jobs, errors)");
    return c.json(await tableNotFoundOnFailure(name, () => tableEntry(db, name)));
  });
  app.get("/api/views", async (c) => c.json({ views: await listViews(db) }));
  app.get("/api/workers", async (c) => {
    if (options.redis === undefined) throw new ApiError(409, "NO_REDIS", "this console was started without Redis, so it cannot see workers or queues", "start the console with --redis URL (and --queue NAME when not the default)");
    return c.json(await workersAndQueues(options.redis, queue));
  });

  /** An SSE response following a hub topic until the client leaves or the console closes. */
  const follow = (c: Context, key: string, fetch: () => Promise<{ event: string; data: string; sig: string }>): Response =>
    streamSSE(c, async (stream: SSEStreamingApi) => {
      let end!: () => void;
      const ended = new Promise<void>((r) => (end = r));
      streamEnders.add(end);
      stream.onAbort(end);
      const send: Send = (event, data) => void stream.writeSSE({ event, data }).catch(end);
      const unsubscribe = hub.subscribe(key, fetch, send);
      const ping = setInterval(() => void stream.write(": ping\n\n").catch(end), pingMs);
      try {
        await ended;
      } finally {
        clearInterval(ping);
        unsubscribe();
        streamEnders.delete(end);
      }
    });

  app.get("/api/stream", (c) => {
    const filter = jobFilter(c);
    return follow(c, `jobs ${JSON.stringify(filter)}`, async () => {
      const jobs = await listJobs(db, filter);
      return { event: "jobs", data: JSON.stringify({ jobs }), sig: jobsSignature(jobs) };
    });
  });
  app.get("/api/jobs/:id/stream", (c) => {
    const id = c.req.param("id");
    return follow(c, `job ${id}`, async () => {
      const d = await jobDetail(db, id);
      const { heartbeatAt: _h, ...rest } = d.job;
      return { event: "job", data: JSON.stringify(d), sig: JSON.stringify([rest, d.errorsTotal, d.diagnosis]) };
    });
  });

  const server = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
    const s = serve({ fetch: app.fetch, port: options.port ?? 4300, hostname: host }, () => resolve(s));
    s.once("error", reject);
  });
  server.on("error", (e) => log.error(`console: server error: ${e.message}`));
  const port = (server.address() as AddressInfo).port;
  const shownHost = host.includes(":") ? `[${host}]` : host;
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      hub.close();
      for (const end of [...streamEnders]) end();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Keep-alive and streaming connections would hold close() open.
        const s = server as { closeAllConnections?: () => void };
        setTimeout(() => s.closeAllConnections?.(), 200).unref();
      });
    })());
  return { url: `http://${shownHost}:${port}/`, port, close, [Symbol.asyncDispose]: close };
}

/** The `host[:port]` of an Origin header, lower-case, or undefined when it is not an http(s) origin. */
function originHost(origin: string): string | undefined {
  try {
    const u = new URL(origin);
    return u.protocol === "http:" || u.protocol === "https:" ? u.host.toLowerCase() : undefined;
  } catch {
    return undefined;
  }
}
