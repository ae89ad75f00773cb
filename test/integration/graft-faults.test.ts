// Fault injection on the graft committer: the backfill process is killed (SIGKILL, through
// LANCET_FAILPOINTS) at every step of a commit, ten times each. Every version of the table must stay
// readable, and a re-run must finish the column.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as path from "node:path";
import { addColumns, backfill } from "../../src/index.ts";
import { everyVersionReadable, makeTable, readAll, REPO, tempDb, udfRef, type TempDb } from "../helpers.ts";

const STEPS = ["graft.after-move", "graft.before-publish", "graft.after-publish", "graft.after-hint", "commit.before-marker"];
const RUNS = 10;

function killedBackfill(t: TempDb, column: string, step: string): Promise<NodeJS.Signals | null> {
  const child = spawn(process.execPath, [path.join(REPO, "bin/lancet.mjs"), "backfill", "--db", t.dir, "--table", "t", "--column", column, "--commit-mode", "graft", "--concurrency", "1", "--commit-granularity", "1"], {
    stdio: "ignore",
    env: { ...process.env, LANCET_FAILPOINTS: `${step}:kill` },
  });
  return new Promise((r) => child.on("exit", (_code, signal) => r(signal)));
}

for (const step of STEPS) {
  test(`graft killed ${step}, ${RUNS} times: every version stays readable and a re-run completes`, async () => {
    await using t = await tempDb();
    await makeTable(t, 2, 60);
    const columns = Array.from({ length: RUNS }, (_, i) => `c${i}`);
    await addColumns({ db: t.dir, table: "t" }, Object.fromEntries(columns.map((c) => [c, udfRef("doubled")])));
    for (let i = 0; i < RUNS; i += 2) {
      // Two killed runs at a time (different columns of the same table).
      const codes = await Promise.all([killedBackfill(t, columns[i]!, step), killedBackfill(t, columns[i + 1]!, step)]);
      assert.deepEqual(codes, ["SIGKILL", "SIGKILL"], "the process died at the injected step");
      await everyVersionReadable(t);
    }
    // A kill after the link leaves the fragment committed but not marked done: the re-run (auto mode)
    // sends its still-null rows through mergeInsert.
    for (const c of columns) await backfill({ db: t.dir, table: "t" }, c);
    for (const row of await readAll(t, ["x", ...columns])) for (const c of columns) assert.equal(row[c], row.x === null ? null : (row.x as number) * 2, `${c}`);
    assert.ok((await everyVersionReadable(t)) > RUNS);
  });
}
