// The graft committer on S3-compatible object storage (a real Ceph radosgw, see test/s3.ts): staged
// column files copied server-side into the table, the candidate manifest verified on a shadow table in
// the bucket, versions published with put-if-absent. Backfills commit by graft with no fallback; other
// processes appending and backfilling while grafts publish lose nothing (refused publications rebase
// and retry); kill -9 before and after publication, then a re-run, leaves every value right; a manifest
// PUT answered 503, or cut after the server stored it, publishes exactly once.
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import * as path from "node:path";
import { lancedb } from "../../src/arrow.ts";
import { addColumns, backfill, listJobs, useStorage, type TableRef } from "../../src/index.ts";
import { fieldIdsOf, intOf, manifestName, parseDataFile, parseManifestFile, readManifestFile } from "../../src/read/manifest.ts";
import { decodeMessage } from "../../src/read/protobuf.ts";
import { storeAt } from "../../src/storage/location.ts";
import { REPO, rows, udfRef } from "../helpers.ts";
import { freshBucket, requireS3, s3Server, type S3Env } from "../s3.ts";
import { startS3Proxy } from "../s3-proxy.ts";

const skip = requireS3();

interface Db {
  env: S3Env;
  db: string;
  direct: Record<string, string>;
  tableDir: string;
}

async function s3Table(fragments: number, perFragment: number): Promise<Db & { createdVersion: number }> {
  const env = await s3Server();
  const bucket = await freshBucket(env);
  const db = `s3://${bucket}/db`;
  const table = await (await lancedb.connect(db, { storageOptions: env.storageOptions })).createTable("t", rows(0, perFragment));
  for (let f = 1; f < fragments; f++) await table.add(rows(f * perFragment, perFragment));
  useStorage(db, env.storageOptions); // for reading manifests raw below
  return { env, db, direct: env.storageOptions, tableDir: `${db}/t.lance`, createdVersion: await table.version() };
}

/** The data files each version's DataReplacement transaction (the graft's) added, by version. */
async function graftedFiles(tableDir: string, from: number, to: number): Promise<Map<number, string[]>> {
  const out = new Map<number, string[]>();
  for (let v = from; v <= to; v++) {
    const { buf, fields } = await readManifestFile(tableDir, v);
    const at = intOf(fields, 21, -1);
    if (at < 0) continue;
    const len = new DataView(buf.buffer, buf.byteOffset + at, 4).getUint32(0, true);
    const txn = decodeMessage(buf.subarray(at + 4, at + 4 + len));
    const replacement = txn.find((f) => f.no === 111);
    if (!replacement) continue;
    out.set(
      v,
      decodeMessage(replacement.bytes)
        .filter((g) => g.no === 1)
        .flatMap((g) => decodeMessage(g.bytes).filter((x) => x.no === 2))
        .map((x) => parseDataFile(x.bytes).path),
    );
  }
  return out;
}

/** The data files of column `column` in the latest version. */
async function columnFiles(tableDir: string, column: string): Promise<string[]> {
  const m = parseManifestFile((await readManifestFile(tableDir)).buf);
  const ids = new Set(fieldIdsOf(m, column));
  return m.fragments.flatMap((f) => f.files.filter((d) => d.fields.some((x) => ids.has(x))).map((d) => d.path));
}

/** Every version opens and reads in full from a fresh connection; returns the latest. */
async function everyVersionReads(d: Db): Promise<number> {
  const conn = await lancedb.connect(d.db, { storageOptions: d.direct });
  const versions = await (await conn.openTable("t")).listVersions();
  for (const v of versions) {
    const pinned = await conn.openTable("t");
    await pinned.checkout(v.version);
    const n = await pinned.countRows();
    assert.equal(((await pinned.query().toArray()) as unknown[]).length, n, `version ${v.version} reads in full`);
  }
  return Math.max(...versions.map((v) => v.version));
}

async function assertValues(d: Db, columns: string[], total: number): Promise<void> {
  const t = await (await lancedb.connect(d.db, { storageOptions: d.direct })).openTable("t");
  assert.equal(await t.countRows(), total, "no row went missing");
  const data = (await t.query().select(["id", "x", ...columns]).toArray()) as Record<string, unknown>[];
  assert.equal(data.length, total);
  for (const row of data) for (const c of columns) assert.equal(row[c], row.x === null ? null : (row.x as number) * 2, `${c} of id ${String(row.id)}`);
}

/** The CLI, with the server's endpoint and credentials as --storage-option flags (`endpoint` overridable). */
function cli(d: Db, args: string[], extraEnv: Record<string, string> = {}, options: Record<string, string> = d.direct): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  const so = Object.entries(options).flatMap(([k, v]) => ["--storage-option", `${k}=${v}`]);
  const cleanEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("AWS_") && k !== "LANCET_FAILPOINTS"));
  const child = spawn(process.execPath, [path.join(REPO, "bin/lancet.mjs"), ...args, ...so], { stdio: ["ignore", "ignore", "pipe"], env: { ...cleanEnv, ...extraEnv } });
  let stderr = "";
  child.stderr.on("data", (b: Buffer) => (stderr += b.toString()));
  return new Promise((r) => child.on("exit", (code, signal) => r({ code, signal, stderr })));
}

test("a backfill on s3:// commits by graft: no fallback, the column's files are Lancet's copies named by DataReplacement transactions, values right", { skip, timeout: 120_000 }, async () => {
  const d = await s3Table(3, 200);
  const ref: TableRef = { db: d.db, table: "t", storageOptions: d.direct };
  await addColumns(ref, { y: udfRef("doubled"), z: udfRef("doubled") });
  const r = await backfill(ref, "y", { concurrency: 2, commitGranularity: 1 });
  assert.equal(r.status, "finished");
  assert.deepEqual(r.events.filter((e) => e.type === "commit-fallback"), [], "every fragment went through the graft");
  assert.equal(r.metrics.commits, 3);
  // Explicit graft mode is accepted on object storage too.
  const z = await backfill(ref, "z", { commitMode: "graft" });
  assert.equal(z.status, "finished");
  await assertValues(d, ["y", "z"], 600);
  const latest = await everyVersionReads(d);
  const grafted = await graftedFiles(d.tableDir, d.createdVersion + 1, latest);
  const fromGraft = new Set([...grafted.values()].flat());
  const yFiles = await columnFiles(d.tableDir, "y");
  assert.equal(yFiles.length, 3, "one file per fragment");
  for (const f of [...yFiles, ...(await columnFiles(d.tableDir, "z"))]) {
    assert.ok(fromGraft.has(f), `${f} was added by a graft (DataReplacement) version`);
    assert.match(f, /^[01]{20}[0-9a-f]{30}\.lance$/, "Lancet's name for a copied file");
    assert.ok((await storeAt(d.tableDir).get(`data/${f}`)) !== undefined, `data/${f} is in the table`);
  }
  // Nothing left behind in the store's tmp/ prefix (staged tables, shadows).
  assert.deepEqual(await storeAt(`${d.db}/_lancet/t`).list("tmp/"), []);
});

test("grafts publishing while another process appends and another backfills: put-if-absent refusals are retried; no row or value lost; every version opens", { skip, timeout: 300_000 }, async (t: TestContext) => {
  const d = await s3Table(6, 100);
  const proxy = await startS3Proxy(d.env.endpoint);
  t.after(() => proxy.close());
  const ref: TableRef = { db: d.db, table: "t", storageOptions: { ...d.direct, endpoint: proxy.endpoint } };
  await addColumns(ref, { a: udfRef("doubled"), b: udfRef("doubled") });
  // Hold this process's manifest PUTs (the table's own _versions/, not a shadow's) while the appender
  // keeps committing: each held PUT reaches the server after another writer took its version.
  proxy.inject({ kind: "timeout", ms: 1500, match: { method: "PUT", key: "/db/t.lance/_versions/" } }, 3);
  const appender = spawn(process.execPath, ["--input-type=module", "-e", `
    const { lancedb } = await import(${JSON.stringify(path.join(REPO, "src/arrow.ts"))});
    const { rows } = await import(${JSON.stringify(path.join(REPO, "test/helpers.ts"))});
    const t = await (await lancedb.connect(${JSON.stringify(d.db)}, { storageOptions: ${JSON.stringify(d.direct)} })).openTable("t");
    for (let i = 0; i < 12; i++) { await t.add(rows(10000 + i * 10, 10)); await new Promise((r) => setTimeout(r, 250)); }
  `], { stdio: ["ignore", "ignore", "pipe"] });
  let appendErr = "";
  appender.stderr.on("data", (b: Buffer) => (appendErr += b.toString()));
  const appended = new Promise<number | null>((r) => appender.on("exit", (code) => r(code)));
  const other = cli(d, ["backfill", "--db", d.db, "--table", "t", "--column", "b", "--concurrency", "1", "--commit-granularity", "1"]);
  const a = await backfill(ref, "a", { concurrency: 1, commitGranularity: 1 });
  const [b, appendCode] = await Promise.all([other, appended]);
  assert.equal(appendCode, 0, appendErr);
  assert.equal(a.status, "finished");
  assert.equal(b.code, 0, b.stderr);
  t.diagnostic(`held: ${proxy.faulted.join(", ")}; a: ${a.metrics.commits} commits, ${a.metrics.commitRetries} retries`);
  assert.equal(proxy.faulted.length, 3, "the manifest PUTs were held");
  const total = 600 + 120;
  const conn = await lancedb.connect(d.db, { storageOptions: d.direct });
  const table = await conn.openTable("t");
  assert.equal(await table.countRows(), total, "every appended row is there");
  assert.equal(await table.countRows("id < 600"), 600, "no original row went missing");
  // The original rows' values are there; rows appended meanwhile are filled by a re-run.
  for (const row of (await table.query().where("id < 600").select(["x", "a", "b"]).toArray()) as Record<string, unknown>[]) for (const c of ["a", "b"]) assert.equal(row[c], row.x === null ? null : (row.x as number) * 2);
  const jobs = await listJobs(d.db, { table: "t" });
  const retries = jobs.reduce((n, j) => n + j.metrics.commitRetries, 0);
  assert.ok(retries > 0, "put-if-absent refused some publications, and they were rebased and retried");
  assert.deepEqual(a.events.filter((e) => e.type === "commit-fallback"), [], "a's fragments went through the graft");
  for (const c of ["a", "b"]) await backfill(ref, c);
  await assertValues(d, ["a", "b"], total);
  await everyVersionReads(d);
});

for (const failpoint of ["graft.before-publish:kill", "graft.after-publish:kill"] as const) {
  test(`kill -9 of a CLI backfill at ${failpoint}, then a re-run: every value right, every version opens`, { skip, timeout: 180_000 }, async () => {
    const d = await s3Table(4, 100);
    const ref: TableRef = { db: d.db, table: "t", storageOptions: d.direct };
    await addColumns(ref, { y: udfRef("doubled") });
    const killed = await cli(d, ["backfill", "--db", d.db, "--table", "t", "--column", "y", "--commit-mode", "graft", "--concurrency", "1", "--commit-granularity", "1"], { LANCET_FAILPOINTS: failpoint });
    assert.equal(killed.signal, "SIGKILL", `killed at the failpoint: ${killed.stderr}`);
    const latest = await everyVersionReads(d);
    const grafted = await graftedFiles(d.tableDir, d.createdVersion + 1, latest);
    if (failpoint === "graft.before-publish:kill") assert.equal(grafted.size, 0, "nothing was published");
    else assert.equal(grafted.size, 1, "the version was published whole");
    const again = await backfill(ref, "y");
    assert.equal(again.status, "finished");
    await assertValues(d, ["y"], 400);
    await everyVersionReads(d);
  });
}

test("503 SlowDown on the manifest PUTs: retried, each version published once, by graft", { skip, timeout: 120_000 }, async (t: TestContext) => {
  const d = await s3Table(3, 200);
  const proxy = await startS3Proxy(d.env.endpoint);
  t.after(() => proxy.close());
  const ref: TableRef = { db: d.db, table: "t", storageOptions: { ...d.direct, endpoint: proxy.endpoint } };
  await addColumns(ref, { y: udfRef("doubled") });
  const before = await everyVersionReads(d);
  proxy.inject({ kind: "slowdown", match: { method: "PUT", key: "/db/t.lance/_versions/" } }, 2);
  const r = await backfill(ref, "y", { commitGranularity: 1 });
  assert.equal(proxy.faulted.length, 2, "both 503s were applied");
  assert.deepEqual(r.events.filter((e) => e.type === "commit-fallback"), []);
  const latest = await everyVersionReads(d);
  assert.equal(latest - before, r.metrics.commits, "one version per commit");
  assert.equal((await graftedFiles(d.tableDir, before + 1, latest)).size, 3);
  await assertValues(d, ["y"], 600);
});

/**
 * A proxy that forwards everything, except that once armed, the next `count` requests matching
 * `method` and `key` are forwarded whole (the server stores the object) and then answered with a
 * connection reset.
 */
async function storeThenReset(target: string, method: string, key: string): Promise<{ endpoint: string; cut: string[]; arm(count: number): void; close(): Promise<void> }> {
  const upstream = new URL(target);
  const agent = new http.Agent({ keepAlive: true });
  const sockets = new Set<Socket>();
  const cut: string[] = [];
  let left = 0;
  const server = http.createServer((req, res) => {
    const p = decodeURIComponent((req.url ?? "/").split("?")[0]!);
    const fault = left > 0 && req.method === method && p.includes(key);
    if (fault) left--;
    const up = http.request({ host: upstream.hostname, port: Number(upstream.port), method: req.method, path: req.url, headers: req.rawHeaders, setHost: false, agent });
    up.on("error", () => req.socket.destroy());
    up.on("response", (ur) => {
      if (fault) {
        ur.resume();
        ur.on("end", () => {
          cut.push(`${ur.statusCode} ${req.method} ${p}`);
          req.socket.destroy();
        });
        return;
      }
      res.writeHead(ur.statusCode ?? 502, ur.statusMessage, ur.rawHeaders);
      ur.pipe(res);
    });
    req.pipe(up);
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    cut,
    arm(count: number) {
      left = count;
    },
    async close() {
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const s of sockets) s.destroy();
      agent.destroy();
      await closed;
    },
  };
}

// 1: the SDK's resend gets 412 and putIfAbsent compares the stored bytes; 5: every attempt the SDK
// makes is cut (the first stored, the resends answered 412), the PUT fails, and putVersion reads the
// stored manifest back: ours.
for (const resets of [1, 5]) {
  test(`a manifest PUT reset after the server stored it (${resets} time(s) in a row): the retry finds its own version by its transaction and does not publish twice`, { skip, timeout: 180_000 }, async (t: TestContext) => {
    const d = await s3Table(3, 200);
    const proxy = await storeThenReset(d.env.endpoint, "PUT", "/db/t.lance/_versions/");
    t.after(() => proxy.close());
    const ref: TableRef = { db: d.db, table: "t", storageOptions: { ...d.direct, endpoint: proxy.endpoint } };
    await addColumns(ref, { y: udfRef("doubled") });
    const before = await everyVersionReads(d);
    proxy.arm(resets); // from here on, only the graft publishes versions of t
    const r = await backfill(ref, "y", { commitGranularity: 1 });
    t.diagnostic(`cut after storing: ${proxy.cut.join(", ")}`);
    assert.equal(proxy.cut.length, resets, "the resets were applied");
    assert.ok(proxy.cut.every((c) => c.endsWith(manifestName(before + 1, true))), "they cut the graft's publication of the next version");
    assert.match(proxy.cut[0]!, /^200 PUT/, "the first cut PUT was stored by the server");
    if (resets > 1) assert.ok(proxy.cut.slice(1).every((c) => c.startsWith("412 ")), "the resent PUTs found the version taken");
    assert.equal(r.status, "finished");
    assert.deepEqual(r.events.filter((e) => e.type === "commit-fallback"), [], "no fallback: the graft knew its version was published");
    const latest = await everyVersionReads(d);
    assert.equal(latest - before, r.metrics.commits, "one version per commit, none twice");
    const grafted = await graftedFiles(d.tableDir, before + 1, latest);
    assert.equal(grafted.size, 3, "three graft versions");
    assert.deepEqual(new Set([...grafted.values()].flat()), new Set(await columnFiles(d.tableDir, "y")));
    await assertValues(d, ["y"], 600);
  });
}

test("a manifest PUT that never reaches the server (reset every time): the commit fails saying its outcome is unknown, its data file is kept, nothing is published; a re-run finishes", { skip, timeout: 180_000 }, async (t: TestContext) => {
  const d = await s3Table(3, 200);
  const proxy = await startS3Proxy(d.env.endpoint);
  t.after(() => proxy.close());
  const ref: TableRef = { db: d.db, table: "t", storageOptions: { ...d.direct, endpoint: proxy.endpoint } };
  await addColumns(ref, { y: udfRef("doubled") });
  const before = await everyVersionReads(d);
  // Every send of the first publication is cut before it reaches the server: putVersion's three
  // attempts of the SDK's five each, with the version still absent after each.
  proxy.inject({ kind: "reset", match: { method: "PUT", key: "/db/t.lance/_versions/" } }, 15);
  await assert.rejects(backfill(ref, "y", { commitGranularity: 1, concurrency: 1 }), (e: unknown) => {
    assert.equal((e as { code?: string }).code, "COMMIT_FAILED", String(e));
    assert.match((e as Error).message, /failed 3 times .* still reads as absent; a request still in flight may yet publish it, so its data files are kept/);
    return true;
  });
  assert.equal(proxy.faulted.length, 15, "every PUT of the first publication was cut");
  const latest = await everyVersionReads(d);
  assert.equal((await graftedFiles(d.tableDir, before + 1, latest)).size, 2, "the other two fragments were grafted; the first was not published");
  const referenced = new Set(parseManifestFile((await readManifestFile(d.tableDir)).buf).fragments.flatMap((f) => f.files.map((x) => x.path)));
  const orphans = (await storeAt(d.tableDir).list("data/")).map((k) => k.slice("data/".length)).filter((f) => !referenced.has(f));
  assert.equal(orphans.length, 1, `the unpublished graft's data file is kept, and nothing else is unreferenced (${orphans.join(", ")})`);
  proxy.clear();
  const again = await backfill(ref, "y");
  assert.equal(again.status, "finished");
  await assertValues(d, ["y"], 600);
  await everyVersionReads(d);
});
