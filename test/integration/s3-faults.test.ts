// Faults between Lancet and the object store (issue 15): a table on a real S3 server (Ceph radosgw,
// see test/s3.ts) is created directly against the server, then Lancet is pointed at the
// fault-injecting proxy (test/s3-proxy.ts) in front of it. 503 SlowDown, connection resets, requests
// never answered and truncated bodies are either retried with backoff (the job finishes) or fail the
// job with a clear error code; either way nothing half-written becomes visible: after every case each
// table version opens and reads, no row goes missing and every computed value is right (y = x * 2),
// after the job or after a re-run without faults.
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { lancedb } from "../../src/arrow.ts";
import { addColumns, backfill, isBackfillError, type TableRef } from "../../src/index.ts";
import { rows, udfRef } from "../helpers.ts";
import { freshBucket, requireS3, s3Server, type S3Env } from "../s3.ts";
import { startS3Proxy, type S3Proxy } from "../s3-proxy.ts";

const skip = requireS3();

const FRAGMENTS = 3;
const PER_FRAGMENT = 200;
const TOTAL = FRAGMENTS * PER_FRAGMENT;
/** Codes a storage fault may legitimately end a job with. */
const CLEAR_CODES = ["STORAGE_FAILED", "CHECKPOINT_FAILED", "COMMIT_FAILED", "COMMIT_CONFLICT", "WORKER_CRASHED"] as const;
/** Small batches and one commit per fragment: many checkpoint PUTs/GETs and several commits per job. */
const BACKFILL = { concurrency: 2, checkpointSize: 50, commitGranularity: 1 } as const;

interface Setup {
  env: S3Env;
  db: string;
  /** straight to the server */
  direct: Record<string, string>;
  proxy: S3Proxy;
  /** Lancet's view of the table: through the proxy */
  ref: TableRef;
  /** the table's version once all its rows were added (before any Lancet commit) */
  createdVersion: number;
}

/** A fresh bucket with table t (FRAGMENTS × PER_FRAGMENT rows) made directly on the server, column y = doubled(x) bound through the proxy (no fault yet). */
async function setup(t: TestContext): Promise<Setup> {
  const env = await s3Server();
  const bucket = await freshBucket(env);
  const db = `s3://${bucket}/db`;
  const direct = env.storageOptions;
  const table = await (await lancedb.connect(db, { storageOptions: direct })).createTable("t", rows(0, PER_FRAGMENT));
  for (let f = 1; f < FRAGMENTS; f++) await table.add(rows(f * PER_FRAGMENT, PER_FRAGMENT));
  const createdVersion = await table.version();
  const proxy = await startS3Proxy(env.endpoint);
  t.after(() => proxy.close());
  const ref: TableRef = { db, table: "t", storageOptions: { ...direct, endpoint: proxy.endpoint } };
  await addColumns(ref, { y: udfRef("doubled") });
  return { env, db, direct, proxy, ref, createdVersion };
}

type Outcome = { ok: true; ms: number } | { ok: false; ms: number; error: Error & { code?: string } };

async function run(s: Setup): Promise<Outcome> {
  const t0 = Date.now();
  try {
    const r = await backfill(s.ref, "y", BACKFILL);
    assert.equal(r.status, "finished");
    return { ok: true, ms: Date.now() - t0 };
  } catch (e) {
    return { ok: false, ms: Date.now() - t0, error: e as Error & { code?: string } };
  }
}

/** A failure must be a BackfillError with one of CLEAR_CODES, a message naming what failed, and no secret in it. */
function assertClearFailure(s: Setup, e: Error & { code?: string }, codes: readonly string[] = CLEAR_CODES): void {
  assert.ok(
    codes.some((c) => isBackfillError(e, c as never)),
    `expected a BackfillError with one of ${codes.join(", ")}; got ${e?.name} ${e?.code}: ${e?.message}`,
  );
  const text = `${e.message}\n${e.stack ?? ""}\n${JSON.stringify(e)}`;
  assert.ok(!text.includes(s.env.secretAccessKey), `no secret in the error: ${e.message}`);
  assert.ok(e.message.length > 20, `a message that says what failed: ${e.message}`);
}

/** Every value of y is null (x null, or not computed yet when `complete` is false) or exactly x * 2; with `complete`, every non-null x has its y. */
function checkValues(data: Record<string, unknown>[], complete: boolean, where: string): void {
  for (const row of data) {
    const x = row.x as number | null;
    const y = row.y as number | null | undefined;
    if (x === null) assert.equal(y ?? null, null, `${where}: y of id ${row.id} (x null) must be null, is ${y}`);
    else if (complete || (y !== null && y !== undefined)) assert.equal(y, x * 2, `${where}: y of id ${row.id} (x ${x}) is ${y}`);
  }
}

/** Reads the latest table straight from the server: TOTAL rows, and y = x * 2 everywhere (complete) or only where computed. */
async function assertTable(s: Setup, complete: boolean): Promise<void> {
  const table = await (await lancedb.connect(s.db, { storageOptions: s.direct })).openTable("t");
  assert.equal(await table.countRows(), TOTAL, "no row went missing");
  const data = (await table.query().select(["id", "x", "y"]).toArray()) as Record<string, unknown>[];
  assert.equal(data.length, TOTAL);
  checkValues(data, complete, "latest version");
}

/** Every version of the table opens and reads in full from a fresh connection; from the created version on, every one has TOTAL rows and no wrong value. Returns the latest version. */
async function assertEveryVersion(s: Setup): Promise<number> {
  const conn = await lancedb.connect(s.db, { storageOptions: s.direct });
  const versions = await (await conn.openTable("t")).listVersions();
  assert.ok(versions.length >= s.createdVersion);
  for (const v of versions) {
    const pinned = await conn.openTable("t");
    await pinned.checkout(v.version);
    const n = await pinned.countRows();
    const data = (await pinned.query().toArray()) as Record<string, unknown>[];
    assert.equal(data.length, n, `version ${v.version} reads in full`);
    if (v.version >= s.createdVersion) {
      assert.equal(n, TOTAL, `version ${v.version} has every row`);
      if ("y" in (data[0] ?? {})) checkValues(data, false, `version ${v.version}`);
    } else {
      assert.ok(n > 0 && n < TOTAL);
    }
  }
  return Math.max(...versions.map((v) => v.version));
}

/** When the faulted run failed: a re-run without faults (still through the proxy) finishes; then the table is complete and every version reads. */
async function finishWithoutFaults(t: TestContext, s: Setup, first: Outcome): Promise<void> {
  if (first.ok) {
    t.diagnostic(`the job finished despite the faults in ${first.ms} ms (faults applied: ${s.proxy.faulted.length})`);
  } else {
    t.diagnostic(`the job failed in ${first.ms} ms with ${first.error.code}: ${first.error.message} (faults applied: ${s.proxy.faulted.length})`);
    assertClearFailure(s, first.error);
    // Nothing half-written visible between the failure and the re-run.
    await assertEveryVersion(s);
    await assertTable(s, false);
    s.proxy.clear();
    const again = await run(s);
    assert.ok(again.ok, `a re-run without faults finishes: ${again.ok ? "" : again.error.message}`);
  }
  await assertTable(s, true);
  await assertEveryVersion(s);
}

test("503 SlowDown on a few PUTs and GETs of Lancet's own objects during a backfill: retried with backoff, the job finishes with correct values", { skip, timeout: 60_000 }, async (t) => {
  const s = await setup(t);
  s.proxy.inject({ kind: "slowdown", match: { method: "PUT", key: "_lancet/t/ckp/" } }, 3);
  s.proxy.inject({ kind: "slowdown", match: { method: "GET", key: "_lancet/t/ckp/" } }, 2);
  s.proxy.inject({ kind: "slowdown", match: { method: "GET", key: "_lancet/t/udfs/" } }, 1);
  const r = await run(s);
  t.diagnostic(`faulted: ${s.proxy.faulted.join(", ")}`);
  assert.equal(s.proxy.faulted.filter((f) => f.startsWith("slowdown PUT")).length, 3, "the PUT faults were applied");
  assert.equal(s.proxy.faulted.filter((f) => f.startsWith("slowdown GET")).length, 3, "the GET faults were applied");
  assert.ok(r.ok, `a few 503s are retried: ${r.ok ? "" : `${r.error.code}: ${r.error.message}`}`);
  await assertTable(s, true);
  await assertEveryVersion(s);
});

test("connection resets on Lancet's objects and on the table's data files: retried, or a clear failure and a re-run finishes", { skip, timeout: 90_000 }, async (t) => {
  const s = await setup(t);
  s.proxy.inject({ kind: "reset", match: { key: "_lancet/t/ckp/" } }, 3);
  s.proxy.inject({ kind: "reset", match: { key: "t.lance/data/" } }, 2);
  const r = await run(s);
  t.diagnostic(`faulted: ${s.proxy.faulted.join(", ")}`);
  assert.equal(s.proxy.faulted.length, 5, "every reset was applied");
  await finishWithoutFaults(t, s, r);
});

// S3Store gives up on a request the server does not answer for 30 s (throwOnRequestTimeout) and retries it.
test("a checkpoint PUT never answered (held past the client's request timeout): retried, or a clear failure, within a bounded time; a re-run finishes", { skip, timeout: 150_000 }, async (t) => {
  const s = await setup(t);
  s.proxy.inject({ kind: "timeout", match: { method: "PUT", key: "_lancet/t/ckp/" } }, 1);
  // 30 s of client timeout, a retry, and the few seconds the job takes otherwise.
  const BOUND_MS = 50_000;
  const job = run(s);
  const first = await Promise.race([job, new Promise<"hung">((r) => setTimeout(() => r("hung"), BOUND_MS).unref())]);
  t.diagnostic(`faulted: ${s.proxy.faulted.join(", ")}`);
  assert.equal(s.proxy.faulted.length, 1, "the timeout was applied");
  let outcome: Outcome;
  if (first === "hung") {
    // Unstick it so the test can check what the stuck attempt leaves behind: the proxy drops the held
    // connection (the client sees a reset, as it would from a load balancer's idle timeout).
    t.diagnostic(`the job had neither finished nor failed ${BOUND_MS} ms after the PUT was held; dropping the held connection (${s.proxy.dropHeld()})`);
    outcome = await job;
    t.diagnostic(outcome.ok ? `then it finished (${outcome.ms} ms in all)` : `then it failed after ${outcome.ms} ms with ${outcome.error.code}: ${outcome.error.message}`);
  } else {
    outcome = first;
  }
  await finishWithoutFaults(t, s, outcome);
  assert.notEqual(first, "hung", `the job neither finished nor failed within ${BOUND_MS} ms of a request that is never answered`);
});

test("truncated GET responses (checkpoint reads, manifest reads, data reads): never short data committed", { skip, timeout: 90_000 }, async (t) => {
  const s = await setup(t);
  s.proxy.inject({ kind: "truncate", match: { method: "GET", key: "_lancet/t/ckp/" } }, 3);
  s.proxy.inject({ kind: "truncate", match: { method: "GET", key: "t.lance/_versions/" } }, 2);
  s.proxy.inject({ kind: "truncate", match: { method: "GET", key: "t.lance/data/" } }, 2);
  const r = await run(s);
  t.diagnostic(`faulted: ${s.proxy.faulted.join(", ")}`);
  assert.ok(s.proxy.faulted.length > 0, "some truncation was applied");
  await finishWithoutFaults(t, s, r);
});

test("every request to Lancet's objects answered 503 for the whole job: a clear failure within 120 s, the table unchanged, a later run finishes", { skip, timeout: 150_000 }, async (t) => {
  const s = await setup(t);
  const before = await assertEveryVersion(s);
  const unchanged = async (what: string): Promise<void> => {
    assert.equal(await assertEveryVersion(s), before, `${what}: no commit`);
    const table = await (await lancedb.connect(s.db, { storageOptions: s.direct })).openTable("t");
    assert.equal(await table.countRows(), TOTAL);
    assert.equal(await table.countRows("y IS NOT NULL"), 0, `${what}: y still null`);
  };
  // Everything under _lancet/ (bundles, locks, checkpoints, markers): the job fails before computing.
  s.proxy.inject({ kind: "slowdown", match: { key: "_lancet/" } }, 1e9);
  let r = await run(s);
  t.diagnostic(`all of _lancet/: ${r.ok ? "finished" : `failed with ${r.error.code}: ${r.error.message}`} in ${r.ms} ms after ${s.proxy.faulted.length} faulted request(s)`);
  assert.ok(!r.ok, "the job cannot finish without its own objects");
  assertClearFailure(s, r.error, ["STORAGE_FAILED", "CHECKPOINT_FAILED"]);
  assert.ok(r.ms < 120_000, `failed within a bounded time (${r.ms} ms)`);
  await unchanged("every _lancet/ request failing");
  // Only the checkpoint store (bundle and lock reachable): workers compute, then cannot secure a batch.
  s.proxy.clear();
  const faultedBefore = s.proxy.faulted.length;
  s.proxy.inject({ kind: "slowdown", match: { key: "_lancet/t/ckp/" } }, 1e9);
  r = await run(s);
  t.diagnostic(`all of _lancet/t/ckp/: ${r.ok ? "finished" : `failed with ${r.error.code}: ${r.error.message}`} in ${r.ms} ms after ${s.proxy.faulted.length - faultedBefore} faulted request(s)`);
  assert.ok(!r.ok, "the job cannot finish without its checkpoint store");
  assertClearFailure(s, r.error, ["STORAGE_FAILED", "CHECKPOINT_FAILED"]);
  assert.ok(r.ms < 120_000, `failed within a bounded time (${r.ms} ms)`);
  await unchanged("every checkpoint request failing");
  s.proxy.clear();
  const again = await run(s);
  assert.ok(again.ok, `a later run without faults finishes: ${again.ok ? "" : `${again.error.code}: ${again.error.message}`}`);
  await assertTable(s, true);
  await assertEveryVersion(s);
});
