/**
 * Worker processes parked between jobs: the next job of the same process reuses an idle worker (no
 * process start), imports the UDF module afresh (its module state starts over) and runs setup()
 * again; LANCET_NO_PARK=1 turns reuse off.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as path from "node:path";
import { addColumns, backfill } from "../../src/index.ts";
import { makeTable, readAll, REPO, tempDb, udfRef } from "../helpers.ts";

const ref = (dir: string) => ({ db: dir, table: "t" });


test("a second job in the same process reuses the parked worker, with the UDF module loaded afresh", async () => {
  await using t = await tempDb();
  await makeTable(t, 1, 50);
  await addColumns(ref(t.dir), { a: udfRef("pidAndSeen"), b: udfRef("pidAndSeen") });
  await backfill(ref(t.dir), "a", { concurrency: 1 });
  await backfill(ref(t.dir), "b", { concurrency: 1 });
  const rows = await readAll(t, ["a", "b"]);
  const a = rows.map((r) => (r.a as { pid: number; seen: number }));
  const b = rows.map((r) => (r.b as { pid: number; seen: number }));
  assert.equal(new Set(a.map((x) => x.pid)).size, 1);
  assert.deepEqual([...new Set(b.map((x) => x.pid))], [a[0]!.pid], "job b ran in the process job a used");
  assert.equal(Math.min(...b.map((x) => x.seen)), 0, "the module's state started over for job b");
  assert.notEqual(a[0]!.pid, process.pid);
});

test("LANCET_NO_PARK=1: every job starts its own worker process", () => {
  // In a child process, so the variable holds from the start and no parked worker of this file interferes.
  const script = `
    import { addColumns, backfill } from ${JSON.stringify(path.join(REPO, "src/index.ts"))};
    import { makeTable, readAll, tempDb, udfRef } from ${JSON.stringify(path.join(REPO, "test/helpers.ts"))};
    await using t = await tempDb();
    await makeTable(t, 1, 20);
    await addColumns({ db: t.dir, table: "t" }, { a: udfRef("pidAndSeen"), b: udfRef("pidAndSeen") });
    await backfill({ db: t.dir, table: "t" }, "a", { concurrency: 1 });
    await backfill({ db: t.dir, table: "t" }, "b", { concurrency: 1 });
    const rows = await readAll(t, ["a", "b"]);
    console.log(JSON.stringify([rows[0].a.pid, rows[0].b.pid]));
  `;
  const out = execFileSync(process.execPath, ["--input-type=module", "-e", script], { env: { ...process.env, LANCET_NO_PARK: "1" }, encoding: "utf8" });
  const [pa, pb] = JSON.parse(out.trim().split("\n").at(-1)!) as [number, number];
  assert.notEqual(pa, pb, "each job had a worker of its own");
});
