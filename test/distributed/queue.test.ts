/**
 * Distributed mode end to end: real `lancet worker` processes on a real redis-server (started on a
 * free loopback port by the test and stopped by its PID), real LanceDB tables, and the faults the
 * queue must survive: a worker killed mid-task, Redis restarted mid-job, the coordinator killed, a
 * UDF that blocks its process, no worker able to run a UDF, a worker that cannot reach the storage.
 */
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import * as path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Queue } from "bullmq";
import { addColumns, backfill, backfillAsync, cancelJob, isBackfillError } from "../../src/index.ts";
import { QueueExecutor } from "../../src/exec/bullmq/executor.ts";
import { gapsOf } from "../../src/plan/plan.ts";
import { makeTable, readAll, REPO, securedRows, tempDb, udfRef, workerConfigFor, type TempDb } from "../helpers.ts";
import { freePort, RedisServer, requireRedisServer } from "../redis.ts";
import { startLancetWorker, type WorkerProc } from "../lancet-worker.ts";

const ref = (dir: string) => ({ db: dir, table: "t" });
const udf = (name: string) => udfRef(name, "distributed.ts");
const LANCET = path.join(REPO, "bin/lancet.mjs");
/** Fast stall detection for tests: a dead worker's task runs elsewhere within about 2.5 s. */
const STALL = ["--lock-duration-ms", "2000", "--stalled-interval-ms", "500"];

const workers = new Set<WorkerProc>();

/** Starts `lancet worker` as a separate process and waits until it takes tasks. */
const startWorker = (url: string, args: string[] = [], wrap?: (argv: string[]) => [string, string[]]): Promise<WorkerProc> =>
  startLancetWorker(url, workers, { args: [...STALL, ...args], ...(wrap ? { wrap } : {}) });

/** Rows computed per worker pid, from the call log. */
function calls(log: string): Map<number, number> {
  const out = new Map<number, number>();
  if (!existsSync(log)) return out;
  for (const line of readFileSync(log, "utf8").split("\n").filter(Boolean)) {
    const [pid, rows] = line.split(" ").map(Number) as [number, number];
    out.set(pid, (out.get(pid) ?? 0) + rows);
  }
  return out;
}
const total = (m: Map<number, number>): number => [...m.values()].reduce((a, b) => a + b, 0);

async function assertDoubled(t: TempDb): Promise<void> {
  const rows = await readAll(t, ["x", "y"]);
  assert.ok(rows.length > 0);
  for (const r of rows) assert.equal(r.y, r.x === null ? null : (r.x as number) * 2);
}

describe("distributed backfills on BullMQ/Redis", { skip: requireRedisServer() }, () => {
  let redis: RedisServer;
  before(async () => {
    redis = await RedisServer.start();
  });
  // A failed test must not leave its workers taking the next test's tasks.
  afterEach(() => Promise.all([...workers].map((w) => w.stop())));
  after(async () => {
    await Promise.all([...workers].map((w) => w.stop()));
    await redis?.stop();
  });

  test("3 worker processes give exactly the same table as the embedded run", async () => {
    await using a = await tempDb();
    await using b = await tempDb();
    for (const t of [a, b]) {
      await makeTable(t, 6, 400);
      await addColumns(ref(t.dir), { y: udfRef("doubled"), s2: udfRef("asUtf8") });
    }
    const ws = await Promise.all([startWorker(redis.url), startWorker(redis.url), startWorker(redis.url)]);
    const log = path.join(b.dir, "calls.log");
    for (const column of ["y", "s2"]) {
      const local = await backfill(ref(a.dir), column, { concurrency: 2, checkpointSize: 100 });
      const dist = await backfill(ref(b.dir), column, { concurrency: 6, checkpointSize: 100, executor: { redis: redis.url }, env: { LANCET_TEST_CALL_LOG: log } });
      assert.equal(dist.status, "finished");
      assert.equal(dist.metrics.rowsCommitted, local.metrics.rowsCommitted);
      assert.equal(dist.metrics.rowsComputed, 2400);
      assert.ok(dist.events.some((e) => e.type === "queue" && e.message.includes("lancet-cpu")));
    }
    const cols = ["id", "x", "s", "y", "s2"];
    const byId = (rows: Record<string, unknown>[]) => rows.map(({ _rowaddr, ...r }) => r).sort((p, q) => Number(p.id) - Number(q.id));
    assert.deepEqual(byId(await readAll(b, cols)), byId(await readAll(a, cols)));
    // The work really was spread: every worker is registered, and the queue ran every task once.
    const q = new Queue("lancet-cpu", { connection: { host: "127.0.0.1", port: redis.port } });
    try {
      const done = await q.getJobs(["completed"]);
      assert.ok(done.length >= 12);
      const by = new Set(done.map((j) => (j.returnvalue as { worker: string }).worker));
      assert.ok(by.size >= 2, `tasks ran on ${by.size} worker(s)`);
      for (const j of done) assert.equal(j.attemptsStarted, 1);
    } finally {
      await q.close();
    }
    await Promise.all(ws.map((w) => w.stop()));
  });

  test("kill -9 of a worker mid-task: its task runs on another worker within lockDuration + stalledInterval; no row lost or computed twice beyond the batch in flight", async () => {
    await using t = await tempDb();
    await makeTable(t, 2, 600);
    await addColumns(ref(t.dir), { y: udf("slowDoubled") });
    const log = path.join(t.dir, "calls.log");
    const victim = await startWorker(redis.url);
    const job = backfillAsync(ref(t.dir), "y", { concurrency: 2, checkpointSize: 50, commitGranularity: 1, executor: { redis: redis.url }, env: { LANCET_TEST_CALL_LOG: log, LANCET_TEST_SLEEP_MS: "150" } });
    const deadline = Date.now() + 30_000;
    while ((calls(log).get(victim.pid) ?? 0) < 150 && Date.now() < deadline) await sleep(20);
    assert.ok((calls(log).get(victim.pid) ?? 0) >= 150, "the first worker computed some batches");
    const survivor = await startWorker(redis.url);
    const killedAt = Date.now();
    await victim.kill9();
    const r = await job.wait();
    assert.equal(r.status, "finished");
    await assertDoubled(t);
    const c = calls(log);
    assert.ok((c.get(survivor.pid) ?? 0) > 0, "the surviving worker took over");
    // Checkpointed batches are not recomputed: at most the killed worker's batch in flight is.
    assert.ok(total(c) <= 1200 + 50, `rows computed ${total(c)}`);
    assert.equal(r.metrics.rowsCommitted, 1200);
    assert.equal(r.metrics.commits, 2);
    assert.ok(r.events.some((e) => e.type === "task-stalled"), JSON.stringify(r.events.map((e) => e.type)));
    // Bounded: lock 2 s + stall check 0.5 s + the rest of the task on the survivor (< 12 batches × 150 ms).
    assert.ok(Date.now() - killedAt < 15_000);
    await survivor.stop();
  });

  test("Redis restarted mid-job (its memory lost): workers and coordinator reconnect, lost tasks are enqueued again, the job finishes", async () => {
    await using t = await tempDb();
    await makeTable(t, 3, 400);
    await addColumns(ref(t.dir), { y: udf("slowDoubled") });
    const log = path.join(t.dir, "calls.log");
    const w = await startWorker(redis.url, ["--concurrency", "2"]);
    const job = backfillAsync(ref(t.dir), "y", { concurrency: 3, checkpointSize: 50, executor: { redis: redis.url }, env: { LANCET_TEST_CALL_LOG: log, LANCET_TEST_SLEEP_MS: "100" } });
    const deadline = Date.now() + 30_000;
    while (total(calls(log)) < 200 && Date.now() < deadline) await sleep(20);
    await redis.restart();
    const r = await job.wait();
    assert.equal(r.status, "finished");
    await assertDoubled(t);
    assert.equal(r.metrics.rowsCommitted, 1200);
    assert.ok(r.events.some((e) => e.type === "task-requeued"), JSON.stringify(r.events.map((e) => e.message)));
    assert.ok(total(calls(log)) <= 1200 + 2 * 50, `rows computed ${total(calls(log))}`);
    await w.stop();
  });

  test("coordinator killed: a re-run resumes from checkpoints and committed fragments", async () => {
    await using t = await tempDb();
    await makeTable(t, 4, 300);
    await addColumns(ref(t.dir), { y: udf("slowDoubled") });
    const log = path.join(t.dir, "calls.log");
    const w = await startWorker(redis.url, ["--concurrency", "2"]);
    const args = ["backfill", "--db", t.dir, "--table", "t", "--column", "y", "--redis", redis.url, "--concurrency", "2", "--checkpoint-size", "50", "--commit-granularity", "1", "--env", `LANCET_TEST_CALL_LOG=${log}`, "--env", "LANCET_TEST_SLEEP_MS=100"];
    const coordinator = spawn(process.execPath, [LANCET, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    const exited = new Promise<void>((r) => coordinator.once("exit", () => r()));
    const storeDir = path.join(t.dir, "_lancet", "t");
    const deadline = Date.now() + 60_000;
    while ((await securedRows(storeDir, "y")) < 450 && Date.now() < deadline) await sleep(50);
    coordinator.kill("SIGKILL");
    await exited;
    const r = await backfill(ref(t.dir), "y", { concurrency: 2, checkpointSize: 50, executor: { redis: redis.url }, env: { LANCET_TEST_CALL_LOG: log, LANCET_TEST_SLEEP_MS: "100" } });
    assert.equal(r.status, "finished");
    assert.ok(r.plan!.fragmentsDone >= 1 || r.metrics.rowsComputed < 1200, JSON.stringify(r.plan));
    await assertDoubled(t);
    // What the first coordinator's workers had checkpointed was not computed again (tasks still
    // running on the workers when it died finish there and are picked up by id).
    assert.ok(total(calls(log)) <= 1200 + 2 * 50, `rows computed ${total(calls(log))}`);
    await w.stop();
  });

  test("a UDF that blocks its process for longer than the lock is not declared stalled: each task runs once", async () => {
    await using t = await tempDb();
    await makeTable(t, 2, 40);
    await addColumns(ref(t.dir), { y: udf("blocking") });
    const log = path.join(t.dir, "calls.log");
    const queue = "blocking";
    const w = await startWorker(redis.url, ["--queue", queue, "--concurrency", "2", "--lock-duration-ms", "1000", "--stalled-interval-ms", "300", "--max-stalled-count", "1"]);
    const r = await backfill(ref(t.dir), "y", { concurrency: 2, taskSize: 40, checkpointSize: 40, executor: { redis: redis.url, queue }, env: { LANCET_TEST_CALL_LOG: log, LANCET_TEST_BLOCK_MS: "3000" } });
    assert.equal(r.status, "finished");
    await assertDoubled(t);
    assert.equal(total(calls(log)), 80, "each batch computed exactly once");
    assert.ok(!r.events.some((e) => e.type === "task-stalled"));
    const q = new Queue(`${queue}-cpu`, { connection: { host: "127.0.0.1", port: redis.port } });
    try {
      const done = await q.getJobs(["completed"]);
      assert.ok(done.length >= 2);
      for (const j of done) {
        assert.equal(j.attemptsStarted, 1);
        assert.equal(j.stalledCounter, 0);
      }
    } finally {
      await q.close();
    }
    await w.stop();
  });

  test("resource routing: a GPU UDF waits for a GPU worker (failing clearly when none comes) and runs only there", async () => {
    await using t = await tempDb();
    await makeTable(t, 2, 100);
    await addColumns(ref(t.dir), { y: udf("gpuDoubled") });
    const log = path.join(t.dir, "calls.log");
    const queue = "routing";
    const cpu = await startWorker(redis.url, ["--queue", queue]);
    const opts = { concurrency: 2, executor: { redis: redis.url, queue, admissionTimeoutMs: 1500 }, env: { LANCET_TEST_CALL_LOG: log } };
    await assert.rejects(backfill(ref(t.dir), "y", opts), (e: unknown) => {
      assert.ok(isBackfillError(e, "NO_WORKER"), String(e));
      assert.match((e as Error).message, /queue routing-gpu.*table t, column y.*gpu=1.*lancet worker .*--resources gpu=1/);
      return true;
    });
    assert.equal(await (await t.open()).countRows("y IS NOT NULL"), 0);
    const gpu = await startWorker(redis.url, ["--queue", queue, "--resources", "cpu=2,gpu=1"]);
    const r = await backfill(ref(t.dir), "y", opts);
    assert.equal(r.status, "finished");
    assert.ok(r.events.some((e) => e.type === "queue" && e.message.includes("routing-gpu")));
    await assertDoubled(t);
    const c = calls(log);
    assert.deepEqual([...c.keys()], [gpu.pid], "only the GPU worker ran the GPU UDF");
    await Promise.all([cpu.stop(), gpu.stop()]);
  });

  test("a worker with 2 GPUs gives each of its UDF processes its own device (CUDA_VISIBLE_DEVICES)", async () => {
    await using t = await tempDb();
    await makeTable(t, 4, 50);
    await addColumns(ref(t.dir), { dev: udf("gpuDevice") });
    const queue = "gpus";
    const w = await startWorker(redis.url, ["--queue", queue, "--resources", "gpu=2", "--concurrency", "2"]);
    await backfill(ref(t.dir), "dev", { concurrency: 4, checkpointSize: 25, executor: { redis: redis.url, queue } });
    const byPid = new Map<string, Set<string>>();
    for (const row of await readAll(t, ["dev"])) {
      const [device, pid] = String(row.dev).split("|") as [string, string];
      byPid.set(pid, (byPid.get(pid) ?? new Set()).add(device));
    }
    assert.equal(byPid.size, 2, "two UDF processes ran");
    const devices = [...byPid.values()].map((d) => [...d].join(",")).sort();
    assert.deepEqual(devices, ["0", "1"], "one device each");
    await w.stop();
  });

  test("a worker too small for a UDF hands its tasks back to the queue; a big enough one runs them all", async () => {
    await using t = await tempDb();
    await makeTable(t, 3, 100);
    await addColumns(ref(t.dir), { y: udf("needs4Cpus") });
    const log = path.join(t.dir, "calls.log");
    const queue = "mixed";
    const small = await startWorker(redis.url, ["--queue", queue, "--resources", "cpu=1", "--concurrency", "2"]);
    const big = await startWorker(redis.url, ["--queue", queue, "--resources", "cpu=8"]);
    const r = await backfill(ref(t.dir), "y", { concurrency: 3, executor: { redis: redis.url, queue }, env: { LANCET_TEST_CALL_LOG: log } });
    assert.equal(r.status, "finished");
    await assertDoubled(t);
    assert.deepEqual([...calls(log).keys()], [big.pid], "only the big worker computed");
    await Promise.all([small.stop(), big.stop()]);
  });

  test("admission: live workers that all lack the memory a UDF needs fail the job at once, naming both", async () => {
    await using t = await tempDb();
    await makeTable(t, 1, 50);
    await addColumns(ref(t.dir), { y: udf("bigMemory") });
    const queue = "small";
    const w = await startWorker(redis.url, ["--queue", queue, "--resources", "cpu=1,memory=1024"]);
    const t0 = Date.now();
    await assert.rejects(backfill(ref(t.dir), "y", { executor: { redis: redis.url, queue } }), (e: unknown) => {
      assert.ok(isBackfillError(e, "NO_WORKER"), String(e));
      assert.match((e as Error).message, /needs memory=2048.*offer cpu=1,memory=1024/);
      return true;
    });
    assert.ok(Date.now() - t0 < 10_000);
    await w.stop();
  });

  test("a worker that cannot see the database fails the job with STORAGE_UNREACHABLE and commits nothing", async (ctx) => {
    const probe = spawnSync("unshare", ["-m", "--propagation", "private", "true"]);
    // .ci/run installs unshare (util-linux): in CI (CI set) a missing one fails; elsewhere the skip says why.
    if (probe.error && process.env.CI) throw new Error("unshare is not installed, but CI is set: .ci/run installs it (apt-get install -y util-linux)");
    if (probe.status !== 0) return ctx.skip(`needs unshare -m (a private mount namespace) to hide the database from one worker: ${probe.error ? "unshare is not installed (apt-get install -y util-linux; .ci/run does it)" : `unshare -m is not permitted here (${probe.stderr.toString().trim()})`}`);
    await using t = await tempDb();
    const table = await makeTable(t, 1, 50);
    await addColumns(ref(t.dir), { y: udfRef("doubled") });
    const v = await table.version();
    const queue = "blind";
    // The worker runs in its own mount namespace where the database directory is an empty tmpfs.
    const w = await startWorker(redis.url, ["--queue", queue], (argv) => ["unshare", ["-m", "--propagation", "private", "sh", "-c", `mount -t tmpfs tmpfs '${t.dir}' && exec "$@"`, "sh", ...argv]]);
    await assert.rejects(backfill(ref(t.dir), "y", { maxTaskAttempts: 1, executor: { redis: redis.url, queue } }), (e: unknown) => {
      assert.ok(isBackfillError(e, "STORAGE_UNREACHABLE"), String(e));
      assert.match((e as Error).message, /cannot reach the table .*t\.lance \(table t, column y\).*same path/);
      return true;
    });
    await table.checkoutLatest();
    assert.equal(await table.version(), v);
    await w.stop();
  });

  test("UDF environment: variables passed with env reach the UDF; the coordinator's own environment does not", async () => {
    await using t = await tempDb();
    await makeTable(t, 1, 20);
    await addColumns(ref(t.dir), { e: udf("envEcho") });
    const w = await startWorker(redis.url);
    process.env.LANCET_TEST_SECRET = "coordinator-only";
    try {
      const r = await backfill(ref(t.dir), "e", { executor: { redis: redis.url }, env: { LANCET_TEST_ECHO: "passed" } });
      assert.deepEqual(r.options.env, ["LANCET_TEST_ECHO"], "the job record keeps variable names, not values");
    } finally {
      delete process.env.LANCET_TEST_SECRET;
    }
    for (const row of await readAll(t, ["e"])) assert.equal(row.e, "passed|unset");
    await w.stop();
  });

  test("cancel from another handle: waiting tasks leave the queue, running ones stop after their batch, nothing half-done is committed", async () => {
    await using t = await tempDb();
    await makeTable(t, 4, 400);
    await addColumns(ref(t.dir), { y: udf("slowDoubled") });
    const log = path.join(t.dir, "calls.log");
    const w = await startWorker(redis.url);
    const job = backfillAsync(ref(t.dir), "y", { concurrency: 4, checkpointSize: 50, commitGranularity: 1, executor: { redis: redis.url }, env: { LANCET_TEST_CALL_LOG: log, LANCET_TEST_SLEEP_MS: "100" } });
    while (total(calls(log)) < 100) await sleep(20);
    await cancelJob(t.dir, job.id);
    await assert.rejects(job.wait(), (e: unknown) => isBackfillError(e, "CANCELLED"));
    const computed = total(calls(log));
    await sleep(1000);
    assert.equal(total(calls(log)), computed, "nothing runs after the cancel");
    assert.ok(computed < 1600);
    const q = new Queue("lancet-cpu", { connection: { host: "127.0.0.1", port: redis.port } });
    try {
      assert.equal(await q.getWaitingCount(), 0);
    } finally {
      await q.close();
    }
    // A re-run finishes from the checkpoints.
    const r = await backfill(ref(t.dir), "y", { checkpointSize: 50, executor: { redis: redis.url }, env: { LANCET_TEST_CALL_LOG: log } });
    assert.equal(r.status, "finished");
    await assertDoubled(t);
    assert.ok(total(calls(log)) <= 1600 + 50);
    await w.stop();
  });

  test("--exit-when-idle-ms: a worker stops by itself once its queue has been empty that long", async () => {
    await using t = await tempDb();
    await makeTable(t, 2, 100);
    await addColumns(ref(t.dir), { y: udfRef("doubled") });
    const queue = "idle";
    const w = await startWorker(redis.url, ["--queue", queue, "--exit-when-idle-ms", "1500"]);
    const r = await backfill(ref(t.dir), "y", { executor: { redis: redis.url, queue } });
    assert.equal(r.status, "finished");
    const exited = await new Promise<number | null>((resolve) => {
      if (w.child.exitCode !== null) return resolve(w.child.exitCode);
      const timer = setTimeout(() => resolve(-1), 15_000);
      w.child.once("exit", (code) => {
        clearTimeout(timer);
        resolve(code);
      });
    });
    assert.equal(exited, 0, w.output());
    assert.match(w.output(), /idle, exiting/);
    await w.stop();
  });

  test("workers expose Prometheus metrics and /healthz; `lancet workers` lists them", async () => {
    await using t = await tempDb();
    await makeTable(t, 2, 100);
    await addColumns(ref(t.dir), { y: udfRef("doubled") });
    const port = await freePort();
    const w = await startWorker(redis.url, ["--metrics-port", String(port)]);
    await backfill(ref(t.dir), "y", { executor: { redis: redis.url } });
    const health = await fetch(`http://127.0.0.1:${port}/healthz`);
    assert.equal(health.status, 200);
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    assert.match(text, /lancet_worker_tasks_total\{queue="lancet-cpu",status="completed"\} [1-9]/);
    assert.match(text, /lancet_worker_rows_total\{queue="lancet-cpu"\} 200/);
    assert.match(text, /lancet_worker_udf_seconds_total/);
    assert.match(text, /lancet_worker_slots\{queue="lancet-cpu"\} 1/);
    assert.match(text, /bullmq_job_count\{queue="lancet-cpu", ?state="completed"\} [1-9]/);
    const list = spawnSync(process.execPath, [LANCET, "workers", "--redis", redis.url, "--json"], { encoding: "utf8" });
    assert.equal(list.status, 0, list.stderr);
    const live = JSON.parse(list.stdout.trim()) as { pid: number; resourceClass: string }[];
    assert.ok(live.some((x) => x.pid === w.pid && x.resourceClass === "cpu"));
    await w.stop();
    const after = JSON.parse(spawnSync(process.execPath, [LANCET, "workers", "--redis", redis.url, "--json"], { encoding: "utf8" }).stdout.trim()) as { pid: number }[];
    assert.ok(!after.some((x) => x.pid === w.pid), "a stopped worker removes itself");
  });

  test("deterministic task ids: the same task enqueued by two coordinators runs once, and both get its reports", async () => {
    await using t = await tempDb();
    const table = await makeTable(t, 1, 200);
    await addColumns(ref(t.dir), { y: udf("slowDoubled") });
    const log = path.join(t.dir, "calls.log");
    const config = await workerConfigFor(t, "y");
    await table.checkoutLatest();
    const spec = { taskId: "x", fragmentId: 0, version: await table.version(), globalOffset: 0, gaps: [{ start: 0, end: 200 }], selection: "", batchKey: "dedup/f0", checkpointSize: 50, maxCheckpointSize: 50 };
    const queue = "dedup";
    const w = await startWorker(redis.url, ["--queue", queue, "--concurrency", "2"]);
    const make = () => QueueExecutor.create({ redis: redis.url, queue, jobId: "j", config, pool: { taskTimeoutMs: 60_000, env: { LANCET_TEST_CALL_LOG: log, LANCET_TEST_SLEEP_MS: "100" } }, needs: {} });
    const [e1, e2] = await Promise.all([make(), make()]);
    try {
      const got: number[][] = [[], []];
      await Promise.all([e1.runTask(spec, (r) => got[0]!.push(r.start)), e2.runTask({ ...spec, taskId: "y" }, (r) => got[1]!.push(r.start))]);
      assert.equal(total(calls(log)), 200, "computed once");
      for (const g of got) assert.deepEqual(g.sort((p, q) => p - q), [0, 50, 100, 150]);
    } finally {
      await Promise.all([e1.close(), e2.close()]);
    }
    await w.stop();
  });

  test("a re-run that supersedes a dead coordinator's job attaches to its running task, which stops; the rest is then computed under the new job", async () => {
    await using t = await tempDb();
    const table = await makeTable(t, 1, 400);
    await addColumns(ref(t.dir), { y: udf("slowDoubled") });
    const log = path.join(t.dir, "calls.log");
    const config = await workerConfigFor(t, "y");
    await table.checkoutLatest();
    const spec = { taskId: "x", fragmentId: 0, version: await table.version(), globalOffset: 0, gaps: [{ start: 0, end: 400 }], selection: "", batchKey: "supersede/f0", checkpointSize: 50, maxCheckpointSize: 50 };
    const queue = "supersede";
    const w = await startWorker(redis.url, ["--queue", queue]);
    const pool = { taskTimeoutMs: 60_000, env: { LANCET_TEST_CALL_LOG: log, LANCET_TEST_SLEEP_MS: "150" } };
    const old = await QueueExecutor.create({ redis: redis.url, queue, jobId: "old", config, pool, needs: {} });
    void old.runTask(spec, () => {}).catch(() => {}); // the "dead" coordinator's task, left running
    while (total(calls(log)) < 100) await sleep(20);
    await old.close();
    const fresh = await QueueExecutor.create({ redis: redis.url, queue, jobId: "new", config, pool, needs: {}, supersedes: "old" });
    try {
      const done: { start: number; end: number }[] = [];
      let rounds = 0;
      for (;;) {
        const gaps = gapsOf(0, 400, done);
        if (gaps.length === 0) break;
        assert.ok(++rounds <= 3, `still ${JSON.stringify(gaps)} after ${rounds - 1} rounds`);
        await fresh.runTask({ ...spec, gaps }, (r) => done.push({ start: r.start, end: r.end }));
      }
      assert.ok(rounds >= 1);
    } finally {
      await fresh.close();
    }
    // Everything was computed once, give or take the batch the old task had in flight.
    assert.ok(total(calls(log)) <= 400 + 50, `rows computed ${total(calls(log))}`);
    await w.stop();
  });

  test("Redis gone for good mid-job: the job fails with QUEUE_UNAVAILABLE after redisOutageMs, keeping what was committed", async () => {
    await using t = await tempDb();
    await makeTable(t, 4, 200);
    await addColumns(ref(t.dir), { y: udf("slowDoubled") });
    const own = await RedisServer.start();
    const log = path.join(t.dir, "calls.log");
    try {
      const w = await startWorker(own.url, ["--concurrency", "2"]);
      const job = backfillAsync(ref(t.dir), "y", { concurrency: 2, taskSize: 200, checkpointSize: 50, commitGranularity: 1, executor: { redis: own.url, redisOutageMs: 1500 }, env: { LANCET_TEST_CALL_LOG: log, LANCET_TEST_SLEEP_MS: "100" } });
      while (job.record().metrics.fragmentsCommitted < 1) await sleep(20);
      await own.kill();
      await assert.rejects(job.wait(), (e: unknown) => {
        assert.ok(isBackfillError(e, "QUEUE_UNAVAILABLE"), String(e));
        assert.match((e as Error).message, /lost Redis at .* for more than 1.5 s .*column y \(table t\).*run the backfill again/);
        return true;
      });
      const committed = job.record().metrics.rowsCommitted;
      assert.ok(committed >= 200);
      assert.ok((await (await t.open()).countRows("y IS NOT NULL")) > 0, "the fragments committed before Redis went stay committed");
      await w.kill9();
    } finally {
      await own.stop();
    }
  });

  test("bad distributed input gets clear errors: an unreachable Redis, a malformed URL, a bad queue name", async () => {
    await using t = await tempDb();
    await makeTable(t, 1, 10);
    await addColumns(ref(t.dir), { y: udfRef("doubled") });
    const port = await freePort();
    await assert.rejects(backfill(ref(t.dir), "y", { executor: { redis: `redis://127.0.0.1:${port}` } }), (e: unknown) => {
      assert.ok(isBackfillError(e, "QUEUE_UNAVAILABLE"), String(e));
      assert.match((e as Error).message, new RegExp(`cannot reach Redis at redis://127.0.0.1:${port}.*start redis-server`));
      return true;
    });
    assert.throws(() => backfillAsync(ref(t.dir), "y", { executor: { redis: "localhost:6379" } }), /options.executor .redis must be a Redis URL/);
    assert.throws(() => backfillAsync(ref(t.dir), "y", { executor: { redis: redis.url, queue: "a:b" } }), /options.executor .queue/);
    const bad = spawnSync(process.execPath, [LANCET, "worker", "--redis", redis.url, "--resources", "tpu=4"], { encoding: "utf8" });
    assert.equal(bad.status, 2, "a bad flag value is a usage error");
    assert.match(bad.stderr, /"tpu=4" is not a resource; write cpu=N, gpu=N or memory=MiB/);
    // Nothing was committed by the failed attempt.
    assert.equal(await (await t.open()).countRows("y IS NOT NULL"), 0);
  });
});
