// Tables, checkpoints, locks, bundles and the jobs and errors tables on S3-compatible object storage
// (a real Ceph radosgw, see test/s3.ts): backfills through the library and the CLI, resume after
// kill -9, several processes committing to one table at once, and no shared filesystem anywhere.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import { lancedb } from "../../src/arrow.ts";
import { addColumns, backfill, createView, getJob, isBackfillError, listErrors, listJobs, listViews, refreshView, useStorage } from "../../src/index.ts";
import { REPO, rows, udfRef } from "../helpers.ts";
import { freshBucket, requireS3, s3Server, type S3Env } from "../s3.ts";

const skip = requireS3();

async function s3Db(): Promise<{ env: S3Env; db: string; storageOptions: Record<string, string> }> {
  const env = await s3Server();
  const bucket = await freshBucket(env);
  return { env, db: `s3://${bucket}/db`, storageOptions: env.storageOptions };
}

async function makeS3Table(db: string, storageOptions: Record<string, string>, fragments: number, perFragment: number): Promise<void> {
  const conn = await lancedb.connect(db, { storageOptions });
  const t = await conn.createTable("t", rows(0, perFragment));
  for (let f = 1; f < fragments; f++) await t.add(rows(f * perFragment, perFragment));
}

async function readBack(db: string, storageOptions: Record<string, string>, columns: string[]): Promise<Record<string, unknown>[]> {
  const t = await (await lancedb.connect(db, { storageOptions })).openTable("t");
  return (await t.query().select(["x", ...columns]).toArray()) as Record<string, unknown>[];
}

async function keysUnder(env: S3Env, db: string, prefix: string): Promise<string[]> {
  const [bucket, ...rest] = db.slice("s3://".length).split("/");
  const client = new S3Client({ endpoint: env.endpoint, region: env.region, forcePathStyle: true, credentials: { accessKeyId: env.accessKeyId, secretAccessKey: env.secretAccessKey } });
  const out: string[] = [];
  let token: string | undefined;
  do {
    const r = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${rest.join("/")}/${prefix}`, ContinuationToken: token }));
    for (const o of r.Contents ?? []) out.push(o.Key!);
    token = r.NextContinuationToken;
  } while (token);
  client.destroy();
  return out;
}

/** The CLI with the S3 server's endpoint and credentials in --storage-option flags only (no AWS_* variables). */
function cli(env: S3Env, args: string[], extraEnv: Record<string, string> = {}): { done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>; pid: number } {
  const so = Object.entries(env.storageOptions).flatMap(([k, v]) => ["--storage-option", `${k}=${v}`]);
  const cleanEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("AWS_")));
  const child = spawn(process.execPath, [path.join(REPO, "bin/lancet.mjs"), ...args, ...so], { stdio: ["ignore", "pipe", "pipe"], env: { ...cleanEnv, ...extraEnv }, detached: true });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  return { pid: child.pid!, done: new Promise((r) => child.on("exit", (code, signal) => r({ code, signal, stdout, stderr }))) };
}

test("a backfill on s3:// keeps everything in the bucket: values, bundles, checkpoints' markers, locks, jobs and errors tables; no local files", { skip }, async () => {
  const { env, db, storageOptions } = await s3Db();
  await makeS3Table(db, storageOptions, 3, 200);
  const cwd = mkdtempSync(path.join(tmpdir(), "lancet-s3-cwd-"));
  const before = process.cwd();
  process.chdir(cwd); // any file Lancet wrongly wrote "locally" would land here
  try {
    const ref = { db, table: "t", storageOptions };
    await addColumns(ref, { y: udfRef("doubled"), z: udfRef("throws") });
    const r = await backfill(ref, "y", { concurrency: 2 });
    assert.equal(r.status, "finished");
    assert.equal(r.metrics.rowsComputed, 600);
    for (const row of await readBack(db, storageOptions, ["y"])) assert.equal(row.y, row.x === null ? null : (row.x as number) * 2);
    assert.ok(r.events.every((e) => e.type !== "commit-fallback"), "auto commits every fragment by graft on object storage too (put-if-absent), no fallback to mergeInsert");
    // A skipped row's error goes to the errors table in the bucket.
    const z = await backfill(ref, "z", { concurrency: 1, errorPolicy: "skip" });
    assert.ok(z.metrics.rowsSkipped > 0);
    const errors = await listErrors(db, { column: "z" });
    assert.equal(errors.length, z.metrics.rowsSkipped);
    assert.match(errors[0]!.message, /bad x/);
    // The jobs table is in the bucket; a job record holds no secret.
    const jobs = await listJobs(db, { table: "t" });
    assert.equal(jobs.length, 2);
    assert.ok(!JSON.stringify(await getJob(db, r.id)).includes(env.secretAccessKey), "no secret in the job record");
    // Everything Lancet keeps is under the database's prefix.
    const store = await keysUnder(env, db, "_lancet/t/");
    assert.ok(store.some((k) => /\/_lancet\/t\/udfs\/[0-9a-f]{64}\.mjs$/.test(k)), "bundles in the bucket");
    assert.ok(store.some((k) => /\/_lancet\/t\/ckp\/markers\/y\/done\/.+\.json$/.test(k)), "done markers in the bucket");
    assert.ok(store.some((k) => /\/_lancet\/t\/locks\/y\/1\.lock$/.test(k)), "the column lock in the bucket");
    assert.ok(!store.some((k) => /\/ckp\/batches\//.test(k)), "committed fragments' checkpoints removed");
    assert.ok((await keysUnder(env, db, "_lancet_jobs.lance/_versions/")).length > 0);
    assert.ok((await keysUnder(env, db, "_lancet_errors.lance/_versions/")).length > 0);
    assert.deepEqual(readdirSync(cwd), [], "nothing written to the local filesystem");
    // The graft asked for explicitly works on object storage too (it publishes with put-if-absent).
    await addColumns(ref, { w: udfRef("doubled") });
    const w = await backfill(ref, "w", { commitMode: "graft" });
    assert.equal(w.status, "finished");
    assert.ok(w.events.every((e) => e.type !== "commit-fallback"));
    for (const row of await readBack(db, storageOptions, ["w"])) assert.equal(row.w, row.x === null ? null : (row.x as number) * 2);
    assert.deepEqual(readdirSync(cwd), [], "nothing written to the local filesystem by the graft either");
  } finally {
    process.chdir(before);
    rmSync(cwd, { recursive: true, force: true });
  }
});

test("CLI on s3:// with --storage-option only: kill -9 mid-job, then a re-run computes only what was not checkpointed", { skip }, async () => {
  const { env, db, storageOptions } = await s3Db();
  await makeS3Table(db, storageOptions, 4, 500);
  let r = cli(env, ["add-column", "--db", db, "--table", "t", "--column", "y", "--udf", udfRef("slowBatch")]);
  assert.equal((await r.done).code, 0);
  r = cli(env, ["backfill", "--db", db, "--table", "t", "--column", "y", "--concurrency", "2", "--checkpoint-size", "50", "--commit-granularity", "1"]);
  // Wait until some batches are checkpointed in the bucket, then kill the whole process group.
  const deadline = Date.now() + 90_000;
  while (Date.now() < deadline && (await keysUnder(env, db, "_lancet/t/ckp/")).filter((k) => k.endsWith(".arrow") || k.endsWith(".json")).length < 8) await new Promise((x) => setTimeout(x, 100));
  process.kill(-r.pid, "SIGKILL");
  const killed = await r.done;
  assert.equal(killed.signal, "SIGKILL", killed.stderr);
  const ckp = await keysUnder(env, db, "_lancet/t/ckp/");
  const batches = ckp.filter((k) => k.endsWith(".arrow")).map((k) => /(\d+)-(\d+)\.arrow$/.exec(k)!).reduce((n, m) => n + Number(m[2]) - Number(m[1]), 0);
  const done = ckp.filter((k) => /markers\/y\/done\//.test(k)).length;
  assert.ok(batches + done > 0, "something was secured before the kill");
  // The re-run (library, same process: storage options from the ref) resumes.
  const again = await backfill({ db, table: "t", storageOptions }, "y", { concurrency: 2 });
  assert.ok(again.metrics.rowsComputed <= 2000 - batches - done * 500 + 0, `re-run computed ${again.metrics.rowsComputed}; ${batches} rows were in checkpoints and ${done} fragment(s) committed`);
  assert.ok(again.metrics.rowsComputed < 2000);
  for (const row of await readBack(db, storageOptions, ["y"])) assert.equal(row.y, row.x === null ? null : (row.x as number) * 2);
  // The CLI reads the same jobs table.
  const jobs = cli(env, ["jobs", "--db", db, "--json"]);
  const out = await jobs.done;
  assert.equal(out.code, 0, out.stderr);
  assert.ok(out.stdout.includes(again.id));
  assert.ok(!out.stdout.includes(env.secretAccessKey) && !out.stderr.includes(env.secretAccessKey));
});

test("several processes committing to one table on s3:// at once (three backfills of different columns and an appender): no row goes missing", { skip }, async () => {
  const { env, db, storageOptions } = await s3Db();
  await makeS3Table(db, storageOptions, 3, 300);
  const add = cli(env, ["add-column", "--db", db, "--table", "t", "--column", "a", "--udf", udfRef("doubled")]);
  assert.equal((await add.done).code, 0);
  for (const c of ["b", "c"]) assert.equal((await cli(env, ["add-column", "--db", db, "--table", "t", "--column", c, "--udf", udfRef("doubled")]).done).code, 0);
  const runs = ["a", "b", "c"].map((c) => cli(env, ["backfill", "--db", db, "--table", "t", "--column", c, "--concurrency", "1", "--commit-granularity", "1"]));
  // Meanwhile another process appends rows with plain LanceDB.
  const appender = spawn(process.execPath, ["--input-type=module", "-e", `
    const { lancedb, arrow } = await import(${JSON.stringify(path.join(REPO, "src/arrow.ts"))});
    const { rows } = await import(${JSON.stringify(path.join(REPO, "test/helpers.ts"))});
    const t = await (await lancedb.connect(${JSON.stringify(db)}, { storageOptions: ${JSON.stringify(storageOptions)} })).openTable("t");
    for (let i = 0; i < 5; i++) await t.add(rows(10000 + i * 10, 10));
  `], { stdio: ["ignore", "ignore", "pipe"] });
  let appendErr = "";
  appender.stderr.on("data", (d: Buffer) => (appendErr += d.toString()));
  const appended = new Promise<number | null>((r) => appender.on("exit", (code) => r(code)));
  const results = await Promise.all(runs.map((x) => x.done));
  assert.equal(await appended, 0, appendErr);
  // mergeInsert commits of other columns racing each other may make one fragment fail (a clear
  // commit error naming it, "run the backfill again"); nothing is lost either way.
  for (const [i, x] of results.entries()) assert.ok(x.code === 0 || /lancet: error COMMIT_(FAILED|CONFLICT): .*Run the backfill again/.test(x.stderr), `backfill ${"abc"[i]}: ${x.stderr}`);
  // A LanceDB handle does not see other writers' commits until checked out again: every count below
  // reads the latest version (a stale handle would count values a re-run has since filled).
  const t = await (await lancedb.connect(db, { storageOptions })).openTable("t");
  const nulls = async (c: string): Promise<number> => {
    await t.checkoutLatest();
    return t.countRows(`x IS NOT NULL AND ${c} IS NULL`);
  };
  assert.equal(await t.countRows(), 900 + 50, "every appended row is there");
  assert.equal(await t.countRows("id < 900"), 900, "no original row went missing");
  // Re-runs fill what is left. Rows appended while another backfill of the table ran may wait for a
  // later run on the mergeInsert path (their key is generated only when no other backfill runs).
  const reruns: string[] = [];
  for (const c of ["a", "b", "c"]) {
    for (let i = 0; i < 3 && (await nulls(c)) > 0; i++) {
      try {
        const r = await backfill({ db, table: "t", storageOptions }, c);
        reruns.push(`${c}#${i + 1}: ${r.events.map((e) => e.message).join(" | ")}`);
      } catch (e) {
        // A merge whose values did not read back is refused (COMMIT_FAILED) and its rows stay to redo.
        assert.ok(isBackfillError(e, "COMMIT_FAILED"), String(e));
        reruns.push(`${c}#${i + 1}: failed: ${(e as Error).message}`);
      }
    }
  }
  const left = [await nulls("a"), await nulls("b"), await nulls("c")];
  assert.equal(await t.countRows(), 900 + 50, "no row went missing");
  assert.deepEqual(left, [0, 0, 0], `values still null after re-runs:\n${reruns.join("\n")}`);
  for (const row of (await t.query().select(["x", "a", "b", "c"]).toArray()) as Record<string, unknown>[]) for (const c of ["a", "b", "c"]) assert.equal(row[c], row.x === null ? null : (row.x as number) * 2);
});

test("a database on object storage with a wrong endpoint or credentials fails with a clear error and no secret in it", { skip }, async () => {
  const { env, db, storageOptions } = await s3Db();
  await makeS3Table(db, storageOptions, 1, 10);
  const r = cli({ ...env, storageOptions: { ...storageOptions, secret_access_key: "not-the-secret-1234" } }, ["status", "--db", db, "--table", "t"]);
  const out = await r.done;
  assert.notEqual(out.code, 0);
  assert.ok(!out.stderr.includes("not-the-secret-1234"), out.stderr);
  assert.match(out.stderr, /lancet: error/);
  assert.ok(!existsSync(path.join(process.cwd(), "s3:")));
});

test("views on s3://: a view with a UDF column refreshes incrementally, a chunk view expands its parents; status and views from the CLI", { skip }, async () => {
  const { env, db, storageOptions } = await s3Db();
  useStorage(db, storageOptions);
  const conn = await lancedb.connect(db, { storageOptions });
  const src = await conn.createTable("src", rows(0, 300), { storageOptions: { new_table_enable_stable_row_ids: "true" } } as never);
  await createView(db, "v", { source: "src", select: ["id", "x", "s"], udfs: { y: udfRef("doubled") } });
  const first = await refreshView(db, "v");
  assert.equal(first.rowsAdded, 300);
  await src.add(rows(300, 50));
  await src.delete("id < 10");
  const second = await refreshView(db, "v");
  assert.equal(second.rowsAdded, 50);
  assert.equal(second.rowsDeleted, 10);
  const v = await conn.openTable("v");
  assert.equal(await v.countRows(), 340);
  for (const row of (await v.query().select(["x", "y"]).toArray()) as Record<string, unknown>[]) assert.equal(row.y, row.x === null ? null : (row.x as number) * 2);
  await createView(db, "c", { source: "src", select: ["id"], chunker: udfRef("words", "chunkers.ts") });
  const c = await refreshView(db, "c");
  assert.ok(c.rowsAdded > 340);
  assert.deepEqual((await listViews(db)).map((x) => x.name), ["c", "v"]);
  const status = await cli(env, ["status", "--db", db, "--table", "v", "--json"]).done;
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, /"y"/);
  const views = await cli(env, ["views", "--db", db]).done;
  assert.equal(views.code, 0, views.stderr);
  assert.match(views.stdout, /\bc\b[\s\S]*\bv\b/);
});
