/**
 * Who can write to Redis must not be able to run code on the workers: real `lancet worker` processes
 * on a real redis-server get forged tasks enqueued straight into BullMQ (a bundle outside the table's
 * store, a `..` path, a symlink, a tampered bundle, another database, NODE_OPTIONS/LD_PRELOAD in the
 * environment) and refuse each with CONFIG_INVALID, never retried, and the evil code never runs (its
 * marker file is never created). The worker entry refuses the same on its own (defence in depth), the
 * coordinator refuses reserved environment names, UDFs see only what the job declares, and a Redis
 * with a password works with the password in the URL and fails clearly, masked, without it.
 */
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Queue } from "bullmq";
import { addColumns, backfill, isBackfillError } from "../../src/index.ts";
import { connectionFor, ERROR_PREFIX, type TaskJobData } from "../../src/exec/bullmq/queue.ts";
import { LocalPool } from "../../src/exec/pool.ts";
import type { TaskSpec, WorkerConfig } from "../../src/exec/protocol.ts";
import type { SerializedError } from "../../src/errors.ts";
import { makeTable, readAll, REPO, tempDb, udfRef, workerConfigFor, type TempDb } from "../helpers.ts";
import { RedisServer, requireRedisServer } from "../redis.ts";
import { startLancetWorker, type WorkerProc } from "../lancet-worker.ts";

const ref = (dir: string) => ({ db: dir, table: "t" });
const LANCET = path.join(REPO, "bin/lancet.mjs");
const PASSWORD = "s3cret-p@ss:word";

const workers = new Set<WorkerProc>();

/** Starts `lancet worker` (its environment: this one's without LANCET_TEST_*, plus `env`) and waits until it takes tasks. */
const startWorker = (url: string, args: string[] = [], env: Record<string, string> = {}): Promise<WorkerProc> => startLancetWorker(url, workers, { args, env });

/** An ES module that creates `marker` as soon as it is imported, and exports a valid UDF. */
function evilModule(marker: string): string {
  return `import { writeFileSync } from "node:fs";\nwriteFileSync(${JSON.stringify(marker)}, "pwned");\nexport const doubled = { inputs: ["x"], dataType: "float64", fn: (x) => x };\n`;
}

const sha256 = (text: string): string => createHash("sha256").update(text).digest("hex");

/** A table with a bound column `y`, the config a real coordinator would enqueue, and a task over fragment 0. */
async function boundTable(t: TempDb): Promise<{ config: WorkerConfig; task: TaskSpec }> {
  const table = await makeTable(t, 1, 50);
  await addColumns(ref(t.dir), { y: udfRef("doubled") });
  const config = await workerConfigFor(t, "y");
  await table.checkoutLatest();
  const task: TaskSpec = { taskId: "forged", fragmentId: 0, version: await table.version(), globalOffset: 0, gaps: [{ start: 0, end: 50 }], selection: "", batchKey: "y/forged", checkpointSize: 50, maxCheckpointSize: 50 };
  return { config, task };
}

/** Enqueues a task straight into BullMQ, as anyone who can write to Redis could, and waits for it to settle. */
async function enqueueForged(url: string, queue: string, id: string, config: WorkerConfig, task: TaskSpec, env: Record<string, string> = {}): Promise<{ state: string; attempts: number; error: SerializedError | undefined }> {
  const q = new Queue<TaskJobData>(`${queue}-cpu`, { connection: connectionFor(url) });
  try {
    const data: TaskJobData = { format: 1, jobId: "forged-job", config, pool: { taskTimeoutMs: 60_000, env }, task, needs: {} };
    // attempts: 5, so a refusal that the queue retried would show in attemptsMade.
    const job = await q.add("task", data, { jobId: id, attempts: 5 });
    const deadline = Date.now() + 30_000;
    for (;;) {
      const state = await job.getState();
      if (state === "failed" || state === "completed") {
        const fresh = (await q.getJob(id))!;
        const reason = fresh.failedReason;
        const error = reason?.startsWith(ERROR_PREFIX) ? (JSON.parse(reason.slice(ERROR_PREFIX.length)) as SerializedError) : undefined;
        return { state, attempts: fresh.attemptsMade, error };
      }
      assert.ok(Date.now() < deadline, `forged task ${id} still ${state} after 30 s`);
      await sleep(50);
    }
  } finally {
    await q.close();
  }
}

function assertRefused(r: { state: string; attempts: number; error: SerializedError | undefined }, id: string, offending: string | RegExp, marker: string): void {
  assert.equal(r.state, "failed");
  assert.equal(r.attempts, 1, "a refused task is never retried");
  assert.equal(r.error?.code, "CONFIG_INVALID", JSON.stringify(r.error));
  assert.equal(r.error?.retryable, false);
  assert.ok(r.error!.message.startsWith(`task ${id} of column y (table t)`), r.error!.message);
  if (typeof offending === "string") assert.ok(r.error!.message.includes(offending), r.error!.message);
  else assert.match(r.error!.message, offending);
  assert.equal(r.error?.context?.column, "y");
  assert.equal(existsSync(marker), false, "the forged task's code never ran");
}

describe("workers refuse forged tasks from Redis", { skip: requireRedisServer() }, () => {
  let redis: RedisServer;
  before(async () => {
    redis = await RedisServer.start();
  });
  afterEach(() => Promise.all([...workers].map((w) => w.stop())));
  after(async () => {
    await Promise.all([...workers].map((w) => w.stop()));
    await redis?.stop();
  });

  test("a bundle outside the table's store, a '..' path, a symlink, a tampered bundle: refused, nothing runs; a genuine task still runs", async () => {
    await using t = await tempDb();
    const { config, task } = await boundTable(t);
    const queue = "sec-bundle";
    const w = await startWorker(redis.url, ["--queue", queue]);
    const marker = path.join(t.dir, "pwned");
    const evilDir = path.join(t.dir, "evil");
    mkdirSync(evilDir);
    const code = evilModule(marker);
    const outside = path.join(evilDir, `${sha256(code)}.mjs`);
    writeFileSync(outside, code);

    // 1. Anywhere outside the store (even named by its own hash).
    assertRefused(await enqueueForged(redis.url, queue, "outside", { ...config, bundlePath: outside }, task), "outside", `names UDF bundle ${JSON.stringify(outside)}, which is not a content-addressed bundle of table t's store`, marker);
    // 2. A path that starts in the store and climbs out of it.
    const climbing = `${path.dirname(config.bundlePath)}/../../../evil/${path.basename(outside)}`;
    assertRefused(await enqueueForged(redis.url, queue, "climbing", { ...config, bundlePath: climbing }, task), "climbing", "which is not an absolute path without '..'", marker);
    // 3. A symlink in the store leading to the evil file.
    const link = path.join(path.dirname(config.bundlePath), path.basename(outside));
    symlinkSync(outside, link);
    assertRefused(await enqueueForged(redis.url, queue, "symlink", { ...config, bundlePath: link }, task), "symlink", "which is a symbolic link or not a regular file", marker);
    // 4. The checkpoint folder elsewhere (the worker would write there).
    assertRefused(await enqueueForged(redis.url, queue, "ckp", { ...config, checkpointRoot: evilDir }, task), "ckp", `names checkpoint folder ${JSON.stringify(evilDir)}`, marker);
    // 5. A genuine task of this table still runs on the same worker.
    const ok = await enqueueForged(redis.url, queue, "genuine", config, task);
    assert.equal(ok.state, "completed", JSON.stringify(ok.error));
    // 6. The stored bundle changed after binding: its content no longer matches its name.
    appendFileSync(config.bundlePath, `\nimport { writeFileSync as __w } from "node:fs";\n__w(${JSON.stringify(marker)}, "pwned");\n`);
    // (The worker's pool for this config is warm: the check is made for every task all the same.)
    assertRefused(await enqueueForged(redis.url, queue, "tampered", config, { ...task, batchKey: "y/tampered" }), "tampered", "does not match its content-addressed name", marker);
    assert.match(w.output(), /refused task outside: /, "the worker warns about refused tasks");
    await w.stop();
  });

  test("a bundle in the table's own store that the column does not bind (named by its own hash) is refused; its code never runs", async () => {
    await using t = await tempDb();
    const { config, task } = await boundTable(t);
    const marker = path.join(t.dir, "pwned");
    const code = evilModule(marker);
    const file = path.join(path.dirname(config.bundlePath), `${sha256(code)}.mjs`);
    writeFileSync(file, code);
    const queue = "sec-bound";
    const w = await startWorker(redis.url, ["--queue", queue]);
    assertRefused(await enqueueForged(redis.url, queue, "unbound", { ...config, bundlePath: file }, task), "unbound", /but column y of table t \(its latest version\) binds bundle [0-9a-f]{16}…; refused/, marker);
    await w.stop();
  });

  test("--allow-db: a store forged in another directory (a copied table, a bundle named by its hash) is refused", async () => {
    await using good = await tempDb();
    await using forged = await tempDb();
    await boundTable(good);
    const { config, task } = await boundTable(forged);
    const marker = path.join(forged.dir, "pwned");
    // The forger controls this store: the bundle is evil and named by its own hash.
    const code = evilModule(marker);
    const file = path.join(path.dirname(config.bundlePath), `${sha256(code)}.mjs`);
    writeFileSync(file, code);
    const queue = "sec-allow";
    const w = await startWorker(redis.url, ["--queue", queue, "--allow-db", good.dir]);
    assertRefused(await enqueueForged(redis.url, queue, "elsewhere", { ...config, bundlePath: file, exportName: "doubled" }, task), "elsewhere", `names database directory ${JSON.stringify(config.dbDir)}, which is not inside the directories this worker may use (--allow-db ${good.dir})`, marker);
    await w.stop();
  });

  test("a task whose environment sets NODE_OPTIONS or LD_PRELOAD is refused before any process starts", async () => {
    await using t = await tempDb();
    const { config, task } = await boundTable(t);
    const marker = path.join(t.dir, "pwned");
    const evil = path.join(t.dir, "evil.cjs");
    writeFileSync(evil, `require("node:fs").writeFileSync(${JSON.stringify(marker)}, "pwned");\n`);
    const queue = "sec-env";
    const w = await startWorker(redis.url, ["--queue", queue]);
    assertRefused(await enqueueForged(redis.url, queue, "node-options", config, task, { NODE_OPTIONS: `--require=${evil}` }), "node-options", /^task node-options of column y \(table t\): env may not set NODE_OPTIONS: it can change how Node, the system loader or a program the UDF starts loads code or routes traffic \(reserved: NODE_\*, LD_\*/, marker);
    assertRefused(await enqueueForged(redis.url, queue, "ld-preload", config, { ...task, batchKey: "y/ld" }, { LD_PRELOAD: path.join(t.dir, "evil.so") }), "ld-preload", "env may not set LD_PRELOAD", marker);
    await w.stop();
  });

  test("a worker's UDF processes get the job's declared variables, not the worker's own environment (unless --pass-env names them)", async () => {
    await using t = await tempDb();
    await makeTable(t, 1, 20);
    await addColumns(ref(t.dir), { e: udfRef("envEcho", "distributed.ts"), e2: udfRef("envEcho", "distributed.ts") });
    const queue = "sec-passenv";
    const secretEnv = { LANCET_TEST_SECRET: "worker-only", LANCET_REDIS_URL: redis.url };
    let w = await startWorker(redis.url, ["--queue", queue], secretEnv);
    await backfill(ref(t.dir), "e", { executor: { redis: redis.url, queue }, env: { LANCET_TEST_ECHO: "passed" } });
    for (const row of await readAll(t, ["e"])) assert.equal(row.e, "passed|unset");
    await w.stop();
    w = await startWorker(redis.url, ["--queue", queue, "--pass-env", "LANCET_TEST_SECRET"], secretEnv);
    await backfill(ref(t.dir), "e2", { executor: { redis: redis.url, queue }, env: { LANCET_TEST_ECHO: "again" } });
    for (const row of await readAll(t, ["e2"])) assert.equal(row.e2, "again|worker-only");
    await w.stop();
  });
});

describe("a Redis with a password", { skip: requireRedisServer() }, () => {
  let redis: RedisServer;
  before(async () => {
    redis = await RedisServer.start(undefined, { password: PASSWORD });
  });
  afterEach(() => Promise.all([...workers].map((w) => w.stop())));
  after(async () => {
    await Promise.all([...workers].map((w) => w.stop()));
    await redis?.stop();
  });

  test("worker and backfill work with redis://:PASSWORD@…; the password is never printed or recorded", async () => {
    await using t = await tempDb();
    await makeTable(t, 2, 100);
    await addColumns(ref(t.dir), { y: udfRef("doubled") });
    assert.ok(redis.url.includes(encodeURIComponent(PASSWORD)));
    const w = await startWorker(redis.url, ["--queue", "pw"]);
    const r = await backfill(ref(t.dir), "y", { executor: { redis: redis.url, queue: "pw" } });
    assert.equal(r.status, "finished");
    for (const row of await readAll(t, ["x", "y"])) assert.equal(row.y, row.x === null ? null : (row.x as number) * 2);
    const record = JSON.stringify(r);
    assert.ok(!record.includes(encodeURIComponent(PASSWORD)) && !record.includes(PASSWORD), "the job record keeps no password");
    assert.equal((r.options.executor as { redis: string }).redis, `redis://:***@127.0.0.1:${redis.port}`);
    const listed = spawnSync(process.execPath, [LANCET, "workers", "--redis", redis.url, "--queue", "pw", "--json"], { encoding: "utf8" });
    assert.equal(listed.status, 0, listed.stderr);
    assert.equal((JSON.parse(listed.stdout) as unknown[]).length, 1);
    await w.stop();
    assert.ok(!w.output().includes(encodeURIComponent(PASSWORD)), w.output());
  });

  test("a wrong or missing password fails clearly, naming the URL with its password masked", async () => {
    await using t = await tempDb();
    await makeTable(t, 1, 10);
    await addColumns(ref(t.dir), { y: udfRef("doubled") });
    const wrong = `redis://:wrong-one@127.0.0.1:${redis.port}`;
    const none = `redis://127.0.0.1:${redis.port}`;
    await assert.rejects(backfill(ref(t.dir), "y", { executor: { redis: wrong } }), (e: unknown) => {
      assert.ok(isBackfillError(e, "QUEUE_UNAVAILABLE"));
      assert.match(e.message, new RegExp(`^Redis at redis://:\\*\\*\\*@127\\.0\\.0\\.1:${redis.port} did not accept the credentials: WRONGPASS`));
      assert.ok(!e.message.includes("wrong-one"));
      return true;
    });
    await assert.rejects(backfill(ref(t.dir), "y", { executor: { redis: none } }), (e: unknown) => isBackfillError(e, "QUEUE_UNAVAILABLE") && /did not accept the credentials: NOAUTH/.test(e.message));
    for (const [url, shown, reply] of [[wrong, "redis://:***@", "WRONGPASS"], [none, "redis://127", "NOAUTH"]] as const) {
      const r = spawnSync(process.execPath, [LANCET, "worker", "--redis", url, "--queue", "pw-bad"], { encoding: "utf8", timeout: 30_000 });
      assert.equal(r.status, 1, r.stderr);
      assert.ok(r.stderr.includes(`lancet: error QUEUE_UNAVAILABLE: Redis at ${shown}`) && r.stderr.includes(reply), r.stderr);
      assert.ok(!r.stderr.includes("wrong-one"), r.stderr);
    }
  });
});

describe("without a queue", () => {
  test("the worker entry refuses a bundle outside the table's store by itself (defence in depth): the pool fails with CONFIG_INVALID, nothing runs", async () => {
    await using t = await tempDb();
    const { config } = await boundTable(t);
    const marker = path.join(t.dir, "pwned");
    const code = evilModule(marker);
    const outside = path.join(t.dir, `${sha256(code)}.mjs`);
    writeFileSync(outside, code);
    await assert.rejects(LocalPool.create({ size: 1, config: { ...config, bundlePath: outside }, taskTimeoutMs: 30_000 }), (e: unknown) => {
      assert.ok(isBackfillError(e, "CONFIG_INVALID"), String(e));
      assert.ok(e.message.startsWith(`the worker process for column y (table t) names UDF bundle ${JSON.stringify(outside)}`), e.message);
      return true;
    });
    assert.equal(existsSync(marker), false);
    // A tampered stored bundle, in the embedded executor too.
    appendFileSync(config.bundlePath, `\nimport { writeFileSync as __w } from "node:fs";\n__w(${JSON.stringify(marker)}, "pwned");\n`);
    await assert.rejects(backfill(ref(t.dir), "y"), (e: unknown) => isBackfillError(e, "CONFIG_INVALID") && /does not match its content-addressed name/.test(e.message));
    assert.equal(existsSync(marker), false);
  });

  test("backfill refuses env names that change how Node starts (CONFIG_INVALID) before anything runs", async () => {
    await using t = await tempDb();
    await makeTable(t, 1, 10);
    await addColumns(ref(t.dir), { y: udfRef("doubled") });
    const marker = path.join(t.dir, "pwned");
    const evil = path.join(t.dir, "evil.cjs");
    writeFileSync(evil, `require("node:fs").writeFileSync(${JSON.stringify(marker)}, "pwned");\n`);
    for (const executor of ["local", { redis: "redis://127.0.0.1:1" }] as const) {
      await assert.rejects(backfill(ref(t.dir), "y", { executor, env: { NODE_OPTIONS: `--require=${evil}` } }), (e: unknown) => isBackfillError(e, "CONFIG_INVALID") && e.message.startsWith("options.env may not set NODE_OPTIONS"));
    }
    assert.equal(existsSync(marker), false);
  });
});
