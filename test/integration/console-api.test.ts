/**
 * `lancet console`: a real console process (`bin/lancet.mjs console --port 0`) over real LanceDB
 * tables in a temporary database, asked over HTTP: health, jobs after a real backfill, a job's error
 * records from a skip policy, tables with their fill state and warnings, views, JSON errors for unknown
 * ids and a table dropped mid-run (the server keeps answering), SSE, the token and host rules, CSRF,
 * cancelling a backfill running in another process, workers on a real redis-server, and SIGTERM → 0.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { request } from "node:http";
import * as path from "node:path";
import { availableParallelism } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { addColumns, backfill, createView, LancetWorker, listJobs, silentLogger } from "../../src/index.ts";
import { lancedb } from "../../src/arrow.ts";
import { makeTable, REPO, rows, tempDb, udfRef, type TempDb } from "../helpers.ts";
import { RedisServer, requireRedisServer } from "../redis.ts";
import { freshBucket, requireS3, s3Server } from "../s3.ts";

const LANCET = path.join(REPO, "bin/lancet.mjs");
/** The environment of child processes: this one's without the test-only variables. */
const BASE_ENV = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("LANCET_TEST_") && k !== "LANCET_CONSOLE_TOKEN" && k !== "LANCET_REDIS_URL"));

interface ConsoleProc {
  readonly url: string;
  readonly child: ChildProcess;
  output(): string;
  /** SIGTERM; resolves with the exit code. */
  stop(): Promise<number | null>;
}

const running = new Set<ConsoleProc>();

/** Starts `lancet console … --port 0` and waits for the URL it prints. */
async function startConsole(args: string[], env: Record<string, string> = {}, base: Record<string, string | undefined> = BASE_ENV): Promise<ConsoleProc> {
  const child = spawn(process.execPath, [LANCET, "console", "--port", "0", ...args], { stdio: ["ignore", "pipe", "pipe"], env: { ...base, ...env } });
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  const deadline = Date.now() + 30_000;
  let url: string | undefined;
  while (!(url = /lancet console: (http:\/\/\S+)/.exec(out)?.[1])) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`console did not start: ${out}`);
    await sleep(50);
  }
  const proc: ConsoleProc = {
    url,
    child,
    output: () => out,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      const code = await exited;
      running.delete(proc);
      return code;
    },
  };
  running.add(proc);
  return proc;
}

/** The console's base URL without the token, and an API path on it. */
const at = (c: ConsoleProc, p: string): string => new URL(p, c.url.replace(/\?.*$/, "")).toString();

async function getJson(url: string, init: RequestInit = {}): Promise<{ status: number; body: any }> {
  const res = await fetch(url, init);
  const text = await res.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: res.status, body };
}

/** Reads an SSE response until `event: NAME` arrives; returns that event's data. */
async function firstEvent(url: string, name: string, init: RequestInit = {}, timeoutMs = 15_000): Promise<unknown> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), timeoutMs);
  try {
    const res = await fetch(url, { ...init, signal: ac.signal });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /text\/event-stream/);
    const reader = res.body!.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`stream ended before event ${name}: ${buf}`);
      buf += dec.decode(value, { stream: true });
      for (const block of buf.split("\n\n").slice(0, -1)) {
        const lines = block.split("\n");
        if (lines.includes(`event: ${name}`)) return JSON.parse(lines.filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n"));
      }
    }
  } finally {
    clearTimeout(timer);
    ac.abort();
  }
}

const STABLE = { storageOptions: { new_table_enable_stable_row_ids: "true" } } as never;

describe("lancet console", () => {
  let t: TempDb;
  let jobId: string;
  let c: ConsoleProc;

  before(async () => {
    t = await tempDb();
    // t: two fragments, column y skips the rows whose id is 5 or 20 (errorPolicy "skip").
    await makeTable(t, 2, 50);
    await addColumns({ db: t.dir, table: "t" }, { y: udfRef("badRows") });
    const r = await backfill({ db: t.dir, table: "t" }, "y", { concurrency: 1, env: { LANCET_TEST_FAIL_IDS: "5,20" }, logger: silentLogger });
    jobId = r.id;
    // one: a single fragment and a UDF column, never backfilled (the few-fragments warning).
    await makeTable(t, 1, 40, "one");
    await addColumns({ db: t.dir, table: "one" }, { d: udfRef("doubled") });
    // full: a single fragment whose UDF column is complete (no warning: nothing left to compute).
    await makeTable(t, 1, 40, "full");
    await addColumns({ db: t.dir, table: "full" }, { n: udfRef("asInt32") });
    await backfill({ db: t.dir, table: "full" }, "n", { concurrency: 1, logger: silentLogger });
    // src + view v over it.
    await t.db.createTable("src", rows(0, 20), STABLE);
    await createView(t.dir, "v", { source: "src", where: "id < 10", select: ["id", "x"] });
    c = await startConsole(["--db", t.dir]);
  });

  after(async () => {
    await Promise.all([...running].map((p) => p.stop()));
    await t?.[Symbol.asyncDispose]();
  });

  test("prints its URL on loopback; health names the database", async () => {
    assert.match(c.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
    assert.notEqual(new URL(c.url).port, "0");
    const { status, body } = await getJson(at(c, "/api/health"));
    assert.equal(status, 200);
    assert.equal(body.ok, true);
    assert.equal(body.db, t.dir);
    assert.equal(body.redis, false);
    assert.match(body.version, /^\d+\.\d+\.\d+/);
  });

  test("serves the page and its assets, uPlot included", async () => {
    const page = await fetch(at(c, "/"));
    assert.equal(page.status, 200);
    const html = await page.text();
    for (const id of ["nav-jobs", "nav-tables", "nav-views", "nav-workers", "live"]) assert.ok(html.includes(`data-testid="${id}"`), id);
    assert.ok(!html.includes("__TOKEN_QUERY__"));
    assert.equal(page.headers.get("x-frame-options"), "DENY");
    assert.match(page.headers.get("content-security-policy") ?? "", /frame-ancestors 'none'/);
    for (const [p, type] of [["/assets/app.js", /javascript/], ["/assets/style.css", /css/], ["/vendor/uPlot.esm.js", /javascript/], ["/vendor/uPlot.min.css", /css/]] as const) {
      const res = await fetch(at(c, p));
      assert.equal(res.status, 200, p);
      assert.match(res.headers.get("content-type") ?? "", type);
      assert.ok((await res.text()).length > 100, p);
    }
    const missing = await getJson(at(c, "/api/nope"));
    assert.equal(missing.status, 404);
    assert.equal(missing.body.error.code, "NOT_FOUND");
  });

  test("jobs: the backfill's record, filters, and an unknown status is a 400", async () => {
    const all = await getJson(at(c, "/api/jobs"));
    assert.equal(all.status, 200);
    const job = all.body.jobs.find((j: { id: string }) => j.id === jobId);
    assert.ok(job, "the backfill's job is listed");
    assert.equal(job.status, "finished");
    assert.equal(job.table, "t");
    assert.equal(job.column, "y");
    assert.equal(job.metrics.rowsSkipped, 2);
    assert.equal((await getJson(at(c, "/api/jobs?status=finished&table=t"))).body.jobs.length, 1);
    assert.equal((await getJson(at(c, "/api/jobs?status=running"))).body.jobs.length, 0);
    assert.equal((await getJson(at(c, "/api/jobs?table=other"))).body.jobs.length, 0);
    const bad = await getJson(at(c, "/api/jobs?status=done"));
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.code, "INVALID_STATUS");
    assert.match(bad.body.error.message, /pending, running, finished, failed, cancelled/);
    assert.ok(bad.body.error.hint);
  });

  test("a job's detail: its skipped rows with row address, fragment, offset and stack; its diagnosis", async () => {
    const { status, body } = await getJson(at(c, `/api/jobs/${jobId}`));
    assert.equal(status, 200);
    assert.equal(body.job.id, jobId);
    assert.equal(body.errorsTotal, 2);
    const msgs = body.errors.map((e: { message: string }) => e.message).sort();
    assert.deepEqual(msgs, ["bad row 20", "bad row 5"]);
    for (const e of body.errors) {
      assert.equal(e.jobId, jobId);
      assert.equal(e.column, "y");
      assert.equal(e.name, "TypeError");
      assert.equal(e.fragment, 0);
      assert.match(e.rowAddress, /^\d+$/);
      assert.match(e.stack, /TypeError: bad row/);
    }
    assert.deepEqual(body.errors.map((e: { rowOffset: number }) => e.rowOffset).sort((a: number, b: number) => a - b), [5, 20]);
    assert.equal(typeof body.diagnosis.summary, "string");
    assert.ok("hint" in body.diagnosis);
    // The chart's data: the record's progress history, ending at what the job committed.
    const h = body.job.history as { t: number[]; rowsProcessed: number[]; rowsCommitted: number[] };
    assert.ok(h.t.length >= 1 && h.rowsCommitted.length === h.t.length, JSON.stringify(h));
    assert.equal(h.rowsCommitted.at(-1), body.job.metrics.rowsCommitted);
  });

  test("an unknown job id is a 404 JOB_NOT_FOUND with getJob's message", async () => {
    const { status, body } = await getJson(at(c, "/api/jobs/no-such-job"));
    assert.equal(status, 404);
    assert.equal(body.error.code, "JOB_NOT_FOUND");
    assert.match(body.error.message, /no job no-such-job in database/);
    assert.ok(body.error.hint.length > 0);
    const cancel = await getJson(at(c, "/api/jobs/no-such-job/cancel"), { method: "POST" });
    assert.equal(cancel.status, 404);
  });

  test("cancelling a finished job is a 409; a POST from another origin is a 403", async () => {
    const done = await getJson(at(c, `/api/jobs/${jobId}/cancel`), { method: "POST" });
    assert.equal(done.status, 409);
    assert.match(done.body.error.message, /already ended \(finished\)/);
    const csrf = await getJson(at(c, `/api/jobs/${jobId}/cancel`), { method: "POST", headers: { origin: "http://evil.example" } });
    assert.equal(csrf.status, 403);
    assert.equal(csrf.body.error.code, "FORBIDDEN_ORIGIN");
  });

  test("tables: rows, fragments, UDF columns' fill, module state, and the few-fragments warning", async () => {
    const { status, body } = await getJson(at(c, "/api/tables"));
    assert.equal(status, 200);
    const names = body.tables.map((x: { name: string }) => x.name);
    assert.deepEqual(names, ["full", "one", "src", "t", "v"]); // no _lancet_* system tables
    const tt = body.tables.find((x: { name: string }) => x.name === "t");
    assert.equal(tt.rows, 100);
    assert.deepEqual(tt.fragments.map((f: { id: number; rows: number }) => [f.id, f.rows]), [[0, 50], [1, 50]]);
    const y = tt.columns.find((col: { name: string }) => col.name === "y");
    assert.equal(y.udf.exportName, "badRows");
    assert.equal(y.udfFile, "ok");
    assert.equal(y.total, 100);
    // null x (every 7th row) and the two skipped rows (x not null) stay null
    const nullX = Array.from({ length: 100 }, (_, i) => i).filter((i) => i % 7 === 3).length;
    assert.equal(y.filled, 100 - nullX - 2);
    assert.equal(y.fraction, y.filled / 100);
    assert.deepEqual(tt.columns.find((col: { name: string }) => col.name === "x"), { name: "x", type: "float64" });

    const one = await getJson(at(c, "/api/tables/one"));
    assert.equal(one.status, 200);
    assert.equal(one.body.fragments.length, 1);
    const d = one.body.columns.find((col: { name: string }) => col.name === "d");
    assert.equal(d.filled, 0);
    assert.equal(d.fraction, 0);
    // The few-fragments warning compares with the fragment writers a backfill here gets (min(4, concurrency)).
    const writers = Math.min(4, Math.max(1, Math.min(8, availableParallelism())));
    assert.equal(one.body.warnings.some((w: string) => new RegExp(`1 fragment for ${writers} fragment writers.*lancet refragment`).test(w)), writers > 1, JSON.stringify(one.body.warnings));
    const full = await getJson(at(c, "/api/tables/full"));
    assert.equal(full.body.columns.find((col: { name: string }) => col.name === "n").fraction, 1);
    assert.deepEqual(full.body.warnings, [], "a complete column: no few-fragments warning");

    const unknown = await getJson(at(c, "/api/tables/nope"));
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.error.code, "TABLE_NOT_FOUND");
  });

  test("views: definition, source and watermark", async () => {
    const { status, body } = await getJson(at(c, "/api/views"));
    assert.equal(status, 200);
    assert.equal(body.views.length, 1);
    const v = body.views[0];
    assert.equal(v.name, "v");
    assert.equal(v.definition.source, "src");
    assert.equal(v.definition.where, "id < 10");
    assert.deepEqual(v.definition.select, ["id", "x"]);
    assert.equal(v.watermark, null);
  });

  test("workers without --redis: a JSON NO_REDIS error that says to pass --redis", async () => {
    const { status, body } = await getJson(at(c, "/api/workers"));
    assert.equal(status, 409);
    assert.equal(body.error.code, "NO_REDIS");
    assert.match(body.error.hint, /--redis URL/);
  });

  test("SSE: /api/stream sends the jobs, /api/jobs/ID/stream the job with its errors", async () => {
    const jobs = (await firstEvent(at(c, "/api/stream"), "jobs")) as { jobs: { id: string }[] };
    assert.ok(jobs.jobs.some((j) => j.id === jobId));
    const one = (await firstEvent(at(c, `/api/jobs/${jobId}/stream`), "job")) as { job: { id: string }; errors: unknown[] };
    assert.equal(one.job.id, jobId);
    assert.equal(one.errors.length, 2);
    const gone = (await firstEvent(at(c, "/api/jobs/nope/stream"), "failure")) as { error: { code: string } };
    assert.equal(gone.error.code, "JOB_NOT_FOUND");
  });

  test("a table dropped while the console runs: 404 TABLE_NOT_FOUND, and the server keeps answering", async () => {
    await makeTable(t, 1, 10, "gone");
    assert.equal((await getJson(at(c, "/api/tables/gone"))).status, 200);
    await t.db.dropTable("gone");
    const { status, body } = await getJson(at(c, "/api/tables/gone"));
    assert.equal(status, 404);
    assert.equal(body.error.code, "TABLE_NOT_FOUND");
    const list = await getJson(at(c, "/api/tables"));
    assert.equal(list.status, 200);
    assert.ok(!list.body.tables.some((x: { name: string }) => x.name === "gone"));
    assert.equal((await getJson(at(c, "/api/health"))).status, 200);
  });

  test("cancel through the API stops a backfill running in another process", async () => {
    await makeTable(t, 2, 1500, "slow");
    await addColumns({ db: t.dir, table: "slow" }, { z: udfRef("slowBatch") });
    const bf = spawn(process.execPath, [LANCET, "backfill", "--db", t.dir, "--table", "slow", "--column", "z", "--concurrency", "1", "--checkpoint-size", "10", "--max-checkpoint-size", "10", "--status-interval-ms", "200"], { stdio: ["ignore", "pipe", "pipe"], env: BASE_ENV });
    let out = "";
    bf.stdout!.on("data", (d: Buffer) => (out += d.toString()));
    bf.stderr!.on("data", (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => bf.once("exit", (code) => r(code)));
    try {
      let id: string | undefined;
      const deadline = Date.now() + 30_000;
      while (!id) {
        const { body } = await getJson(at(c, "/api/jobs?table=slow&status=running"));
        id = body.jobs[0]?.id;
        if (!id) {
          assert.ok(Date.now() < deadline && bf.exitCode === null, `the backfill did not start running: ${out}`);
          await sleep(100);
        }
      }
      const { status, body } = await getJson(at(c, `/api/jobs/${id}/cancel`), { method: "POST", headers: { origin: new URL(c.url).origin } });
      assert.equal(status, 200, JSON.stringify(body));
      assert.equal(body.job.id, id);
      assert.equal(body.job.status, "cancelled");
      const [rec] = await listJobs(t.dir, { table: "slow" });
      assert.equal(rec!.id, id);
      assert.equal(rec!.status, "cancelled");
      assert.equal(await exited, 1); // backfill exits 1 when its job was cancelled
    } finally {
      if (bf.exitCode === null) bf.kill("SIGKILL");
    }
  });

  test("polls only while someone listens", async () => {
    const own = await startConsole(["--db", t.dir, "--verbose"]);
    await firstEvent(at(own, "/api/stream"), "jobs"); // aborts the stream once the event is in
    const deadline = Date.now() + 10_000;
    while (!own.output().includes("stopped polling jobs")) {
      assert.ok(Date.now() < deadline, `the console kept polling after its only listener left: ${own.output()}`);
      await sleep(50);
    }
    assert.equal(own.output().match(/polling jobs \{\} for its first listener/g)?.length, 1);
    assert.equal(await own.stop(), 0);
  });

  test("SIGTERM: the console closes and exits 0", async () => {
    const own = await startConsole(["--db", t.dir]);
    // an open stream must not hold the exit
    const ac = new AbortController();
    const res = await fetch(at(own, "/api/stream"), { signal: ac.signal });
    assert.equal(res.status, 200);
    assert.equal(await own.stop(), 0);
    ac.abort();
    assert.match(own.output(), /SIGTERM: closing/);
  });
});

describe("lancet console: access", () => {
  let t: TempDb;
  before(async () => {
    t = await tempDb();
    await makeTable(t, 1, 5);
  });
  after(async () => {
    await Promise.all([...running].map((p) => p.stop()));
    await t?.[Symbol.asyncDispose]();
  });

  test("a database directory that does not exist: exit 2, a clear message, no server", () => {
    const missing = path.join(t.dir, "no-such-db");
    const r = spawnSync(process.execPath, [LANCET, "console", "--db", missing, "--port", "0"], { encoding: "utf8", env: BASE_ENV, timeout: 30_000 });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /database directory .*no-such-db does not exist/);
    assert.match(r.stderr, /lancet console --help/);
    assert.equal(r.stdout, "");
    // --db from LANCET_DB, checked the same way
    const env = spawnSync(process.execPath, [LANCET, "console", "--port", "0"], { encoding: "utf8", env: { ...BASE_ENV, LANCET_DB: missing }, timeout: 30_000 });
    assert.equal(env.status, 2, env.stderr);
    assert.match(env.stderr, /database directory .*no-such-db does not exist/);
  });

  test("a non-loopback --host without a token is refused (exit 2)", () => {
    const r = spawnSync(process.execPath, [LANCET, "console", "--db", t.dir, "--port", "0", "--host", "0.0.0.0"], { encoding: "utf8", env: BASE_ENV, timeout: 30_000 });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /--host 0\.0\.0\.0 is not a loopback address.*--token/);
    assert.equal(r.stdout, "");
  });

  test("with a token (LANCET_CONSOLE_TOKEN, on a non-loopback host): 401 without or with a wrong one, 200 with it in the header or the query", async () => {
    const token = `tok-${randomUUID()}`;
    const c = await startConsole(["--db", t.dir, "--host", "0.0.0.0"], { LANCET_CONSOLE_TOKEN: token });
    assert.equal(new URL(c.url).searchParams.get("token"), token);
    const base = `http://127.0.0.1:${new URL(c.url).port}`;
    for (const [p, init] of [["/api/health", {}], ["/api/health", { headers: { authorization: "Bearer wrong" } }], ["/api/health?token=wrong", {}], ["/api/jobs", {}], ["/assets/app.js", {}], ["/api/stream", {}]] as const) {
      const { status, body } = await getJson(base + p, init);
      assert.equal(status, 401, p);
      assert.equal(body.error.code, "UNAUTHORIZED");
      assert.ok(body.error.hint.includes("Authorization: Bearer"));
    }
    const page = await fetch(`${base}/`);
    assert.equal(page.status, 401);
    assert.match(await page.text(), /needs its token/);
    assert.equal((await getJson(`${base}/api/health`, { headers: { authorization: `Bearer ${token}` } })).status, 200);
    assert.equal((await getJson(`${base}/api/health?token=${encodeURIComponent(token)}`)).status, 200);
    const withToken = await fetch(`${base}/?token=${encodeURIComponent(token)}`);
    assert.equal(withToken.status, 200);
    assert.ok((await withToken.text()).includes(`/assets/app.js?token=${encodeURIComponent(token)}`));
    assert.equal(await c.stop(), 0);
  });

  test("without a token, a request naming another host is refused (DNS rebinding)", async () => {
    const c = await startConsole(["--db", t.dir]);
    // fetch() does not let a caller set Host: a raw request, as a rebound browser would send it.
    const { status, body } = await new Promise<{ status: number; body: any }>((resolve, reject) => {
      const req = request(at(c, "/api/health"), { headers: { host: `evil.example:${new URL(c.url).port}` } }, (res) => {
        let text = "";
        res.on("data", (d: Buffer) => (text += d.toString()));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
      });
      req.on("error", reject);
      req.end();
    });
    assert.equal(status, 403);
    assert.equal(body.error.code, "FORBIDDEN_HOST");
    assert.equal((await getJson(at(c, "/api/health"))).status, 200);
    assert.equal(await c.stop(), 0);
  });
});

describe("lancet console: workers on Redis", { skip: requireRedisServer() }, () => {
  let t: TempDb;
  let redis: RedisServer;
  let worker: LancetWorker | undefined;
  before(async () => {
    t = await tempDb();
    redis = await RedisServer.start();
  });
  after(async () => {
    await Promise.all([...running].map((p) => p.stop()));
    await worker?.close();
    await redis?.stop();
    await t?.[Symbol.asyncDispose]();
  });

  test("lists a live worker and its queues' counts", async () => {
    const queue = `console-${randomUUID().slice(0, 8)}`;
    worker = await LancetWorker.start({ redis: redis.url, queue, concurrency: 2, logger: silentLogger });
    const c = await startConsole(["--db", t.dir, "--redis", redis.url, "--queue", queue]);
    assert.equal((await getJson(at(c, "/api/health"))).body.redis, true);
    const { status, body } = await getJson(at(c, "/api/workers"));
    assert.equal(status, 200, JSON.stringify(body));
    assert.deepEqual(body.workers.map((w: { id: string }) => w.id), [worker.id]);
    assert.equal(body.workers[0].concurrency, 2);
    assert.equal(body.workers[0].queue, queue);
    assert.deepEqual(body.queues.map((q: { name: string }) => q.name), [`${queue}-cpu`, `${queue}-gpu`]);
    for (const q of body.queues) for (const k of ["waiting", "active", "delayed", "failed", "completed"]) assert.equal(typeof q[k], "number");
    // Redis gone: a clear 503, and the console still answers.
    await worker.close();
    worker = undefined;
    await redis.kill();
    const down = await getJson(at(c, "/api/workers"));
    assert.equal(down.status, 503);
    assert.equal(down.body.error.code, "QUEUE_UNAVAILABLE");
    assert.equal((await getJson(at(c, "/api/health"))).status, 200);
    assert.equal(await c.stop(), 0);
  });
});

describe("lancet console: a database on S3", { skip: requireS3() }, () => {
  after(async () => {
    await Promise.all([...running].map((p) => p.stop()));
  });

  test("jobs, a job's skipped rows, tables and views of an s3:// database, reached with --storage-option only", async () => {
    const env = await s3Server();
    const db = `s3://${await freshBucket(env)}/db`;
    const ref = { db, table: "t", storageOptions: env.storageOptions };
    const table = await (await lancedb.connect(db, { storageOptions: env.storageOptions })).createTable("t", rows(0, 30));
    await table.add(rows(30, 30));
    await addColumns(ref, { y: udfRef("badRows") });
    const job = await backfill(ref, "y", { concurrency: 1, env: { LANCET_TEST_FAIL_IDS: "5" }, logger: silentLogger });
    assert.equal(job.status, "finished");
    const so = Object.entries(env.storageOptions).flatMap(([k, v]) => ["--storage-option", `${k}=${v}`]);
    const noAws = Object.fromEntries(Object.entries(BASE_ENV).filter(([k]) => !k.startsWith("AWS_")));
    const c = await startConsole(["--db", db, ...so], {}, noAws);
    assert.equal((await getJson(at(c, "/api/health"))).body.db, db);
    const jobs = await getJson(at(c, "/api/jobs"));
    assert.equal(jobs.status, 200, JSON.stringify(jobs.body));
    assert.deepEqual(jobs.body.jobs.map((j: { id: string }) => j.id), [job.id]);
    const detail = await getJson(at(c, `/api/jobs/${job.id}`));
    assert.equal(detail.status, 200, JSON.stringify(detail.body));
    assert.deepEqual(detail.body.errors.map((e: { message: string }) => e.message), ["bad row 5"]);
    const tables = await getJson(at(c, "/api/tables"));
    assert.equal(tables.status, 200, JSON.stringify(tables.body));
    assert.deepEqual(tables.body.tables.map((x: { name: string }) => x.name), ["t"]);
    const t = tables.body.tables[0];
    assert.equal(t.rows, 60);
    assert.equal(t.fragments.length, 2);
    const y = t.columns.find((col: { name: string }) => col.name === "y");
    const nullX = Array.from({ length: 60 }, (_, i) => i).filter((i) => i % 7 === 3).length;
    assert.equal(y.filled, 60 - nullX - 1);
    assert.equal((await getJson(at(c, "/api/tables/nope"))).status, 404);
    assert.deepEqual((await getJson(at(c, "/api/views"))).body.views, []);
    assert.equal(await c.stop(), 0);
  });
});
