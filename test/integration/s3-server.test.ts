/**
 * The S3 test infrastructure itself: the radosgw server (test/s3.ts, tools/s3-server.sh) serves
 * LanceDB tables, honours put-if-absent, keeps concurrent commits from several processes, and the
 * fault-injecting proxy (test/s3-proxy.ts) forwards signed requests and injects what it is told.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { GetObjectCommand, PutObjectCommand, S3Client, S3ServiceException } from "@aws-sdk/client-s3";
import { lancedb } from "../../src/arrow.ts";
import { freshBucket, requireS3, s3Server, type S3Env } from "../s3.ts";
import { startS3Proxy } from "../s3-proxy.ts";

const exec = promisify(execFile);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const skip = requireS3();

function client(env: S3Env, endpoint = env.endpoint): S3Client {
  return new S3Client({
    endpoint,
    region: env.region,
    forcePathStyle: true,
    credentials: { accessKeyId: env.accessKeyId, secretAccessKey: env.secretAccessKey },
  });
}

test("LanceDB creates, appends to, counts and reopens a table on S3", { skip, timeout: 180_000 }, async () => {
  const env = await s3Server();
  const bucket = await freshBucket(env);
  const uri = `s3://${bucket}/db`;
  const db = await lancedb.connect(uri, { storageOptions: env.storageOptions });
  const t = await db.createTable("t", [
    { id: 1, text: "a" },
    { id: 2, text: "b" },
  ]);
  await t.add([
    { id: 3, text: "c" },
    { id: 4, text: "d" },
    { id: 5, text: "e" },
  ]);
  assert.equal(await t.countRows(), 5);
  assert.equal(await t.countRows("id > 3"), 2);
  t.close();
  db.close();

  const db2 = await lancedb.connect(uri, { storageOptions: env.storageOptions });
  assert.deepEqual(await db2.tableNames(), ["t"]);
  const t2 = await db2.openTable("t");
  assert.equal(await t2.countRows(), 5);
  const ids = (await t2.query().select(["id"]).toArray()).map((r) => Number(r.id)).sort((a, b) => a - b);
  assert.deepEqual(ids, [1, 2, 3, 4, 5]);
  assert.equal((await t2.listVersions()).length, 2);
  t2.close();
  db2.close();
});

test("put-if-absent: a second PutObject with If-None-Match: * on the same key fails with 412", { skip, timeout: 180_000 }, async () => {
  const env = await s3Server();
  const bucket = await freshBucket(env);
  const s3 = client(env);
  try {
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: "_versions/1.manifest", Body: "first", IfNoneMatch: "*" }));
    const err = await s3.send(new PutObjectCommand({ Bucket: bucket, Key: "_versions/1.manifest", Body: "second", IfNoneMatch: "*" })).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof S3ServiceException, `expected an S3 error, got ${String(err)}`);
    assert.equal(err.$metadata.httpStatusCode, 412);
    assert.equal(err.name, "PreconditionFailed");
    const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: "_versions/1.manifest" }));
    assert.equal(await got.Body!.transformToString(), "first", "the first writer's object is kept");
  } finally {
    s3.destroy();
  }
});

// One child process: opens the table and appends 5 single-row batches tagged with its writer number.
const APPENDER = `
const lancedb = require("@lancedb/lancedb");
(async () => {
  const [uri, writer] = process.argv.slice(1);
  const db = await lancedb.connect(uri, { storageOptions: JSON.parse(process.env.S3_OPTIONS) });
  const t = await db.openTable("t");
  for (let i = 0; i < 5; i++) await t.add([{ writer: Number(writer), seq: i }]);
  t.close();
  db.close();
})().catch((e) => { console.error(e); process.exit(1); });
`;

test("4 processes appending 5 times each to one table on S3 concurrently keep all 20 commits", { skip, timeout: 300_000 }, async () => {
  const env = await s3Server();
  const bucket = await freshBucket(env);
  const uri = `s3://${bucket}/db`;
  const db = await lancedb.connect(uri, { storageOptions: env.storageOptions });
  const t = await db.createTable("t", [{ writer: -1, seq: -1 }]);
  const writers = [0, 1, 2, 3];
  await Promise.all(
    writers.map((w) =>
      exec(process.execPath, ["-e", APPENDER, uri, String(w)], { cwd: ROOT, env: { ...process.env, S3_OPTIONS: JSON.stringify(env.storageOptions) }, timeout: 240_000 }),
    ),
  );
  await t.checkoutLatest();
  assert.equal(await t.countRows(), 21, "the seed row plus 4 x 5 appended rows");
  const rows = (await t.query().where("writer >= 0").toArray()).map((r) => `${r.writer}:${r.seq}`).sort();
  const expected = writers.flatMap((w) => [0, 1, 2, 3, 4].map((s) => `${w}:${s}`)).sort();
  assert.deepEqual(rows, expected);
  assert.equal((await t.listVersions()).length, 21, "one version per commit: create + 20 appends");
  t.close();
  db.close();
});

test("the fault proxy: SlowDown and resets are retried by the SDK, a truncated body fails the read", { skip, timeout: 180_000 }, async () => {
  const env = await s3Server();
  const bucket = await freshBucket(env);
  const proxy = await startS3Proxy(env.endpoint);
  const body = "0123456789".repeat(1000);
  const s3 = client(env, proxy.endpoint);
  try {
    // Plain forwarding keeps SigV4 valid, If-None-Match included.
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: "k/obj", Body: body, IfNoneMatch: "*" }));
    const dup = await s3.send(new PutObjectCommand({ Bucket: bucket, Key: "k/obj", Body: "x", IfNoneMatch: "*" })).then(() => undefined, (e: unknown) => e);
    assert.ok(dup instanceof S3ServiceException && dup.$metadata.httpStatusCode === 412, "If-None-Match went through the proxy");
    const get = async () => (await s3.send(new GetObjectCommand({ Bucket: bucket, Key: "k/obj" }))).Body!.transformToString();

    // slowdown x2: two 503 SlowDown replies, the third attempt (the SDK's default maxAttempts is 3) succeeds.
    let before = proxy.requests;
    proxy.inject({ kind: "slowdown", match: { method: "GET", key: "k/obj" } }, 2);
    const slow = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: "k/obj" }));
    assert.equal(await slow.Body!.transformToString(), body);
    assert.equal(slow.$metadata.attempts, 3);
    assert.equal(proxy.requests - before, 3);

    // reset x1: the socket is destroyed without a reply; the SDK retries on a new connection.
    before = proxy.requests;
    proxy.inject({ kind: "reset", match: { method: "GET" } }, 1);
    const reset = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: "k/obj" }));
    assert.equal(await reset.Body!.transformToString(), body);
    assert.equal(reset.$metadata.attempts, 2);
    assert.equal(proxy.requests - before, 2);

    // truncate x1: the headers (and the status) arrive, so the SDK returns the response, and the
    // short body then fails the read; the SDK does not retry a body that fails after the response.
    before = proxy.requests;
    proxy.inject({ kind: "truncate", match: { method: "GET" } }, 1);
    const cut = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: "k/obj" }));
    assert.equal(cut.ContentLength, body.length, "the original Content-Length is kept");
    await assert.rejects(cut.Body!.transformToString());
    assert.equal(proxy.requests - before, 1, "no retry of a truncated body");
    // The next read is clean again.
    assert.equal(await get(), body);

    // timeout with ms: held, then forwarded.
    proxy.inject({ kind: "timeout", ms: 300, match: { method: "GET" } }, 1);
    const t0 = Date.now();
    assert.equal(await get(), body);
    assert.ok(Date.now() - t0 >= 290, "the request was held");

    // LanceDB through the proxy: a SlowDown on its manifest write is retried by its object store.
    const db = await lancedb.connect(`s3://${bucket}/db`, { storageOptions: { ...env.storageOptions, endpoint: proxy.endpoint } });
    const t = await db.createTable("t", [{ id: 1 }]);
    proxy.inject({ kind: "slowdown", match: { method: "PUT", key: ".manifest" } }, 1);
    before = proxy.requests;
    await t.add([{ id: 2 }]);
    assert.equal(await t.countRows(), 2);
    assert.ok(proxy.requests - before >= 3, "the data file, the rejected manifest write and its retry");
    t.close();
    db.close();
  } finally {
    s3.destroy();
    await proxy.close();
  }
});
