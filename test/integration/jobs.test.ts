import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import * as path from "node:path";
import { run } from "../../src/cli/main.ts";
import { addColumns, backfill, backfillAsync, getJob, isBackfillError, listJobs, refragment, type JobRecord } from "../../src/index.ts";
import { sampleHistory } from "../../src/jobs/record.ts";
import { fragmentLayout, makeTable, readAll, REPO, securedRows, tempDb, udfRef, type TempDb } from "../helpers.ts";

const ref = (dir: string) => ({ db: dir, table: "t" });
const COUNTERS = ["rowsProcessed", "rowsComputed", "rowsCheckpointed", "rowsCommitted", "fragmentsCommitted", "tasksDone", "commits"] as const;

function io() {
  const o = { out: "", err: "", isTTY: false };
  return Object.assign(o, { stdout: { write: (s: string) => (o.out += s) }, stderr: { write: (s: string) => (o.err += s) } });
}

async function until<T>(what: string, f: () => Promise<T | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Each fragment is all-or-nothing: every row of a committed fragment has its value, every other row is null. */
async function assertWholeFragments(t: TempDb): Promise<Set<number>> {
  const committed = new Set<number>();
  const byFrag = new Map<number, { filled: number; rows: number }>();
  for (const r of await readAll(t, ["x", "y"])) {
    const f = Number((r._rowaddr as bigint) >> 32n);
    const e = byFrag.get(f) ?? { filled: 0, rows: 0 };
    e.rows++;
    if (r.y !== null) {
      assert.equal(r.y, (r.x as number) * 2);
      e.filled++;
    }
    byFrag.set(f, e);
  }
  for (const [f, e] of byFrag) {
    assert.ok(e.filled === 0 || e.filled >= e.rows * 0.8, `fragment ${f} is half-done (${e.filled} of ${e.rows})`);
    if (e.filled > 0) committed.add(f);
  }
  return committed;
}

test("a handle's progress is monotone and ends at the final record; the jobs table has the record", async () => {
  await using t = await tempDb();
  await makeTable(t, 4, 300);
  await addColumns(ref(t.dir), { y: udfRef("doubled") });
  const job = backfillAsync(ref(t.dir), "y", { concurrency: 2, checkpointSize: 50, statusIntervalMs: 100 });
  assert.equal(job.status(), "pending");
  const snaps: JobRecord[] = [];
  for await (const s of job.progress()) snaps.push(s);
  const final = await job.wait();
  assert.ok(snaps.length >= 3, `several snapshots (${snaps.length})`);
  for (let i = 1; i < snaps.length; i++) {
    for (const k of COUNTERS) assert.ok(snaps[i]!.metrics[k] >= snaps[i - 1]!.metrics[k], `${k} never decreases`);
  }
  const last = snaps.at(-1)!;
  assert.equal(last.status, "finished");
  assert.equal(final.status, "finished");
  for (const k of COUNTERS) assert.equal(last.metrics[k], final.metrics[k], `last snapshot = final record (${k})`);
  assert.equal(job.status(), "finished");
  assert.equal(final.metrics.rowsComputed, 1200);

  const stored = await getJob(t.dir, job.id);
  assert.equal(stored.status, "finished");
  assert.equal(stored.metrics.rowsCommitted, 1200);
  assert.equal(stored.udfVersion, final.udfVersion);
  assert.equal(stored.pid, process.pid);
  assert.deepEqual(stored.events.map((e) => e.type).filter((x) => x !== "commit"), ["started", "planned", "finished"]);
  assert.equal(stored.events.filter((e) => e.type === "commit").length, final.metrics.commits);
  for (const k of ["udfMs", "readMs", "checkpointMs", "writeMs", "commitMs", "rowsPerSec"] as const) assert.ok(stored.metrics[k] > 0, `metric ${k} recorded`);
  assert.ok(stored.diagnosis && stored.diagnosis.summary.length > 0);
  // The history: a sample per write of the record, in time order, progress never going back, ending at the final counts.
  const h = stored.history!;
  assert.ok(h.t.length >= 2 && h.t.length <= 120, `history samples: ${h.t.length}`);
  assert.equal(h.rowsProcessed.length, h.t.length);
  assert.equal(h.rowsCommitted.length, h.t.length);
  for (let i = 1; i < h.t.length; i++) {
    assert.ok(h.t[i]! > h.t[i - 1]!, "samples in time order");
    assert.ok(h.rowsProcessed[i]! >= h.rowsProcessed[i - 1]! && h.rowsCommitted[i]! >= h.rowsCommitted[i - 1]!, "progress never goes back");
  }
  assert.equal(h.rowsCommitted.at(-1), 1200);
});

test("a job's history keeps at most 120 samples, thinned evenly: the first and the last kept, time order kept", () => {
  const r = { startedAt: new Date(0).toISOString(), metrics: { rowsProcessed: 0, rowsCommitted: 0 } } as unknown as JobRecord;
  for (let i = 1; i <= 1000; i++) {
    r.metrics.rowsProcessed = i;
    r.metrics.rowsCommitted = i - 1;
    sampleHistory(r, i * 10);
  }
  const h = r.history!;
  assert.ok(h.t.length <= 120 && h.t.length >= 60, `${h.t.length} samples`);
  assert.equal(h.t[0], 10);
  assert.equal(h.t.at(-1), 10_000);
  assert.equal(h.rowsProcessed.at(-1), 1000);
  for (let i = 1; i < h.t.length; i++) assert.ok(h.t[i]! > h.t[i - 1]!);
  // Evenly: no gap is over 5 % of the whole span (thinning keeps one sample at least every 1/60 of it).
  const gaps = h.t.slice(1).map((t, i) => t - h.t[i]!);
  assert.ok(Math.max(...gaps) <= 0.05 * (h.t.at(-1)! - h.t[0]!), `gaps ${Math.min(...gaps)}..${Math.max(...gaps)}`);
});

test("wait() rejects with the job's error; the record says failed with the error", async () => {
  await using t = await tempDb();
  await makeTable(t, 1, 50);
  await addColumns(ref(t.dir), { y: udfRef("wrongType") });
  const job = backfillAsync(ref(t.dir), "y");
  await assert.rejects(job.wait(), (e: unknown) => isBackfillError(e, "UDF_OUTPUT_TYPE"));
  assert.equal(job.status(), "failed");
  const stored = await getJob(t.dir, job.id);
  assert.equal(stored.status, "failed");
  assert.equal(stored.error?.code, "UDF_OUTPUT_TYPE");
  assert.ok(stored.events.some((e) => e.type === "failed"));
});

test("cancel from the same process: in-flight batches are checkpointed, only whole fragments are committed, a re-run finishes the rest", async () => {
  await using t = await tempDb();
  await makeTable(t, 4, 1000);
  await addColumns(ref(t.dir), { y: udfRef("slowBatch") });
  const job = backfillAsync(ref(t.dir), "y", { concurrency: 2, checkpointSize: 100, taskSize: 500, commitGranularity: 1 });
  await until("a committed fragment", async () => job.record().metrics.fragmentsCommitted >= 1);
  const record = await job.cancel();
  assert.equal(record.status, "cancelled");
  await assert.rejects(job.wait(), (e: unknown) => isBackfillError(e, "CANCELLED") && /run the backfill again/.test((e as Error).message));
  assert.ok(record.metrics.fragmentsCommitted < 4, "stopped before the end");
  const committed = await assertWholeFragments(t);
  assert.equal(committed.size, record.metrics.fragmentsCommitted);
  const stored = await getJob(t.dir, job.id);
  assert.equal(stored.status, "cancelled");
  const types = stored.events.map((e) => e.type);
  assert.ok(types.indexOf("cancel-requested") >= 0 && types.indexOf("cancel-requested") < types.indexOf("cancelled"), types.join(", "));
  assert.equal(types.at(-1), "cancelled");

  const secured = await securedRows(path.join(t.dir, "_lancet", "t"), "y");
  const rerun = await backfill(ref(t.dir), "y", { concurrency: 2 });
  assert.equal(rerun.metrics.rowsComputed, 4000 - secured, "checkpointed batches are not recomputed");
  for (const r of await readAll(t, ["x", "y"])) assert.equal(r.y, r.x === null ? null : (r.x as number) * 2);
});

function spawnBackfill(t: TempDb, extra: string[]): { child: ChildProcess; out: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [path.join(REPO, "bin/lancet.mjs"), "backfill", "--db", t.dir, "--table", "t", "--column", "y", "--json", ...extra], {
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.resume();
  const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
  return { child, out: () => out, exited };
}

test("cancel from another process with `lancet jobs cancel`: the job ends cancelled and a re-run resumes", async () => {
  await using t = await tempDb();
  await makeTable(t, 4, 1000);
  await addColumns(ref(t.dir), { y: udfRef("slowBatch") });
  const { out, exited } = spawnBackfill(t, ["--concurrency", "2", "--checkpoint-size", "100", "--task-size", "500", "--status-interval-ms", "200"]);
  const running = await until("the job to run", async () => (await listJobs(t.dir)).find((j) => j.status === "running" && j.metrics.rowsCheckpointed > 0));
  const o = io();
  const code = await run(["jobs", "cancel", running.id, "--db", t.dir], o);
  assert.equal(code, 0, o.err);
  assert.match(o.out, new RegExp(`job ${running.id}: cancelled`));
  assert.equal(await exited, 1, "the cancelled backfill exits non-zero");
  const last = JSON.parse(out().trim().split("\n").at(-1)!) as { status: string; id: string };
  assert.equal(last.status, "cancelled");
  assert.equal(last.id, running.id);
  assert.equal((await getJob(t.dir, running.id)).status, "cancelled");
  await assertWholeFragments(t);
  const secured = await securedRows(path.join(t.dir, "_lancet", "t"), "y");
  const rerun = await backfill(ref(t.dir), "y");
  assert.equal(rerun.metrics.rowsComputed, 4000 - secured);
});

test("kill -9 of a running job: jobs show reports it failed (abandoned) within a bounded time", async () => {
  await using t = await tempDb();
  await makeTable(t, 2, 2000);
  await addColumns(ref(t.dir), { y: udfRef("slowBatch") });
  const { child, exited } = spawnBackfill(t, ["--concurrency", "1", "--checkpoint-size", "100", "--status-interval-ms", "200"]);
  const running = await until("the job to run", async () => (await listJobs(t.dir)).find((j) => j.status === "running"));
  process.kill(-child.pid!, "SIGKILL");
  await exited;
  const killedAt = Date.now();
  const failed = await until("the job to read as abandoned", async () => {
    const j = await getJob(t.dir, running.id);
    return j.status === "failed" ? j : undefined;
  }, 15_000);
  assert.equal(failed.abandoned, true);
  assert.equal(failed.error?.code, "JOB_ABANDONED");
  assert.ok(Date.now() - killedAt < 5000, "within 3 heartbeat intervals + 2 s");
  const o = io();
  assert.equal(await run(["jobs", "show", running.id, "--db", t.dir], o), 0);
  assert.match(o.out, /failed \(abandoned\)/);
  assert.match(o.out, /stopped reporting/);
});

test("jobs --json lists every job record (id, status, table, column, metrics); filters work", async () => {
  await using t = await tempDb();
  await makeTable(t, 2, 100);
  await addColumns(ref(t.dir), { y: udfRef("doubled"), w: udfRef("wrongType") });
  const a = await backfill(ref(t.dir), "y");
  const b = await backfill(ref(t.dir), "y");
  await assert.rejects(backfill(ref(t.dir), "w"));
  let o = io();
  assert.equal(await run(["jobs", "--db", t.dir, "--json"], o), 0, o.err);
  const jobs = JSON.parse(o.out.trim().split("\n").at(-1)!) as { id: string; status: string; table: string; column: string; metrics: { rowsComputed: number } }[];
  assert.equal(jobs.length, 3);
  const byId = new Map(jobs.map((j) => [j.id, j]));
  assert.deepEqual(byId.get(a.id), { ...byId.get(a.id)!, status: "finished", table: "t", column: "y" });
  assert.equal(byId.get(a.id)!.metrics.rowsComputed, 200);
  assert.equal(byId.get(b.id)!.metrics.rowsComputed, 0);
  assert.equal(jobs.filter((j) => j.status === "failed" && j.column === "w").length, 1);
  o = io();
  assert.equal(await run(["jobs", "--db", t.dir, "--status", "failed", "--json"], o), 0);
  assert.equal((JSON.parse(o.out) as unknown[]).length, 1);
  o = io();
  assert.equal(await run(["jobs", "show", a.id, "--db", t.dir], o), 0);
  assert.match(o.out, /diagnosis: /);
  assert.match(o.out, /events:\n.*started/);
  o = io();
  assert.equal(await run(["jobs", "show", "00000000-0000-0000-0000-000000000000", "--db", t.dir], o), 1);
  assert.match(o.err, /JOB_NOT_FOUND: no job 00000000/);
  o = io();
  assert.equal(await run(["jobs", "--db", t.dir, "--status", "weird"], o), 2);
  o = io();
  assert.equal(await run(["jobs", "watch", a.id, "--db", t.dir], o), 0);
  assert.match(o.err, /finished 100\.0%/);
  assert.match(o.out, new RegExp(`job ${a.id}: finished`));
  o = io();
  assert.equal(await run(["jobs", "cancel", a.id, "--db", t.dir], o), 1);
  assert.match(o.err, /already ended \(finished\); nothing to cancel/);
});

test("a 1-fragment table with a data-expanding UDF is writer-bound and the hint names refragment; refragment keeps data and bindings", async () => {
  await using t = await tempDb();
  await makeTable(t, 1, 6000);
  await addColumns(ref(t.dir), { big: udfRef("expand4k"), y: udfRef("doubled") });
  const r = await backfill(ref(t.dir), "big", { concurrency: 2 });
  assert.equal(r.diagnosis?.bound, "writer", JSON.stringify(r.diagnosis));
  assert.match(r.diagnosis!.summary, /writer-bound .*1 fragment for 2 workers/);
  assert.match(r.diagnosis!.hint, /lancet refragment/);
  const o = io();
  assert.equal(await run(["backfill", "--db", t.dir, "--table", "t", "--column", "big", "--where", "id < 10"], o), 0);

  const before = await readAll(t, ["id", "x", "s", "big"]);
  // Refuses while a UDF column has checkpointed work that is not committed.
  const { writeFileSync, mkdirSync } = await import("node:fs");
  const pendingDir = path.join(t.dir, "_lancet", "t", "ckp", "batches", "y", "0-abc");
  mkdirSync(pendingDir, { recursive: true });
  writeFileSync(path.join(pendingDir, "0-10.arrow"), "");
  await assert.rejects(refragment(ref(t.dir), { maxRowsPerFragment: 1000 }), (e: unknown) => isBackfillError(e, "TABLE_BUSY") && /column\(s\) y \(1 batch\).*--force/.test((e as Error).message));
  assert.equal((await fragmentLayout(t)).length, 1);
  const res = await refragment(ref(t.dir), { maxRowsPerFragment: 1000, force: true });
  assert.equal(res.fragmentsAfter, 6);
  assert.deepEqual((await fragmentLayout(t)).map((f) => f.physicalRows), [1000, 1000, 1000, 1000, 1000, 1000]);
  const after = await readAll(t, ["id", "x", "s", "big"]);
  assert.deepEqual(after.map(({ _rowaddr: _a, ...rest }) => rest), before.map(({ _rowaddr: _a, ...rest }) => rest));
  // Bindings survive, and the filled column needs no recompute.
  const again = await backfill(ref(t.dir), "big");
  assert.equal(again.metrics.rowsComputed, 0);
  assert.equal((await backfill(ref(t.dir), "y")).metrics.rowsComputed, 6000);
  await assert.rejects(refragment(ref(t.dir), { maxRowsPerFragment: 0 }), /maxRowsPerFragment must be a positive integer/);
});
