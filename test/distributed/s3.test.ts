/**
 * Distributed mode with the database on S3 and no shared filesystem: `lancet worker`s that reach the
 * bucket with their own --storage-option flags, a coordinator in this process, a real redis-server
 * and a real Ceph radosgw (test/s3.ts). A worker killed mid-task is survived as on local disk.
 */
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { lancedb } from "../../src/arrow.ts";
import { addColumns, backfill } from "../../src/index.ts";
import { rows, udfRef } from "../helpers.ts";
import { RedisServer, requireRedisServer } from "../redis.ts";
import { freshBucket, requireS3, s3Server } from "../s3.ts";
import { startLancetWorker, type WorkerProc } from "../lancet-worker.ts";

const STALL = ["--lock-duration-ms", "2000", "--stalled-interval-ms", "500"];
const workers = new Set<WorkerProc>();

describe("distributed backfills of a table on S3", { skip: requireRedisServer() || requireS3() }, () => {
  let redis: RedisServer;
  before(async () => {
    redis = await RedisServer.start();
  });
  afterEach(() => Promise.all([...workers].map((w) => w.stop())));
  after(async () => {
    await Promise.all([...workers].map((w) => w.stop()));
    await redis?.stop();
  });

  test("workers with only Redis and the bucket (their own cwd, no shared folder) compute a column; a worker killed mid-task is survived", async () => {
    const env = await s3Server();
    const db = `s3://${await freshBucket(env)}/db`;
    const so = env.storageOptions;
    const conn = await lancedb.connect(db, { storageOptions: so });
    const t = await conn.createTable("t", rows(0, 400));
    for (let f = 1; f < 6; f++) await t.add(rows(f * 400, 400));
    const ref = { db, table: "t", storageOptions: so };
    await addColumns(ref, { y: udfRef("slowDoubled", "distributed.ts") });
    const flags = Object.entries(so).flatMap(([k, v]) => ["--storage-option", `${k}=${v}`]);
    // Each worker runs in an empty directory of its own: nothing it needs is on a shared filesystem.
    const cwds = [0, 1].map(() => mkdtempSync(path.join(tmpdir(), "lancet-s3-worker-")));
    try {
      const ws = await Promise.all(cwds.map((cwd) => startLancetWorker(redis.url, workers, { args: [...STALL, ...flags, "--allow-db", db], cwd })));
      const job = backfill(ref, "y", { concurrency: 2, checkpointSize: 100, executor: { redis: redis.url } });
      // Kill one worker once the job is under way.
      await new Promise((r) => setTimeout(r, 2500));
      await ws[0]!.kill9();
      const r = await job;
      assert.equal(r.status, "finished");
      assert.equal(r.metrics.rowsCommitted, 2400);
      const fresh = await (await lancedb.connect(db, { storageOptions: so })).openTable("t");
      for (const row of (await fresh.query().select(["x", "y"]).toArray()) as Record<string, unknown>[]) assert.equal(row.y, row.x === null ? null : (row.x as number) * 2);
      for (const cwd of cwds) assert.deepEqual(readdirSync(cwd), [], "a worker wrote nothing to its local directory");
    } finally {
      for (const cwd of cwds) rmSync(cwd, { recursive: true, force: true });
    }
  });
});
