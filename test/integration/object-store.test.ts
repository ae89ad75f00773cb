/**
 * One conformance suite for every ObjectStore: a local temporary directory (always) and a real S3
 * server (Ceph radosgw from `test/s3.ts`, a fresh bucket per test; skipped where none can start).
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, request } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { isBackfillError } from "../../src/errors.ts";
import { LocalStore, S3Store } from "../../src/storage/object-store.ts";
import type { ObjectStore } from "../../src/storage/object-store.ts";
import { freshBucket, requireS3, s3Server } from "../s3.ts";

const MODULE = fileURLToPath(new URL("../../src/storage/object-store.ts", import.meta.url));
const NODE = process.execPath;

interface StoreFixture extends AsyncDisposable {
  store: ObjectStore;
  /** Code for a child process: an expression that builds an equal store from `m` (the module). */
  remake: string;
  /** The local root folder, for a local store. */
  dir?: string;
}

const text = (b: Uint8Array | undefined): string | undefined => (b === undefined ? undefined : Buffer.from(b).toString("utf8"));

async function rejectsWith(p: Promise<unknown>, code: string, re?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isBackfillError(e), `expected a BackfillError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (re) assert.match(e.message, re);
    return true;
  });
}

/** Runs `n` child processes that each putIfAbsent(key, own id) on an equal store; returns their results. */
async function putIfAbsentFromProcesses(f: StoreFixture, key: string, n: number): Promise<boolean[]> {
  const script = `import * as m from ${JSON.stringify(MODULE)}; const s = ${f.remake}; const ok = await s.putIfAbsent(${JSON.stringify(key)}, "proc-" + process.argv[1]); process.stdout.write(JSON.stringify(ok));`;
  const run = (i: number): Promise<boolean> =>
    new Promise((resolve, reject) => {
      execFile(NODE, ["--no-warnings", "--input-type=module", "-e", script, String(i)], { timeout: 60_000 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`child ${i} failed: ${err.message}\n${stderr}`));
        else resolve(JSON.parse(stdout) as boolean);
      });
    });
  return Promise.all(Array.from({ length: n }, (_, i) => run(i)));
}

async function inPool<T>(items: T[], width: number, fn: (x: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) await fn(items[next++] as T);
    }),
  );
}

interface FaultProxy extends AsyncDisposable {
  endpoint: string;
  /** The next this many PUTs are answered 503 SlowDown. */
  slowDownPuts: number;
  /** The next this many GETs of an object send half the body, then reset the connection. */
  truncateGets: number;
}

/** A loopback HTTP proxy in front of the S3 server that injects faults (no toxiproxy here). */
async function faultProxy(upstream: string): Promise<FaultProxy> {
  const up = new URL(upstream);
  const state = { slowDownPuts: 0, truncateGets: 0 };
  const server = createServer((req, res) => {
    if (req.method === "PUT" && state.slowDownPuts > 0) {
      state.slowDownPuts--;
      req.resume();
      res.writeHead(503, { "content-type": "application/xml" });
      res.end("<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>");
      return;
    }
    const truncate = req.method === "GET" && !(req.url ?? "").includes("list-type") && state.truncateGets > 0;
    if (truncate) state.truncateGets--;
    const out = request({ host: up.hostname, port: up.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      if (!truncate) {
        r.pipe(res);
        return;
      }
      const chunks: Buffer[] = [];
      r.on("data", (c: Buffer) => chunks.push(c));
      r.on("end", () => {
        const all = Buffer.concat(chunks);
        res.write(all.subarray(0, all.length >> 1), () => res.destroy());
      });
    });
    out.on("error", () => res.destroy());
    req.pipe(out);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as AddressInfo;
  return Object.assign(state, {
    endpoint: `http://127.0.0.1:${port}`,
    [Symbol.asyncDispose]: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  });
}

function conformance(name: string, skip: string | false, make: () => Promise<StoreFixture>): void {
  describe(`ObjectStore conformance: ${name}`, { skip, concurrency: 1 }, () => {
    test("get of a missing key is undefined", async () => {
      await using f = await make();
      assert.equal(await f.store.get("nope"), undefined);
      assert.equal(await f.store.get("no/such/folder/key"), undefined);
    });

    test("put/get round trip: binary, string, 0 bytes, 5 MB", async () => {
      await using f = await make();
      const s = f.store;
      const bin = new Uint8Array(256).map((_, i) => i);
      await s.put("bin", bin);
      assert.deepEqual(await s.get("bin"), bin);
      await s.put("a/b/text.json", '{"é":"ü"}');
      assert.equal(text(await s.get("a/b/text.json")), '{"é":"ü"}');
      await s.put("empty", new Uint8Array(0));
      const e = await s.get("empty");
      assert.ok(e instanceof Uint8Array);
      assert.equal(e.byteLength, 0);
      const big = randomBytes(5 * 1024 * 1024);
      await s.put("big/5mb", big);
      const got = await s.get("big/5mb");
      assert.equal(got?.byteLength, big.byteLength);
      assert.ok(Buffer.from(got as Uint8Array).equals(big));
    });

    test("put replaces, with longer and shorter bytes", async () => {
      await using f = await make();
      await f.store.put("k", "first");
      await f.store.put("k", "second, longer");
      assert.equal(text(await f.store.get("k")), "second, longer");
      await f.store.put("k", "3");
      assert.equal(text(await f.store.get("k")), "3");
      assert.deepEqual(await f.store.list(""), ["k"]);
    });

    test("a reader sees the old or the new bytes, never a part", async () => {
      await using f = await make();
      const size = 1024 * 1024;
      const fill = (c: number): Uint8Array => new Uint8Array(size).fill(c);
      await f.store.put("atomic", fill(65));
      let writing = true;
      const writer = (async () => {
        for (let i = 0; i < 8; i++) await f.store.put("atomic", fill(66 + (i % 2)));
        writing = false;
      })();
      let reads = 0;
      while (writing || reads < 3) {
        const b = await f.store.get("atomic");
        assert.ok(b !== undefined && b.byteLength === size, `read ${b?.byteLength} bytes`);
        assert.ok(b.every((x) => x === b[0]), "mixed bytes");
        reads++;
      }
      await writer;
    });

    test("putIfAbsent: true, then false, and the first value stays", async () => {
      await using f = await make();
      assert.equal(await f.store.putIfAbsent("lock", "one"), true);
      assert.equal(await f.store.putIfAbsent("lock", "two"), false);
      assert.equal(text(await f.store.get("lock")), "one");
      await f.store.put("lock", "three");
      assert.equal(await f.store.putIfAbsent("lock", "four"), false);
      await f.store.delete("lock");
      assert.equal(await f.store.putIfAbsent("lock", "five"), true);
      assert.equal(text(await f.store.get("lock")), "five");
      assert.deepEqual(await f.store.list(""), ["lock"]);
    });

    test("8 concurrent putIfAbsent on one key: exactly one wins", async () => {
      await using f = await make();
      for (const key of ["race", "deep/er/race"]) {
        const results = await Promise.all(Array.from({ length: 8 }, (_, i) => f.store.putIfAbsent(key, `writer-${i}`)));
        assert.equal(results.filter((x) => x).length, 1, JSON.stringify(results));
        assert.equal(text(await f.store.get(key)), `writer-${results.indexOf(true)}`);
      }
      assert.deepEqual(await f.store.list(""), ["deep/er/race", "race"]);
    });

    test("4 processes putIfAbsent on one key: exactly one wins", async () => {
      await using f = await make();
      const results = await putIfAbsentFromProcesses(f, "proc/race", 4);
      assert.equal(results.filter((x) => x).length, 1, JSON.stringify(results));
      assert.equal(text(await f.store.get("proc/race")), `proc-${results.indexOf(true)}`);
    });

    test("list: sorted, recursive, by string prefix, no temporary files", async () => {
      await using f = await make();
      const s = f.store;
      const keys = ["b", "a/2", "a/1", "a/sub/x", "ab", "a.json", "z/y/x/w", "A"];
      for (const k of keys) await s.put(k, k);
      if (f.dir) await writeFile(path.join(f.dir, "a", `stray.${randomUUID()}.tmp`), "half");
      const sorted = [...keys].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
      assert.deepEqual(await s.list(""), sorted);
      assert.deepEqual(await s.list("a/"), ["a/1", "a/2", "a/sub/x"]);
      assert.deepEqual(await s.list("a"), ["a.json", "a/1", "a/2", "a/sub/x", "ab"]);
      assert.deepEqual(await s.list("a/s"), ["a/sub/x"]);
      assert.deepEqual(await s.list("z/y/"), ["z/y/x/w"]);
      assert.deepEqual(await s.list("nothing/"), []);
      assert.deepEqual(await s.list("b"), ["b"]);
      // Keys written concurrently with a listing never show up half-made.
      const writes = Promise.all(Array.from({ length: 20 }, (_, i) => s.put(`w/${i}`, randomBytes(64 * 1024))));
      for (let i = 0; i < 5; i++) for (const k of await s.list("w/")) assert.match(k, /^w\/\d+$/);
      await writes;
      assert.equal((await s.list("w/")).length, 20);
    });

    test("more than 1000 keys: list pages, deletePrefix batches", async () => {
      await using f = await make();
      const keys = Array.from({ length: 1105 }, (_, i) => `many/${String(i).padStart(5, "0")}`);
      await inPool(keys, 32, (k) => f.store.put(k, k));
      await f.store.put("other", "x");
      const listed = await f.store.list("many/");
      assert.equal(listed.length, keys.length);
      assert.deepEqual(listed, keys);
      await f.store.deletePrefix("many/");
      assert.deepEqual(await f.store.list(""), ["other"]);
    });

    test("delete: a missing key is fine", async () => {
      await using f = await make();
      await f.store.delete("missing");
      await f.store.delete("missing/deeper");
      await f.store.put("x/y", "1");
      await f.store.delete("x/y");
      assert.equal(await f.store.get("x/y"), undefined);
      await f.store.delete("x/y");
      assert.deepEqual(await f.store.list(""), []);
    });

    test("deletePrefix: a folder, a key prefix, everything", async () => {
      await using f = await make();
      const s = f.store;
      for (const k of ["a/1", "a/b/2", "ab", "abc/1", "b/1", "c"]) await s.put(k, k);
      await s.deletePrefix("a/");
      assert.deepEqual(await s.list(""), ["ab", "abc/1", "b/1", "c"]);
      await s.deletePrefix("ab");
      assert.deepEqual(await s.list(""), ["b/1", "c"]);
      await s.deletePrefix("nothing/");
      await s.deletePrefix("nothing");
      await s.put("a/again", "1");
      assert.equal(text(await s.get("a/again")), "1");
      await s.deletePrefix("");
      assert.deepEqual(await s.list(""), []);
      await s.put("after", "1");
      assert.deepEqual(await s.list(""), ["after"]);
    });

    test("child stores see the parent's keys under their prefix", async () => {
      await using f = await make();
      const c = f.store.child("jobs/j1");
      assert.equal(c.uri, `${f.store.uri}/jobs/j1`);
      assert.equal(f.store.child("jobs/j1/").uri, c.uri);
      await c.put("m/marker", "1");
      assert.equal(await c.putIfAbsent("lock", "me"), true);
      assert.equal(await f.store.putIfAbsent("jobs/j1/lock", "other"), false);
      assert.equal(text(await f.store.get("jobs/j1/m/marker")), "1");
      await f.store.put("jobs/j2/x", "2");
      assert.deepEqual(await c.list(""), ["lock", "m/marker"]);
      const grand = c.child("m");
      assert.deepEqual(await grand.list(""), ["marker"]);
      await c.deletePrefix("");
      assert.deepEqual(await f.store.list(""), ["jobs/j2/x"]);
    });

    test("copy: the same bytes under another key (another folder, 0 bytes, 5 MB), its size returned; it replaces; the source stays", async () => {
      await using f = await make();
      const s = f.store;
      const big = randomBytes(5 * 1024 * 1024);
      await s.put("src/big", big);
      assert.equal(await s.copy("src/big", "dst/deep/big"), big.byteLength);
      assert.ok(Buffer.from((await s.get("dst/deep/big")) as Uint8Array).equals(big));
      assert.ok(Buffer.from((await s.get("src/big")) as Uint8Array).equals(big), "the source stays");
      await s.put("src/empty", new Uint8Array(0));
      assert.equal(await s.copy("src/empty", "dst/empty"), 0);
      assert.equal((await s.get("dst/empty"))?.byteLength, 0);
      await s.put("src/small", "small");
      assert.equal(await s.copy("src/small", "dst/deep/big"), 5);
      assert.equal(text(await s.get("dst/deep/big")), "small");
      // A key with characters a URL must escape (S3's copy source header).
      await s.put("src/a b+c%é", "odd");
      assert.equal(await s.copy("src/a b+c%é", "dst/a b+c%é"), 3);
      assert.equal(text(await s.get("dst/a b+c%é")), "odd");
      assert.deepEqual(await s.list("dst/"), ["dst/a b+c%é", "dst/deep/big", "dst/empty"]);
      // Through a child store, keys are relative to it.
      const c = s.child("src");
      assert.equal(await c.copy("small", "small-2"), 5);
      assert.equal(text(await s.get("src/small-2")), "small");
    });

    test("copy of a missing source: STORAGE_FAILED, not retryable, nothing written; invalid keys refused", async () => {
      await using f = await make();
      await assert.rejects(f.store.copy("no/such", "dst/x"), (e: unknown) => isBackfillError(e, "STORAGE_FAILED") && !e.retryable && /the source does not exist/.test((e as Error).message));
      assert.deepEqual(await f.store.list(""), []);
      await f.store.put("a", "x");
      await rejectsWith(f.store.copy("a", "../b"), "CONFIG_INVALID");
      await rejectsWith(f.store.copy("/a", "b"), "CONFIG_INVALID");
      assert.deepEqual(await f.store.list(""), ["a"]);
    });

    test("invalid keys are refused", async () => {
      await using f = await make();
      const bad = ["", "/a", "a//b", "a/", "../a", "a/../b", "a/./b", ".", "..", "a\\b", "a\nb", `x.${randomUUID()}.tmp`];
      for (const k of bad) {
        await rejectsWith(f.store.get(k), "CONFIG_INVALID", /object key .* is invalid/);
        await rejectsWith(f.store.put(k, "x"), "CONFIG_INVALID");
        await rejectsWith(f.store.putIfAbsent(k, "x"), "CONFIG_INVALID");
        await rejectsWith(f.store.delete(k), "CONFIG_INVALID");
      }
      for (const p of ["/", "../", "a//", "/a", "a/../"]) {
        await rejectsWith(f.store.list(p), "CONFIG_INVALID", /object prefix .* is invalid/);
        await rejectsWith(f.store.deletePrefix(p), "CONFIG_INVALID");
      }
      assert.throws(() => f.store.child("../up"), (e: unknown) => isBackfillError(e, "CONFIG_INVALID"));
      assert.deepEqual(await f.store.list(""), []);
    });
  });
}

conformance("local", false, async () => {
  const dir = await mkdtemp(path.join(tmpdir(), "lancet-os-"));
  const root = path.join(dir, "root");
  return {
    store: new LocalStore(root),
    remake: `new m.LocalStore(${JSON.stringify(root)})`,
    dir: root,
    [Symbol.asyncDispose]: () => rm(dir, { recursive: true, force: true }),
  };
});

const skipS3 = requireS3();

conformance("s3", skipS3, async () => {
  const env = await s3Server();
  const bucket = await freshBucket(env);
  const uri = `s3://${bucket}/lancet/root`;
  return {
    store: new S3Store(uri, env.storageOptions),
    remake: `new m.S3Store(${JSON.stringify(uri)}, ${JSON.stringify(env.storageOptions)})`,
    [Symbol.asyncDispose]: async () => {
      // the bucket is fresh per test; leave it to the server's teardown
    },
  };
});

describe("S3Store failures", { skip: skipS3 }, () => {
  test("a root at the bucket itself, without a prefix", async () => {
    const env = await s3Server();
    const bucket = await freshBucket(env);
    const s = new S3Store(`s3://${bucket}`, env.storageOptions);
    assert.equal(s.uri, `s3://${bucket}`);
    await s.put("k/1", "v");
    assert.deepEqual(await s.list(""), ["k/1"]);
    assert.deepEqual(await s.child("k").list(""), ["1"]);
  });

  test("wrong credentials: STORAGE_FAILED, and the secret is not in the message", async () => {
    const env = await s3Server();
    const bucket = await freshBucket(env);
    const secret = "WRONG-secret-" + randomUUID();
    for (const opts of [
      { ...env.storageOptions, secret_access_key: secret },
      { ...env.storageOptions, aws_access_key_id: "NOSUCHKEY", aws_secret_access_key: secret, access_key_id: "NOSUCHKEY", secret_access_key: secret },
    ]) {
      const s = new S3Store(`s3://${bucket}/p`, opts);
      for (const op of [() => s.get("k"), () => s.put("k", "v"), () => s.putIfAbsent("k", "v"), () => s.list(""), () => s.deletePrefix("")]) {
        await assert.rejects(op(), (e: unknown) => {
          assert.ok(isBackfillError(e, "STORAGE_FAILED"), String(e));
          assert.match(e.message, new RegExp(`s3://${bucket}/p/.* failed after \\d+ attempts?: .*check the endpoint and credentials`));
          assert.ok(!e.message.includes(secret), e.message);
          assert.ok(!JSON.stringify(e.context).includes(secret));
          return true;
        });
      }
    }
  });

  test("faults: 503 SlowDown is retried; a truncated body is read again, never returned short", async () => {
    const env = await s3Server();
    const bucket = await freshBucket(env);
    await using proxy = await faultProxy(env.endpoint);
    const s = new S3Store(`s3://${bucket}/p`, { ...env.storageOptions, endpoint: proxy.endpoint });
    const data = randomBytes(256 * 1024);
    proxy.slowDownPuts = 2;
    await s.put("k", data);
    assert.equal(proxy.slowDownPuts, 0);
    proxy.truncateGets = 2;
    const got = await s.get("k");
    assert.equal(proxy.truncateGets, 0);
    assert.ok(got !== undefined && Buffer.from(got).equals(data), `got ${got?.byteLength} bytes`);
    proxy.truncateGets = 100;
    await rejectsWith(s.get("k"), "STORAGE_FAILED", /get s3:\/\/.*\/p\/k failed after 5 attempts: .*check the endpoint/);
  });

  test("an unreachable endpoint: STORAGE_FAILED after the SDK's attempts", async () => {
    const env = await s3Server();
    const s = new S3Store("s3://nobucket/p", { ...env.storageOptions, endpoint: "http://127.0.0.1:1" });
    await rejectsWith(s.get("k"), "STORAGE_FAILED", /get s3:\/\/nobucket\/p\/k failed after 5 attempts: .*; check the endpoint/);
  });
});
