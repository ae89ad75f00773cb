/**
 * One conformance suite for every Executor: the embedded child-process pool and the BullMQ queue
 * (with a real `LancetWorker` on a real redis-server). Both run the shared worker entry, so a task
 * must behave the same on either: reports that tile the gaps, checkpoints for every report, early
 * and clean stops, the same error codes for UDF errors, crashes and UDFs that cannot start.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { addColumns, isBackfillError } from "../../src/index.ts";
import { FileCheckpointStore } from "../../src/checkpoint/store.ts";
import { QueueExecutor } from "../../src/exec/bullmq/executor.ts";
import { LancetWorker } from "../../src/exec/bullmq/worker.ts";
import { LocalPool } from "../../src/exec/pool.ts";
import type { BatchReport, Executor, TaskSpec, WorkerConfig } from "../../src/exec/protocol.ts";
import { makeTable, tempDb, udfRef, workerConfigFor, type TempDb } from "../helpers.ts";
import { RedisServer, skipRedis } from "../redis.ts";

interface Harness {
  readonly name: string;
  readonly skip: string | false;
  setUp(): Promise<void>;
  tearDown(): Promise<void>;
  create(config: WorkerConfig): Promise<Executor>;
  /** Called after each executor is closed. */
  cleanUp(): Promise<void>;
}

const local: Harness = {
  name: "LocalPool (embedded)",
  skip: false,
  setUp: async () => {},
  tearDown: async () => {},
  create: (config) => LocalPool.create({ size: 2, config, taskTimeoutMs: 60_000 }),
  cleanUp: async () => {},
};

function queueHarness(): Harness {
  let redis: RedisServer | undefined;
  let url = process.env.LANCET_TEST_REDIS_URL ?? "";
  const workers: LancetWorker[] = [];
  return {
    name: "QueueExecutor (BullMQ on Redis)",
    skip: url || !skipRedis ? false : `${skipRedis}, and LANCET_TEST_REDIS_URL (a running server to use instead) is not set`,
    setUp: async () => {
      if (!url) {
        redis = await RedisServer.start();
        url = redis.url;
      }
    },
    tearDown: async () => {
      await redis?.stop();
    },
    create: async (config) => {
      const queue = `conf-${randomUUID().slice(0, 8)}`;
      workers.push(await LancetWorker.start({ redis: url, queue, concurrency: 2, stall: { lockDurationMs: 5000, stalledIntervalMs: 1000 } }));
      return QueueExecutor.create({ redis: url, queue, jobId: randomUUID(), config, pool: { taskTimeoutMs: 60_000, env: {} }, needs: {}, sweepIntervalMs: 500 });
    },
    cleanUp: async () => {
      await Promise.all(workers.splice(0).map((w) => w.close()));
    },
  };
}

/** A table of one 200-row fragment with column `y` bound to `udfName`, and the worker config for it. */
async function setup(t: TempDb, udfName: string): Promise<{ config: WorkerConfig; version: number }> {
  const table = await makeTable(t, 1, 200);
  await addColumns({ db: t.dir, table: "t" }, { y: udfRef(udfName) });
  const config = await workerConfigFor(t, "y");
  await table.checkoutLatest();
  return { config, version: await table.version() };
}

function task(version: number, gaps: { start: number; end: number }[]): TaskSpec {
  return { taskId: randomUUID(), fragmentId: 0, version, globalOffset: 0, gaps, selection: "", batchKey: `conf/${randomUUID()}`, checkpointSize: 25, maxCheckpointSize: 25 };
}

async function withExecutor<T>(h: Harness, config: WorkerConfig, fn: (ex: Executor) => Promise<T>): Promise<T> {
  const ex = await h.create(config);
  try {
    return await fn(ex);
  } finally {
    await ex.close();
    await h.cleanUp();
  }
}

for (const h of [local, queueHarness()]) {
  describe(`Executor conformance: ${h.name}`, { skip: h.skip }, () => {
    before(() => h.setUp());
    after(() => h.tearDown());

    test("runs a task: batch reports tile its gaps, and every reported range is checkpointed", async () => {
      await using t = await tempDb();
      const { config, version } = await setup(t, "doubled");
      const spec = task(version, [{ start: 0, end: 200 }]);
      const reports: BatchReport[] = [];
      await withExecutor(h, config, (ex) => ex.runTask(spec, (r) => reports.push(r)));
      const ranges = reports.map((r) => [r.start, r.end]).sort((a, b) => a[0]! - b[0]!);
      assert.deepEqual(ranges, Array.from({ length: 8 }, (_, i) => [i * 25, i * 25 + 25]));
      assert.equal(reports.reduce((s, r) => s + r.rowsComputed, 0), 200);
      const stored = await new FileCheckpointStore(config.checkpointRoot).listBatches(spec.batchKey);
      assert.deepEqual(stored.map((r) => [r.start, r.end]), ranges);
    });

    test("computes only the gaps it is given", async () => {
      await using t = await tempDb();
      const { config, version } = await setup(t, "doubled");
      const spec = task(version, [{ start: 25, end: 50 }, { start: 150, end: 175 }]);
      const reports: BatchReport[] = [];
      await withExecutor(h, config, (ex) => ex.runTask(spec, (r) => reports.push(r)));
      assert.deepEqual(reports.map((r) => [r.start, r.end]).sort((a, b) => a[0]! - b[0]!), [[25, 50], [150, 175]]);
    });

    test("a signal aborted before the start runs nothing", async () => {
      await using t = await tempDb();
      const { config, version } = await setup(t, "doubled");
      const spec = task(version, [{ start: 0, end: 200 }]);
      const reports: BatchReport[] = [];
      await withExecutor(h, config, (ex) => ex.runTask(spec, (r) => reports.push(r), AbortSignal.abort()));
      assert.equal(reports.length, 0);
      assert.deepEqual(await new FileCheckpointStore(config.checkpointRoot).listBatches(spec.batchKey), []);
    });

    test("abort mid-task: the task resolves early, after checkpointing the batch in flight", async () => {
      await using t = await tempDb();
      const { config, version } = await setup(t, "slowBatch");
      const spec = { ...task(version, [{ start: 0, end: 200 }]), checkpointSize: 10, maxCheckpointSize: 10 };
      const reports: BatchReport[] = [];
      const ac = new AbortController();
      await withExecutor(h, config, (ex) =>
        ex.runTask(
          spec,
          (r) => {
            reports.push(r);
            if (reports.length === 2) ac.abort();
          },
          ac.signal,
        ),
      );
      assert.ok(reports.length >= 2 && reports.length < 20, `${reports.length} batches`);
      const stored = await new FileCheckpointStore(config.checkpointRoot).listBatches(spec.batchKey);
      assert.ok(stored.length < 20);
      for (const r of reports) assert.ok(stored.some((s) => s.start === r.start && s.end === r.end));
    });

    test("a UDF error under the fail policy rejects with UDF_FAILED, naming the fragment and rows", async () => {
      await using t = await tempDb();
      const { config, version } = await setup(t, "throws");
      await withExecutor(h, config, async (ex) => {
        await assert.rejects(ex.runTask(task(version, [{ start: 0, end: 200 }]), () => {}), (e: unknown) => {
          assert.ok(isBackfillError(e, "UDF_FAILED"), String(e));
          assert.equal((e as { context: { fragmentId?: number } }).context.fragmentId, 0);
          assert.match((e as Error).message, /bad x/);
          return true;
        });
      });
    });

    test("a worker process that dies rejects the task with a retryable WORKER_CRASHED", async () => {
      await using t = await tempDb();
      const { config, version } = await setup(t, "alwaysCrash");
      await withExecutor(h, config, async (ex) => {
        await assert.rejects(ex.runTask(task(version, [{ start: 0, end: 200 }]), () => {}), (e: unknown) => {
          assert.ok(isBackfillError(e, "WORKER_CRASHED"), String(e));
          assert.equal((e as { retryable: boolean }).retryable, true);
          assert.match((e as Error).message, /exited with code 9 .*fragment 0/);
          return true;
        });
      });
    });

    test("a UDF whose setup() fails is rejected with UDF_SETUP_FAILED (at create or at the first task)", async () => {
      await using t = await tempDb();
      const { config, version } = await setup(t, "setupFails");
      const check = (e: unknown): boolean => {
        assert.ok(isBackfillError(e, "UDF_SETUP_FAILED"), String(e));
        assert.match((e as Error).message, /model weights not found/);
        return true;
      };
      let ex: Executor;
      try {
        ex = await h.create(config);
      } catch (e) {
        check(e);
        await h.cleanUp();
        return;
      }
      try {
        await assert.rejects(ex.runTask(task(version, [{ start: 0, end: 200 }]), () => {}), check);
      } finally {
        await ex.close();
        await h.cleanUp();
      }
    });

    test("close is idempotent", async () => {
      await using t = await tempDb();
      const { config } = await setup(t, "doubled");
      const ex = await h.create(config);
      await Promise.all([ex.close(), ex.close()]);
      await ex.close();
      await h.cleanUp();
    });
  });
}
