// Fault injection: worker processes killed at random points, over 20 runs of a backfill. Every run
// must end with all values correct, and compute nothing twice beyond the batches in flight when a
// worker died.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import * as path from "node:path";
import { addColumns, backfillAsync } from "../../src/index.ts";
import { makeTable, readAll, tempDb, udfRef } from "../helpers.ts";

const RUNS = 20;
const CHECKPOINT = 50;
const ROWS = 1200;

function workerPids(): number[] {
  let out = "";
  try {
    out = execFileSync("ps", ["-o", "pid=,args=", "--ppid", String(process.pid)], { encoding: "utf8" });
  } catch {
    return [];
  }
  return out
    .split("\n")
    .filter((l) => l.includes("worker-entry"))
    .map((l) => Number(l.trim().split(/\s+/)[0]));
}

test(`workers killed at random points over ${RUNS} runs: values always correct, nothing recomputed beyond in-flight batches`, async () => {
  await using t = await tempDb();
  await makeTable(t, 3, ROWS / 3);
  const log = path.join(t.dir, "calls.log");
  process.env.LANCET_TEST_CALL_LOG = log;
  let seed = 12345;
  const random = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  let totalKills = 0;
  try {
    for (let run = 0; run < RUNS; run++) {
      const column = `y${run}`;
      await addColumns({ db: t.dir, table: "t" }, { [column]: udfRef("countedBatch") });
      rmSync(log, { force: true });
      const job = backfillAsync({ db: t.dir, table: "t" }, column, { concurrency: 2, checkpointSize: CHECKPOINT, maxTaskAttempts: 20, taskSize: 200 });
      const done = job.wait();
      let kills = 0;
      const killer = (async () => {
        const wanted = 1 + Math.floor(random() * 3);
        while (kills < wanted && job.status() !== "finished" && job.status() !== "failed") {
          await new Promise((r) => setTimeout(r, 30 + random() * 250));
          const pids = workerPids();
          if (pids.length === 0 || job.status() !== "running" || job.record().metrics.rowsProcessed === 0) continue;
          try {
            process.kill(pids[Math.floor(random() * pids.length)]!, "SIGKILL");
            kills++;
          } catch {
            // it exited on its own
          }
        }
      })();
      const record = await done;
      await killer;
      totalKills += kills;
      assert.equal(record.status, "finished", `run ${run}`);
      const rows = await readAll(t, ["x", column]);
      for (const r of rows) assert.equal(r[column], r.x === null ? null : (r.x as number) * 2, `run ${run}, ${column}`);
      let computed = 0;
      try {
        computed = readFileSync(log, "utf8").split("\n").filter(Boolean).reduce((a, b) => a + Number(b), 0);
      } catch {
        computed = 0;
      }
      assert.ok(computed >= ROWS, `run ${run}: every row computed (${computed})`);
      assert.ok(computed <= ROWS + kills * CHECKPOINT, `run ${run}: ${computed} rows computed for ${ROWS} with ${kills} worker kill(s): at most one in-flight batch lost per kill`);
    }
  } finally {
    delete process.env.LANCET_TEST_CALL_LOG;
  }
  assert.ok(totalKills >= RUNS, `workers were killed (${totalKills} kills)`);
});
