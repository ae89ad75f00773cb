// Failpoints on the graft and commit paths, each hit while another process writes to the same table
// (appends, updates, deletes, optimize), 10 rounds each. After every case: every committed write of
// the other writer survived, every table version opens and reads, and a re-run fills every column
// with correct values. The same for the column lock (a backfill killed right after creating it) and
// for refragment killed mid-rewrite. lock.test.ts and refragment.test.ts test those two in detail.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import * as path from "node:path";
import { addColumns, backfill, createView, listJobs, refragment, refreshView } from "../../src/index.ts";
import { splitWords } from "../fixtures/chunkers.ts";
import { listManifestFiles, readManifest } from "../../src/read/manifest.ts";
import { FIXTURES, everyVersionReadable, makeTable, readAll, REPO, rows, tempDb, udfRef } from "../helpers.ts";

const ROUNDS = 10;

interface Outcome {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

function run(args: string[], env: Record<string, string> = {}): Promise<Outcome> {
  const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr })));
}

interface WriterOp {
  readonly op: string;
  readonly ok: boolean;
  readonly ids?: number[];
  readonly value?: string;
}

/** Checks that every write the other process reported committed is in the table. */
function assertWritesSurvived(rows: Record<string, unknown>[], ops: WriterOp[]): void {
  const byId = new Map(rows.map((r) => [Number(r.id), r]));
  const deleted = new Set(ops.filter((o) => o.ok && o.op === "delete").flatMap((o) => o.ids!));
  for (const o of ops.filter((x) => x.ok)) {
    if (o.op === "append") for (const id of o.ids!) assert.ok(byId.has(id), `appended row ${id} survived`);
    if (o.op === "update") for (const id of o.ids!) assert.equal(byId.get(id)?.s, o.value, `update of row ${id} survived`);
    if (o.op === "delete") for (const id of o.ids!) assert.ok(!byId.has(id), `deleted row ${id} stays deleted`);
  }
  for (let id = 0; id < 240; id++) if (!deleted.has(id)) assert.ok(byId.has(id), `original row ${id} survived`);
}

const CASES = [
  { failpoint: "graft.after-move", mode: "auto", what: "a staging failure falls back to mergeInsert; the job finishes" },
  { failpoint: "graft.verify-fail", mode: "auto", what: "auto falls back to mergeInsert; the job finishes" },
  { failpoint: "graft.verify-fail", mode: "graft", what: "nothing is published; the error says the table is unchanged" },
  { failpoint: "graft.before-publish:kill", mode: "graft", what: "the process dies before the link; nothing is published" },
  { failpoint: "graft.after-publish", mode: "graft", what: "a repair commit removes only the grafted files" },
  { failpoint: "graft.after-publish:kill", mode: "graft", what: "the process dies after the link; the version is whole" },
  { failpoint: "commit.before-marker:kill", mode: "auto", what: "the process dies before the done markers; the re-run adopts the values" },
  { failpoint: "lock.after-create:kill", mode: "auto", what: "the process dies holding a fresh lock; the re-run takes it over" },
] as const;

for (const c of CASES) {
  test(`failpoint ${c.failpoint} (${c.mode}), ${ROUNDS} rounds with a concurrent writer: ${c.what}`, async () => {
    await using t = await tempDb();
    await makeTable(t, 4, 60);
    const columns = Array.from({ length: ROUNDS }, (_, i) => `c${i}`);
    await addColumns({ db: t.dir, table: "t" }, Object.fromEntries(columns.map((col) => [col, udfRef("doubled")])));
    const ops: WriterOp[] = [];
    let hits = 0;
    for (let r = 0; r < ROUNDS; r++) {
      const writerOps = ["append", "update", "delete", ...(r % 3 === 2 ? ["optimize"] : [])].join(",");
      const [job, writer] = await Promise.all([
        run([path.join(REPO, "bin/lancet.mjs"), "backfill", "--db", t.dir, "--table", "t", "--column", columns[r]!, "--commit-mode", c.mode, "--concurrency", "1", "--commit-granularity", "1"], { LANCET_FAILPOINTS: c.failpoint }),
        run([path.join(FIXTURES, "writer.ts"), t.dir, "t", String(r), writerOps]),
      ]);
      ops.push(...writer.stdout.trim().split("\n").map((l) => JSON.parse(l) as WriterOp));
      const killed = job.signal === "SIGKILL";
      const failedAtPoint = job.code !== 0 && /failpoint/.test(job.stderr);
      if (c.failpoint.endsWith(":kill")) {
        if (killed) hits++;
        else assert.notEqual(job.code, null, "ended by itself");
      } else if (c.mode === "auto") {
        // Finished, or a fragment that the concurrent optimize rewrote is reported for the next run.
        assert.ok(job.code === 0 || /COMMIT_FAILED: \d+ fragment\(s\) of table t could not be committed/.test(job.stderr), `the job finished: ${job.stderr}`);
        const rec = (await listJobs(t.dir, { table: "t" })).find((j) => j.column === columns[r]);
        if (rec?.events.some((e) => e.type === "commit-fallback" && e.message.includes(`failpoint ${c.failpoint}`))) hits++;
      } else if (failedAtPoint) {
        hits++;
        if (c.failpoint === "graft.verify-fail") assert.match(job.stderr, /nothing was published: the table is unchanged at version \d+/);
        if (c.failpoint === "graft.after-publish") assert.match(job.stderr, /version \d+ removes only the grafted files of column c\d+ .* keeps every other writer's commits; the table is readable at version \d+/);
      }
      // The latest version reads, whatever happened.
      await (await t.open()).countRows();
    }
    assert.ok(hits >= ROUNDS / 2, `the failpoint was reached in ${hits} of ${ROUNDS} rounds`);
    assertWritesSurvived(await readAll(t, ["id", "s"]), ops);
    assert.ok((await everyVersionReadable(t)) > ROUNDS);
    // A re-run (no failpoints) finishes every column with correct values; the writer's rows survive it too.
    for (const col of columns) await backfill({ db: t.dir, table: "t" }, col);
    const rows = await readAll(t, ["id", "x", "s", ...columns]);
    for (const row of rows) for (const col of columns) assert.equal(row[col], row.x === null ? null : (row.x as number) * 2, `${col} of id ${String(row.id)}`);
    assertWritesSurvived(rows, ops);
    await everyVersionReadable(t);
  });
}

test(`failpoint refragment.mid-rewrite:kill, ${ROUNDS} rounds with a concurrent writer: the next run rolls forward; nothing is lost`, async () => {
  await using t = await tempDb();
  await makeTable(t, 2, 120);
  const ops: WriterOp[] = [];
  let hits = 0;
  for (let r = 0; r < ROUNDS; r++) {
    const [job, writer] = await Promise.all([
      run([path.join(REPO, "bin/lancet.mjs"), "refragment", "--db", t.dir, "--table", "t", "--max-rows-per-fragment", "30"], { LANCET_FAILPOINTS: "refragment.mid-rewrite:kill@2" }),
      run([path.join(FIXTURES, "writer.ts"), t.dir, "t", String(r), ["append", "update", "delete", ...(r % 3 === 2 ? ["optimize"] : [])].join(",")]),
    ]);
    ops.push(...writer.stdout.trim().split("\n").map((l) => JSON.parse(l) as WriterOp));
    if (job.signal === "SIGKILL") hits++;
    else assert.notEqual(job.code, null, "ended by itself");
    await (await t.open()).countRows();
  }
  assert.ok(hits >= ROUNDS / 2, `the failpoint was reached in ${hits} of ${ROUNDS} rounds`);
  assertWritesSurvived(await readAll(t, ["id", "s"]), ops);
  // A run without failpoints finishes the rewrite; every write survives it and every version reads.
  const r = await refragment({ db: t.dir, table: "t" }, { maxRowsPerFragment: 30 });
  assert.ok(r.fragmentsAfter >= Math.ceil(r.rows / 30));
  assertWritesSurvived(await readAll(t, ["id", "s"]), ops);
  await everyVersionReadable(t);
});

test("a graft that fails while staging or verifying leaves no file behind: auto writes those fragments through mergeInsert", async () => {
  await using t = await tempDb();
  await makeTable(t, 3, 50);
  await addColumns({ db: t.dir, table: "t" }, { a: udfRef("doubled"), b: udfRef("doubled") });
  const dataFiles = (): string[] => readdirSync(path.join(t.dir, "t.lance", "data")).sort();
  for (const [column, fp] of [["a", "graft.after-move"], ["b", "graft.verify-fail"]] as const) {
    const before = dataFiles();
    const job = await run([path.join(REPO, "bin/lancet.mjs"), "backfill", "--db", t.dir, "--table", "t", "--column", column], { LANCET_FAILPOINTS: fp });
    assert.equal(job.code, 0, job.stderr);
    const rec = (await listJobs(t.dir, { table: "t" })).find((j) => j.column === column)!;
    assert.deepEqual(rec.events.filter((e) => e.type === "commit-fallback").map((e) => e.message.match(/^fragment (\d+)/)![1]).sort(), ["0", "1", "2"], `${fp}: every fragment fell back, each recorded`);
    // Every data file added belongs to some version (mergeInsert's own files); none of the graft's
    // staged files was left behind.
    const tableDir = path.join(t.dir, "t.lance");
    const referenced = new Set<string>();
    for (const v of (await listManifestFiles(tableDir)).keys()) for (const f of (await readManifest(tableDir, v)).fragments) for (const d of f.files) referenced.add(d.path);
    for (const f of dataFiles()) if (!before.includes(f)) assert.ok(referenced.has(f), `${fp}: ${f} is referenced by a version`);
  }
  for (const row of await readAll(t, ["x", "a", "b"])) for (const c of ["a", "b"]) assert.equal(row[c], row.x === null ? null : (row.x as number) * 2);
});

test(`failpoint chunk.after-flush:kill in the workers of a chunk view's refresh, ${ROUNDS / 2} rounds with a concurrent writer on the source: the writer's commits all survive, the refresh finishes, and after the next one the view is exactly the source's words`, async () => {
  const STABLE = { storageOptions: { new_table_enable_stable_row_ids: "true" } } as never;
  for (let r = 0; r < ROUNDS / 2; r++) {
    await using t = await tempDb();
    const source = await t.db.createTable("t", rows(0, 80), STABLE);
    await source.add(rows(80, 80));
    await source.add(rows(160, 80));
    await createView(t.dir, "v", { source: "t", chunker: udfRef("words", "chunkers.ts"), select: ["id"] });
    const [refresh, writer] = await Promise.all([
      // Each worker process dies at its second append (one per work item here): every process gets one item done.
      refreshView(t.dir, "v", { env: { LANCET_FAILPOINTS: "chunk.after-flush:kill@2" }, sourceTaskSize: 20 + 5 * r }).then(
        (x) => x.status,
        (e: unknown) => String(e),
      ),
      run([path.join(FIXTURES, "writer.ts"), t.dir, "t", String(r), ["append", "update", "delete", ...(r % 2 === 1 ? ["optimize"] : [])].join(",")]),
    ]);
    const ops = writer.stdout.trim().split("\n").map((l) => JSON.parse(l) as WriterOp);
    assert.ok(ops.every((o) => o.ok), `round ${r}: the writer's ops committed: ${writer.stdout}`);
    assertWritesSurvived(await readAll(t, ["id", "s"]), ops);
    assert.equal(refresh, "finished", `round ${r}: a killed worker's work item is retried`);
    // The next refresh (no failpoint) brings in the writer's changes; the view is then exactly the words of the source.
    await refreshView(t.dir, "v");
    const src = (await (await t.open("t")).query().withRowId().select(["id", "s"]).toArray()) as { _rowid: bigint; id: bigint; s: string | null }[];
    const want = src.flatMap((p) => splitWords(p.s).map((w, i) => `${p._rowid}/${i} ${p.id} ${w.word}`)).sort();
    const got = ((await (await t.open("v")).query().select(["__source_row_id", "__child_index", "id", "word"]).toArray()) as { __source_row_id: bigint; __child_index: number; id: bigint; word: string }[])
      .map((c) => `${c.__source_row_id}/${c.__child_index} ${c.id} ${c.word}`)
      .sort();
    assert.deepEqual(got, want, `round ${r}: every child once, none missing`);
  }
});
