import { test } from "node:test";
import assert from "node:assert/strict";
import { gapsOf, planBackfill, type PlanFragmentInput } from "../../src/plan/plan.ts";

const frag = (id: number, liveRows: number, extra: Partial<PlanFragmentInput> = {}): PlanFragmentInput => ({
  id,
  liveRows,
  globalOffset: 0,
  selection: "",
  batchKey: `y/${id}-k`,
  covered: [],
  done: false,
  ...extra,
});

test("gapsOf subtracts covered ranges, overlapping or not", () => {
  assert.deepEqual(gapsOf(0, 100, []), [{ start: 0, end: 100 }]);
  assert.deepEqual(gapsOf(0, 100, [{ start: 0, end: 100 }]), []);
  assert.deepEqual(gapsOf(0, 100, [{ start: 10, end: 20 }, { start: 15, end: 30 }, { start: 90, end: 120 }]), [
    { start: 0, end: 10 },
    { start: 30, end: 90 },
  ]);
  assert.deepEqual(gapsOf(50, 60, [{ start: 0, end: 55 }]), [{ start: 55, end: 60 }]);
});

test("plans tasks per fragment, skips done fragments and checkpointed ranges, deterministically", () => {
  const input = {
    fragments: [frag(0, 250), frag(1, 100, { done: true }), frag(2, 100, { covered: [{ start: 0, end: 60 }] }), frag(3, 100, { covered: [{ start: 0, end: 100 }] })],
    concurrency: 2,
    intraApplierConcurrency: 1,
    taskSize: 100,
    commitGranularity: undefined,
    numFrags: undefined,
  };
  const plan = planBackfill(input);
  assert.deepEqual(planBackfill(input), plan, "same input, same plan");
  assert.deepEqual(plan.fragments.map((f) => f.id), [0, 2, 3]);
  assert.equal(plan.fragmentsDone, 1);
  assert.deepEqual(plan.tasks.map((t) => [t.fragmentId, t.start, t.end, t.gaps]), [
    [0, 0, 100, [{ start: 0, end: 100 }]],
    [0, 100, 200, [{ start: 100, end: 200 }]],
    [0, 200, 250, [{ start: 200, end: 250 }]],
    [2, 0, 100, [{ start: 60, end: 100 }]],
  ]);
  assert.equal(plan.rowsPlanned, 290);
  assert.equal(plan.fragments.find((f) => f.id === 3)!.tasks.length, 0, "fully checkpointed: ready to commit, nothing to compute");
  assert.equal(new Set(plan.tasks.map((t) => t.id)).size, plan.tasks.length, "task ids are unique");
});

test("defaults: task size from rows and parallelism, bounded by the largest fragment; commit granularity from fragment count", () => {
  const many = Array.from({ length: 100 }, (_, i) => frag(i, 1000));
  const p = planBackfill({ fragments: many, concurrency: 4, intraApplierConcurrency: 2, taskSize: undefined, commitGranularity: undefined, numFrags: undefined });
  assert.equal(p.taskSize, 1000, "100k rows / 16 > largest fragment");
  assert.equal(p.commitGranularity, 5);
  const small = planBackfill({ fragments: [frag(0, 1000)], concurrency: 2, intraApplierConcurrency: 1, taskSize: undefined, commitGranularity: undefined, numFrags: undefined });
  assert.equal(small.taskSize, 250);
  assert.equal(small.commitGranularity, 1);
  const pilot = planBackfill({ fragments: many, concurrency: 1, intraApplierConcurrency: 1, taskSize: 1000, commitGranularity: 7, numFrags: 3 });
  assert.equal(pilot.fragments.length, 3);
  assert.equal(pilot.fragmentsDeferred, 97);
  assert.equal(pilot.commitGranularity, 7);
});
