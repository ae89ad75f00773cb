// refragment on S3-compatible object storage (a real Ceph radosgw, see test/s3.ts): the library and
// the CLI (`--storage-option` only), rows, values and order kept; kill -9 of the CLI before the swap
// (failpoint), while the swap's manifest is being published (the proxy holds its PUT) and after it
// (the proxy holds the index rebuild), each followed by a re-run; another process appending while
// the publication is held (put-if-absent refuses the rewrite, which starts again or stops with
// COMMIT_CONFLICT, the appended rows kept); a backfill on the new fragments afterwards.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import * as path from "node:path";
import { promisify } from "node:util";
import { ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import { lancedb, type LanceNs } from "../../src/arrow.ts";
import { addColumns, backfill, isBackfillError, refragment } from "../../src/index.ts";
import { parseManifestFile } from "../../src/read/manifest.ts";
import { REPO, rows, udfRef } from "../helpers.ts";
import { freshBucket, requireS3, s3Server, type S3Env } from "../s3.ts";
import { startS3Proxy } from "../s3-proxy.ts";

const skip = requireS3();
const TABLE = "docs";
const run = promisify(execFile);

interface S3Db {
  env: S3Env;
  bucket: string;
  db: string;
  storageOptions: Record<string, string>;
}

async function s3Db(): Promise<S3Db> {
  const env = await s3Server();
  const bucket = await freshBucket(env);
  return { env, bucket, db: `s3://${bucket}/db`, storageOptions: env.storageOptions };
}

/** Table docs: `fragments` appends of `perFragment` rows (id, x, s), a BTREE index on id. */
async function makeTable(s: S3Db, fragments: number, perFragment: number): Promise<void> {
  const t = await (await lancedb.connect(s.db, { storageOptions: s.storageOptions })).createTable(TABLE, rows(0, perFragment));
  for (let f = 1; f < fragments; f++) await t.add(rows(f * perFragment, perFragment));
  await t.createIndex("id", { config: lancedb.Index.btree() });
}

async function open(s: S3Db, version?: number): Promise<LanceNs.Table> {
  return (await lancedb.connect(s.db, { storageOptions: s.storageOptions })).openTable(TABLE, undefined, (version === undefined ? {} : { version }) as never);
}

/** Every row, in scan order. */
async function readAll(s: S3Db, columns = ["id", "x", "s"]): Promise<Record<string, unknown>[]> {
  return (await (await open(s)).query().select(columns).toArray()) as Record<string, unknown>[];
}

async function layout(s: S3Db): Promise<{ version: number; fragments: number[]; indexes: string[] }> {
  const t = await open(s);
  const m = parseManifestFile(await getObject(s, `db/${TABLE}.lance/_versions/${await latestManifestName(s)}`));
  return { version: await t.version(), fragments: m.fragments.map((f) => f.physicalRows), indexes: (await t.listIndices()).map((i) => `${i.name}:${i.indexType}`) };
}

function client(s: S3Db): S3Client {
  return new S3Client({ endpoint: s.env.endpoint, region: s.env.region, forcePathStyle: true, credentials: { accessKeyId: s.env.accessKeyId, secretAccessKey: s.env.secretAccessKey } });
}

/** Keys of the bucket under `prefix`, straight from the server. */
async function keysUnder(s: S3Db, prefix: string): Promise<string[]> {
  const c = client(s);
  const out: string[] = [];
  let token: string | undefined;
  try {
    do {
      const r = await c.send(new ListObjectsV2Command({ Bucket: s.bucket, Prefix: prefix, ...(token === undefined ? {} : { ContinuationToken: token }) }));
      for (const o of r.Contents ?? []) out.push(o.Key!);
      token = r.NextContinuationToken;
    } while (token);
  } finally {
    c.destroy();
  }
  return out;
}

async function getObject(s: S3Db, key: string): Promise<Uint8Array> {
  const { GetObjectCommand } = await import("@aws-sdk/client-s3");
  const c = client(s);
  try {
    return await (await c.send(new GetObjectCommand({ Bucket: s.bucket, Key: key }))).Body!.transformToByteArray();
  } finally {
    c.destroy();
  }
}

/** The latest version's manifest name (V2 naming: the smallest number). */
async function latestManifestName(s: S3Db): Promise<string> {
  const names = (await keysUnder(s, `db/${TABLE}.lance/_versions/`)).map((k) => k.slice(k.lastIndexOf("/") + 1)).filter((n) => n.endsWith(".manifest"));
  return names.sort()[0]!;
}

/** The swap's data files in the table (`*-refragment.lance`), and those the latest manifest refers to. */
async function swapFiles(s: S3Db): Promise<{ present: string[]; referenced: string[] }> {
  const present = (await keysUnder(s, `db/${TABLE}.lance/data/`)).map((k) => k.slice(k.lastIndexOf("/") + 1)).filter((n) => n.endsWith("-refragment.lance"));
  const m = parseManifestFile(await getObject(s, `db/${TABLE}.lance/_versions/${await latestManifestName(s)}`));
  const referenced = m.fragments.flatMap((f) => f.files.map((d) => d.path)).filter((n) => n.endsWith("-refragment.lance"));
  return { present: present.sort(), referenced: referenced.sort() };
}

/** Every version of the table opens and reads all its rows. */
async function everyVersionReads(s: S3Db): Promise<number> {
  const versions = await (await open(s)).listVersions();
  for (const v of versions) {
    const h = await open(s, v.version);
    const n = await h.countRows();
    assert.equal((await h.query().select(["id"]).toArrow()).numRows, n, `version ${v.version} reads all its ${n} rows`);
  }
  return versions.length;
}

const journalKey = `db/_lancet/${TABLE}/refragment/`;

/** `lancet refragment` on the bucket, endpoint and credentials in --storage-option flags only (no AWS_* variables). */
function cli(s: S3Db, args: string[], options: { endpoint?: string; env?: Record<string, string> } = {}): { done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>; pid: number } {
  const so = Object.entries({ ...s.storageOptions, ...(options.endpoint === undefined ? {} : { endpoint: options.endpoint }) }).flatMap(([k, v]) => ["--storage-option", `${k}=${v}`]);
  const cleanEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("AWS_") && k !== "LANCET_FAILPOINTS"));
  const child = spawn(process.execPath, [path.join(REPO, "bin/lancet.mjs"), "refragment", "--db", s.db, "--table", TABLE, ...args, ...so], { stdio: ["ignore", "pipe", "pipe"], env: { ...cleanEnv, ...options.env }, detached: true });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  return { pid: child.pid!, done: new Promise((r) => child.on("exit", (code, signal) => r({ code, signal, stdout, stderr }))) };
}

/** Another process appends rows 100000..100249 to the table, straight to the server. */
async function appendFromAnotherProcess(s: S3Db): Promise<void> {
  const script = `import { lancedb } from ${JSON.stringify(path.join(REPO, "src/arrow.ts"))};
import { rows } from ${JSON.stringify(path.join(REPO, "test/helpers.ts"))};
const t = await (await lancedb.connect(${JSON.stringify(s.db)}, { storageOptions: ${JSON.stringify(s.storageOptions)} })).openTable(${JSON.stringify(TABLE)});
await t.add(rows(100000, 250));
console.log("appended");`;
  const { stdout } = await run(process.execPath, ["--input-type=module", "-e", script], { cwd: REPO });
  assert.match(stdout, /appended/);
}

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test("library: refragment on s3:// keeps rows, values, order and the index; LanceDB's V2 manifest names; nothing left in the Lancet prefix; a backfill then runs on the new fragments", { skip }, async () => {
  const s = await s3Db();
  await makeTable(s, 3, 300);
  const before = await readAll(s);
  const l0 = await layout(s);
  assert.deepEqual(l0.fragments, [300, 300, 300]);
  const phases: string[] = [];
  const ref = { db: s.db, table: TABLE, storageOptions: s.storageOptions };
  const r = await refragment(ref, { maxRowsPerFragment: 100, onProgress: (p) => void phases.push(p.phase) });
  assert.deepEqual([r.rows, r.fragmentsBefore, r.fragmentsAfter, r.fromVersion, r.swapVersion, r.toVersion, r.resumed, r.conflicts], [900, 3, 9, l0.version, l0.version + 1, l0.version + 2, false, 0]);
  assert.deepEqual(r.indexes, ["id_idx"]);
  assert.deepEqual(phases, [...Array(9).fill("staging"), "published", "indexed"]);
  const l1 = await layout(s);
  assert.deepEqual(l1.fragments, Array(9).fill(100));
  assert.deepEqual(l1.indexes, ["id_idx:BTree"]);
  assert.deepEqual(await readAll(s), before, "same rows, values and order");
  assert.deepEqual(await (await open(s)).query().where("id = 777").select(["id", "s"]).toArray().then((x) => x.map((y) => Number(y.id))), [777]);
  // Published under LanceDB's V2 names (u64::MAX − version, 20 digits), as LanceDB names its own.
  const manifests = (await keysUnder(s, `db/${TABLE}.lance/_versions/`)).map((k) => k.slice(k.lastIndexOf("/") + 1));
  assert.equal(manifests.length, l0.version + 2);
  assert.ok(manifests.every((n) => /^\d{20}\.manifest$/.test(n)), manifests.join(", "));
  const files = await swapFiles(s);
  assert.equal(files.referenced.length, 9);
  assert.deepEqual(files.present, files.referenced, "the swap's data files are all referenced");
  assert.deepEqual(await keysUnder(s, journalKey), [], "journal, staging and shadow are gone");
  assert.equal(await everyVersionReads(s), l0.version + 2);
  // A backfill on the new fragments: every value computed, on all 9 fragments.
  await addColumns(ref, { y: udfRef("doubled") });
  const b = await backfill(ref, "y", { concurrency: 2 });
  assert.equal(b.status, "finished");
  assert.equal(b.metrics.rowsComputed, 900);
  const after = await readAll(s, ["id", "x", "y"]);
  assert.equal(after.length, 900);
  for (const row of after) assert.equal(row.y, row.x === null ? null : (row.x as number) * 2);
  assert.deepEqual(after.map((x) => x.id), before.map((x) => x.id));
});

test("CLI: lancet refragment --db s3://… with --storage-option only", { skip }, async () => {
  const s = await s3Db();
  await makeTable(s, 2, 500);
  const before = await readAll(s);
  const v = (await layout(s)).version;
  const r = await cli(s, ["--max-rows-per-fragment", "200"]).done;
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`refragmented ${TABLE}: 1,?000 rows, 2 → 5 fragments \\(version ${v} → ${v + 1}; 1 index\\(es\\) rebuilt: id_idx → version ${v + 2}\\)`));
  assert.deepEqual((await layout(s)).fragments, [200, 200, 200, 200, 200]);
  assert.deepEqual(await readAll(s), before);
  const json = await cli(s, ["--max-rows-per-fragment", "500", "--json"]).done;
  assert.equal(json.code, 0, json.stderr);
  const out = JSON.parse(json.stdout.trim()) as { status: string; fragmentsBefore: number; fragmentsAfter: number };
  assert.deepEqual([out.status, out.fragmentsBefore, out.fragmentsAfter], ["ok", 5, 2]);
  assert.deepEqual(await readAll(s), before);
  await everyVersionReads(s);
});

test("CLI killed -9 before the swap (refragment.mid-rewrite:kill): the table is untouched; a re-run resumes and completes", { skip }, async () => {
  const s = await s3Db();
  await makeTable(s, 2, 600);
  const before = await readAll(s);
  const l0 = await layout(s);
  const k = await cli(s, ["--max-rows-per-fragment", "200"], { env: { LANCET_FAILPOINTS: "refragment.mid-rewrite:kill@2" } }).done;
  assert.equal(k.signal, "SIGKILL", k.stderr);
  assert.deepEqual(await layout(s), l0, "nothing was committed");
  assert.deepEqual(await readAll(s), before);
  assert.ok((await keysUnder(s, `${journalKey}journal.json`)).length === 1, "the journal is in the bucket");
  const r = await cli(s, ["--max-rows-per-fragment", "200", "--json"]).done;
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim()) as { resumed: boolean; fragmentsAfter: number; rows: number };
  assert.deepEqual([out.resumed, out.fragmentsAfter, out.rows], [true, 6, 1200]);
  assert.deepEqual(await readAll(s), before);
  assert.deepEqual((await layout(s)).indexes, ["id_idx:BTree"]);
  assert.deepEqual(await keysUnder(s, journalKey), []);
  await everyVersionReads(s);
});

test("CLI killed -9 while its swap is being published (data files copied, manifest PUT held): the table is untouched; a re-run removes the copies and completes", { skip }, async () => {
  const s = await s3Db();
  await makeTable(s, 2, 600);
  const before = await readAll(s);
  const l0 = await layout(s);
  const proxy = await startS3Proxy(s.env.endpoint);
  try {
    // The table's own _versions/ (the shadow's is under db/_lancet/…), PUT: the publication.
    proxy.inject({ kind: "timeout", match: { method: "PUT", key: `/${s.bucket}/db/${TABLE}.lance/_versions/` } });
    const c = cli(s, ["--max-rows-per-fragment", "300"], { endpoint: proxy.endpoint });
    await until("the publication's PUT", () => proxy.faulted.length > 0);
    // Verified and copied: the swap's files are in the table, referenced by nothing.
    const copied = await swapFiles(s);
    assert.equal(copied.present.length, 4);
    assert.deepEqual(copied.referenced, []);
    process.kill(-c.pid, "SIGKILL");
    assert.equal((await c.done).signal, "SIGKILL");
    assert.deepEqual(await layout(s), l0, "nothing was published");
    assert.deepEqual(await readAll(s), before);
    const r = await cli(s, ["--max-rows-per-fragment", "300", "--json"]).done;
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim()) as { resumed: boolean; fragmentsAfter: number; swapVersion: number };
    assert.deepEqual([out.resumed, out.fragmentsAfter, out.swapVersion], [true, 4, l0.version + 1]);
    const files = await swapFiles(s);
    assert.deepEqual(files.present, files.referenced, "the first run's copies were removed");
    assert.ok(copied.present.every((f) => !files.present.includes(f)));
    assert.deepEqual(await readAll(s), before);
    assert.deepEqual(await keysUnder(s, journalKey), []);
    await everyVersionReads(s);
  } finally {
    await proxy.close();
  }
});

test("CLI killed -9 after its swap was published (index rebuild held): the new layout is committed; a re-run rebuilds the index", { skip }, async () => {
  const s = await s3Db();
  await makeTable(s, 2, 600);
  const before = await readAll(s);
  const l0 = await layout(s);
  const proxy = await startS3Proxy(s.env.endpoint);
  try {
    proxy.inject({ kind: "timeout", match: { method: "PUT", key: `/${s.bucket}/db/${TABLE}.lance/_indices/` } });
    const c = cli(s, ["--max-rows-per-fragment", "400"], { endpoint: proxy.endpoint });
    await until("the index rebuild's PUT", () => proxy.faulted.length > 0);
    process.kill(-c.pid, "SIGKILL");
    assert.equal((await c.done).signal, "SIGKILL");
    const l1 = await layout(s);
    assert.equal(l1.version, l0.version + 1, "the swap was published");
    assert.deepEqual(l1.fragments, [400, 400, 400]);
    assert.deepEqual(l1.indexes, [], "the index is not rebuilt yet");
    assert.deepEqual(await readAll(s), before);
    const r = await cli(s, ["--max-rows-per-fragment", "400", "--json"]).done;
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim()) as { resumed: boolean; swapVersion: number; toVersion: number; indexes: string[] };
    assert.deepEqual([out.resumed, out.swapVersion, out.toVersion, out.indexes], [true, l0.version + 1, l0.version + 2, ["id_idx"]]);
    assert.deepEqual((await layout(s)).indexes, ["id_idx:BTree"]);
    assert.deepEqual(await readAll(s), before);
    assert.deepEqual(await keysUnder(s, journalKey), []);
    await everyVersionReads(s);
  } finally {
    await proxy.close();
  }
});

for (const retries of [2, 0]) {
  test(`another process appends while the swap's publication is held: put-if-absent refuses it, and refragment ${retries > 0 ? "starts again and keeps the appended rows" : "stops with COMMIT_CONFLICT (conflictRetries 0), the append and old layout intact"}`, { skip }, async () => {
    const s = await s3Db();
    await makeTable(s, 2, 600);
    const before = await readAll(s);
    const l0 = await layout(s);
    const proxy = await startS3Proxy(s.env.endpoint);
    try {
      proxy.inject({ kind: "timeout", match: { method: "PUT", key: `/${s.bucket}/db/${TABLE}.lance/_versions/` } });
      const ref = { db: s.db, table: TABLE, storageOptions: { ...s.storageOptions, endpoint: proxy.endpoint } };
      const running = refragment(ref, { maxRowsPerFragment: 300, conflictRetries: retries }).then((r) => r, (e: unknown) => e);
      await until("the publication's PUT", () => proxy.faulted.length > 0);
      await appendFromAnotherProcess(s); // commits version V+1 first
      assert.equal(proxy.dropHeld(), 1); // the held PUT is sent again: If-None-Match refuses it now
      const r = await running;
      const rowsNow = await readAll(s);
      assert.equal(rowsNow.length, 1450);
      assert.deepEqual(rowsNow.slice(0, 1200), before);
      assert.deepEqual(rowsNow.slice(1200).map((x) => Number(x.id)), Array.from({ length: 250 }, (_, i) => 100_000 + i), "the appended rows are there");
      if (retries > 0) {
        assert.ok(!(r instanceof Error), String(r));
        const res = r as Awaited<ReturnType<typeof refragment>>;
        assert.deepEqual([res.conflicts, res.fromVersion, res.rows, res.fragmentsAfter], [1, l0.version + 1, 1450, 5]);
        assert.deepEqual((await layout(s)).fragments, [300, 300, 300, 300, 250]);
      } else {
        assert.ok(isBackfillError(r, "COMMIT_CONFLICT") && r.retryable, String(r));
        assert.match((r as Error).message, /another writer committed while it rewrote version \d+.*Nothing of the refragment was committed; the table keeps every other writer's commits/);
        const l = await layout(s);
        assert.equal(l.version, l0.version + 1);
        assert.deepEqual(l.fragments, [600, 600, 250], "the old layout plus the append");
      }
      const files = await swapFiles(s);
      assert.deepEqual(files.present, files.referenced, "the refused swap's copies were removed");
      assert.deepEqual(await keysUnder(s, journalKey), []);
      await everyVersionReads(s);
    } finally {
      await proxy.close();
    }
  });
}
