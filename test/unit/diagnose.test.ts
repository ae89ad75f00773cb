import { test } from "node:test";
import assert from "node:assert/strict";
import { diagnose, type DiagnoseContext } from "../../src/jobs/diagnose.ts";
import { emptyMetrics, type JobMetrics } from "../../src/jobs/record.ts";

const ctx = (extra: Partial<DiagnoseContext> = {}): DiagnoseContext => ({ concurrency: 2, intraApplierConcurrency: 1, writerConcurrency: 2, cores: 4, ...extra });

/** A finished job of 8 tasks over 8 fragments, whose UDF took 10 s and 5% CPU (it was waiting). */
function waitingUdf(extra: Partial<JobMetrics> = {}): JobMetrics {
  return {
    ...emptyMetrics(),
    fragmentsPlanned: 8, fragmentsWritten: 8, fragmentsCommitted: 8, tasksTotal: 8, tasksDone: 8,
    rowsPlanned: 1000, rowsProcessed: 1000, rowsComputed: 1000, rowsCheckpointed: 1000, rowsCommitted: 1000,
    udfMs: 10_000, udfCpuMs: 500, readMs: 100, checkpointMs: 100, writeMs: 100, commitMs: 100, commits: 1,
    ...extra,
  };
}

test("a waiting UDF: the advice fits its kind", () => {
  const cases: { name: string; c: DiagnoseContext; hint: RegExp; not?: RegExp }[] = [
    { name: "async scalar", c: ctx({ udf: { batch: false, async: true } }), hint: /^an async UDF waiting on I\/O: raise intraApplierConcurrency \(now 1\)$/ },
    { name: "synchronous scalar", c: ctx({ udf: { batch: false, async: false } }), hint: /^a synchronous UDF blocks its worker .*: raise concurrency \(now 2 worker processes\); or make it async/ },
    { name: "batch", c: ctx({ udf: { batch: true } }), hint: /^a batch UDF makes one call at a time per worker \(intraApplierConcurrency does not apply\): raise concurrency/, not: /raise intraApplierConcurrency/ },
    { name: "scalar, async-ness unknown", c: ctx({ udf: { batch: false } }), hint: /^if the UDF returns promises \(I\/O\), raise intraApplierConcurrency \(now 1\); if it is synchronous, raise concurrency \(now 2 worker processes\)$/ },
    { name: "nothing known", c: ctx(), hint: /^if the UDF returns promises/ },
    { name: "synchronous, more workers than cores", c: ctx({ concurrency: 8, cores: 2, udf: { batch: false, async: false } }), hint: /its workers may be waiting for CPU: lower concurrency to 2/ },
  ];
  for (const { name, c, hint, not } of cases) {
    const d = diagnose(waitingUdf(), c);
    assert.equal(d.bound, "udf", name);
    assert.match(d.summary, /UDF-bound .*mostly waiting: the (batch )?UDF used 5% CPU/, name);
    assert.match(d.hint, hint, name);
    if (not) assert.doesNotMatch(d.hint, not, name);
  }
});

test("a busy UDF on idle cores is told to use them, whatever its kind", () => {
  const d = diagnose(waitingUdf({ udfCpuMs: 9_500 }), ctx({ udf: { batch: false, async: false } }));
  assert.equal(d.bound, "udf");
  assert.match(d.hint, /raise concurrency to 4/);
});

test("a job that computed and committed nothing is 'nothing to do', never commit-bound", () => {
  // A re-run of a finished column: no fragment, no task; only bookkeeping time.
  const noop: JobMetrics = { ...emptyMetrics(), commitMs: 400 };
  for (const m of [noop, { ...noop, udfMs: 80 }]) {
    const d = diagnose(m, ctx());
    assert.equal(d.bound, "none");
    assert.equal(d.summary, "nothing to do: no rows needed computing");
    assert.equal(d.hint, "");
  }
  // A where that selects no rows: rows were scanned, fragments committed, nothing computed.
  const empty: JobMetrics = { ...emptyMetrics(), fragmentsPlanned: 2, fragmentsCommitted: 2, tasksTotal: 2, tasksDone: 2, rowsProcessed: 100, readMs: 30, commitMs: 900 };
  const d = diagnose(empty, ctx());
  assert.equal(d.bound, "none");
  assert.equal(d.summary, "nothing to do: the row selection matched none of the 100 rows scanned");
  // Committing what an earlier run checkpointed computes nothing either.
  const adopt: JobMetrics = { ...emptyMetrics(), fragmentsPlanned: 1, fragmentsCommitted: 1, rowsCommitted: 50, commits: 1, commitMs: 900 };
  assert.match(diagnose(adopt, ctx()).summary, /^nothing computed: committed 50 rows an earlier run had checkpointed$/);
});

test("a job still running is not 'nothing to do' yet", () => {
  const running: JobMetrics = { ...emptyMetrics(), fragmentsPlanned: 2, tasksTotal: 4, tasksDone: 0 };
  assert.equal(diagnose(running, ctx()).summary, "not enough work done yet to diagnose");
  // Every task done, fragments not committed yet: the commit stage is preparing, and says so.
  const preparing: JobMetrics = { ...emptyMetrics(), fragmentsPlanned: 2, tasksTotal: 2, tasksDone: 2, rowsProcessed: 100, rowsComputed: 100, udfMs: 20, commitMs: 900 };
  const d = diagnose(preparing, ctx());
  assert.equal(d.bound, "commit");
  assert.doesNotMatch(d.summary, /0 commits/);
  assert.match(d.summary, /preparing the first commit/);
});

test("commit-bound names its commits in the singular and plural", () => {
  const m = waitingUdf({ udfMs: 10, udfCpuMs: 10, commitMs: 5_000, commits: 1 });
  assert.match(diagnose(m, ctx()).summary, /commit-bound .*\(1 commit\)$/);
  assert.match(diagnose({ ...m, commits: 3 }, ctx()).summary, /\(3 commits\)$/);
});
