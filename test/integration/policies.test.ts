import { test } from "node:test";
import assert from "node:assert/strict";
import { run } from "../../src/cli/main.ts";
import { addColumns, backfill, isBackfillError, listErrors } from "../../src/index.ts";
import { makeTable, readAll, tempDb, udfRef } from "../helpers.ts";

const ref = (dir: string) => ({ db: dir, table: "t" });
const BAD = [5, 22, 39, 250, 251, 599];

async function withFailIds<T>(ids: number[], f: () => Promise<T>): Promise<T> {
  process.env.LANCET_TEST_FAIL_IDS = ids.join(",");
  try {
    return await f();
  } finally {
    delete process.env.LANCET_TEST_FAIL_IDS;
  }
}

/**
 * Runs `f` with this process's stderr captured rather than printed (the local pool forwards its
 * workers' stderr there); returns what `f` resolved or threw and the captured text.
 */
async function capturingStderr(f: () => Promise<unknown>): Promise<{ error: unknown; stderr: string }> {
  const write = process.stderr.write;
  let stderr = "";
  process.stderr.write = ((chunk: string | Uint8Array) => {
    stderr += typeof chunk === "string" ? chunk : Buffer.from(chunk).toString();
    return true;
  }) as typeof process.stderr.write;
  try {
    await f();
    return { error: undefined, stderr };
  } catch (error) {
    return { error, stderr };
  } finally {
    process.stderr.write = write;
  }
}

for (const kind of ["scalar", "batched"] as const) {
  test(`skip (${kind}): exactly the failing rows are null, stored in the errors table; the job finishes; a re-run retries them`, async () => {
    await using t = await tempDb();
    await makeTable(t, 3, 200);
    await addColumns(ref(t.dir), { y: udfRef(kind === "scalar" ? "badRows" : "badRowsBatch") });
    const r = await withFailIds(BAD, () => backfill(ref(t.dir), "y", { concurrency: 2, checkpointSize: 64 }));
    assert.equal(r.status, "finished");
    assert.equal(r.metrics.rowsSkipped, BAD.length);
    assert.ok(r.events.some((e) => e.type === "skipped" && /lancet errors --job/.test(e.message)));
    for (const row of await readAll(t, ["id", "x", "y"])) {
      const id = Number(row.id);
      assert.equal(row.y, BAD.includes(id) || row.x === null ? null : (row.x as number) * 2, `id ${id}`);
    }
    const errors = await listErrors(t.dir, { jobId: r.id });
    assert.deepEqual(errors.map((e) => e.rowOffset + 200 * e.fragment).sort((a, b) => a - b), BAD, "one record per bad row: bisection isolated exactly them");
    for (const e of errors) {
      assert.equal(e.table, "t");
      assert.equal(e.column, "y");
      assert.equal(e.name, "TypeError");
      assert.match(e.message, kind === "scalar" ? /^bad row \d+$/ : /^batch holds bad row \d+$/);
      assert.match(e.udf, kind === "scalar" ? /#badRows$/ : /#badRowsBatch$/);
      assert.equal(e.udfVersion, r.udfVersion);
      assert.equal(BigInt(e.rowAddress), (BigInt(e.fragment) << 32n) | BigInt(e.rowOffset));
      assert.ok(e.stack.includes("TypeError"));
      assert.equal(e.attempt, 1);
      if (kind === "batched") assert.ok(e.bisectDepth > 0);
    }
    // The rows now succeed: a re-run retries exactly the null rows of the fragments that had skips.
    const again = await backfill(ref(t.dir), "y");
    assert.ok(again.metrics.rowsComputed >= BAD.length && again.metrics.rowsComputed < 600, `recomputed ${again.metrics.rowsComputed}`);
    assert.equal(again.metrics.rowsSkipped, 0);
    for (const row of await readAll(t, ["x", "y"])) assert.equal(row.y, row.x === null ? null : (row.x as number) * 2);
    assert.equal((await backfill(ref(t.dir), "y")).metrics.rowsComputed, 0);
  });
}

test("fail (the default, or as an override) stops the job at the first error, naming the row", async () => {
  await using t = await tempDb();
  await makeTable(t, 1, 100);
  await addColumns(ref(t.dir), { y: udfRef("badRows") });
  await withFailIds([42], () =>
    assert.rejects(backfill(ref(t.dir), "y", { errorPolicy: "fail", taskSize: 100 }), (e: unknown) => isBackfillError(e, "UDF_FAILED") && /threw on row 42 .*TypeError: bad row 42; error policy fail/.test((e as Error).message)),
  );
});

test("retry: transient errors are retried with backoff (scalar rows and whole batches)", async () => {
  await using t = await tempDb();
  await makeTable(t, 2, 100);
  await addColumns(ref(t.dir), { y: udfRef("flaky"), z: udfRef("flakyBatch") });
  const r = await backfill(ref(t.dir), "y", { concurrency: 1 });
  assert.equal(r.metrics.rowsSkipped, 0);
  const rz = await backfill(ref(t.dir), "z", { concurrency: 1, checkpointSize: 50 });
  assert.equal(rz.metrics.rowsSkipped, 0);
  for (const row of await readAll(t, ["x", "y", "z"])) {
    assert.equal(row.y, row.x === null ? null : (row.x as number) * 2);
    assert.equal(row.z, row.x === null ? null : (row.x as number) * 2);
  }
  // Too few attempts: the job fails after retrying.
  await addColumns(ref(t.dir), { w: udfRef("flaky") });
  await assert.rejects(backfill(ref(t.dir), "w", { errorPolicy: "retry:2", concurrency: 1 }), (e: unknown) => isBackfillError(e, "UDF_FAILED") && /after 2 attempts/.test((e as Error).message));
});

test("matchers: first match wins; unmatched errors fail the job", async () => {
  await using t = await tempDb();
  await makeTable(t, 2, 100);
  await addColumns(ref(t.dir), { y: udfRef("matched"), z: udfRef("matched") });
  const r = await backfill(ref(t.dir), "y", { concurrency: 1 });
  assert.equal(r.metrics.rowsSkipped, 8, "ids 1, 26, 51, … raise RangeError and are skipped");
  const errors = await listErrors(t.dir, { column: "y" });
  assert.ok(errors.every((e) => e.name === "RangeError"));
  for (const row of await readAll(t, ["id", "x", "y"])) {
    const id = Number(row.id);
    assert.equal(row.y, id % 25 === 1 || row.x === null ? null : (row.x as number) * 2, `id ${id}`);
  }
  await withFailIds([77], () => assert.rejects(backfill(ref(t.dir), "z", { concurrency: 1 }), (e: unknown) => isBackfillError(e, "UDF_FAILED") && /SyntaxError: unmatched 77/.test((e as Error).message)));
});

test("per-call timeouts turn slow async calls into TimeoutErrors for the policy", async () => {
  await using t = await tempDb();
  await makeTable(t, 1, 200);
  await addColumns(ref(t.dir), { y: udfRef("slowSome") });
  const r = await backfill(ref(t.dir), "y", { intraApplierConcurrency: 16 });
  assert.equal(r.metrics.rowsSkipped, 4);
  const errors = await listErrors(t.dir, { jobId: r.id });
  assert.deepEqual(errors.map((e) => e.rowOffset).sort((a, b) => a - b), [0, 50, 100, 150]);
  assert.ok(errors.every((e) => e.name === "TimeoutError" && /within timeoutMs 60/.test(e.message)));
});

test("worker faults: a hang past the task timeout and an out-of-memory worker are retried, then fail the job with the cause", async () => {
  await using t = await tempDb();
  await makeTable(t, 1, 20);
  await addColumns(ref(t.dir), { h: udfRef("hangs"), m: udfRef("eatsMemory") });
  await assert.rejects(backfill(ref(t.dir), "h", { taskTimeoutMs: 1500, maxTaskAttempts: 2 }), (e: unknown) => {
    assert.ok(isBackfillError(e, "WORKER_CRASHED"));
    assert.match((e as Error).message, /made no progress for 1500 ms \(taskTimeoutMs\) and was killed .*fragment 0.*failed 2 time/);
    return true;
  });
  // Each worker that runs out of memory prints V8's fatal error and native stack: expected, so kept
  // out of the test output and checked here.
  const oom = await capturingStderr(() => backfill(ref(t.dir), "m", { maxTaskAttempts: 2 }));
  assert.ok(isBackfillError(oom.error, "WORKER_CRASHED"), String(oom.error));
  assert.match((oom.error as Error).message, /ran out of memory \(heap limit 64 MiB/);
  assert.match(oom.stderr, /FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory/);
});

test("CLI: --error-policy skip reports rowsSkipped and warns; lancet errors --json lists the records", async () => {
  await using t = await tempDb();
  await makeTable(t, 1, 100);
  await addColumns(ref(t.dir), { y: udfRef("throws") });
  const o = { out: "", err: "", isTTY: false };
  const io = { ...o, stdout: { write: (s: string) => (o.out += s) }, stderr: { write: (s: string) => (o.err += s) } };
  assert.equal(await run(["backfill", "--db", t.dir, "--table", "t", "--column", "y", "--error-policy", "skip", "--json"], io), 0, o.err);
  const res = JSON.parse(o.out.trim().split("\n").at(-1)!) as { status: string; metrics: { rowsSkipped: number }; id: string };
  assert.equal(res.status, "finished");
  assert.equal(res.metrics.rowsSkipped, 68, "x > 10 throws: rows 21-99 whose x is not null");
  assert.match(o.err, /warning: \d+ row\(s\) were skipped .*lancet errors --db .* --job /);
  o.out = "";
  assert.equal(await run(["errors", "--db", t.dir, "--job", res.id, "--json"], io), 0);
  const errs = JSON.parse(o.out.trim().split("\n").at(-1)!) as { jobId: string; column: string; fragment: number; rowAddress: string; message: string }[];
  assert.equal(errs.length, res.metrics.rowsSkipped);
  assert.ok(errs.every((e) => e.jobId === res.id && e.column === "y" && e.fragment === 0 && /^\d+$/.test(e.rowAddress) && /^bad x /.test(e.message)));
  o.err = "";
  assert.equal(await run(["backfill", "--db", t.dir, "--table", "t", "--column", "y", "--error-policy", "sometimes"], io), 2, "a bad flag value is a usage error");
  assert.match(o.err, /--error-policy must be "fail", "skip" or "retry:N" \(got "sometimes"\)/);
});
