import "../lance-quiet.ts"; // LanceDB's refresh is a DataReplacement, which Lance warns "is not stable yet"
import { test } from "node:test";
import assert from "node:assert/strict";
import { run } from "../../src/cli/main.ts";
import { addColumns, alterColumns, backfill, columnStatus, getJob, isBackfillError } from "../../src/index.ts";
import { makeTable, readAll, rows, tempDb, udfRef } from "../helpers.ts";

const ref = (dir: string) => ({ db: dir, table: "t" });

test("a SQL UDF is a LanceDB computed column filled by LanceDB's refresh inside a Lancet job", async () => {
  await using t = await tempDb();
  const table = await makeTable(t, 3, 200);
  const [b] = await addColumns(ref(t.dir), { y: { sql: "x * 2" } });
  assert.equal(b!.binding.kind, "sql");
  assert.deepEqual(b!.binding.inputs, ["x"]);
  assert.equal(b!.binding.dataType, "float64");
  const r = await backfill(ref(t.dir), "y");
  assert.equal(r.status, "finished");
  assert.equal(r.metrics.rowsComputed, 600 - 86, "LanceDB fills the rows whose value is not null");
  for (const row of await readAll(t, ["x", "y"])) assert.equal(row.y, row.x === null ? null : (row.x as number) * 2);
  const stored = await getJob(t.dir, r.id);
  assert.equal(stored.status, "finished");
  assert.ok(stored.events.some((e) => e.type === "commit"));
  // Incremental: appended rows only.
  await table.add(rows(600, 50));
  const again = await backfill(ref(t.dir), "y");
  assert.ok(again.metrics.rowsComputed > 0 && again.metrics.rowsComputed <= 50);
  for (const row of await readAll(t, ["x", "y"])) assert.equal(row.y, row.x === null ? null : (row.x as number) * 2);
  const status = await columnStatus(ref(t.dir));
  assert.equal(status[0]!.moduleState, "sql");
  await assert.rejects(backfill(ref(t.dir), "y", { where: "id < 5" }), (e: unknown) => isBackfillError(e, "CONFIG_INVALID") && /where is not supported .*SQL UDF/.test((e as Error).message));
  await assert.rejects(alterColumns(ref(t.dir), { y: udfRef("doubled") }), /cannot be rebound from a SQL UDF/);
});

test("SQL UDFs from a module export and from the CLI", async () => {
  await using t = await tempDb();
  await makeTable(t, 1, 100);
  await addColumns(ref(t.dir), { z: udfRef("tripledSql") });
  const o = { out: "", err: "", isTTY: false };
  const io = { ...o, stdout: { write: (s: string) => (o.out += s) }, stderr: { write: (s: string) => (o.err += s) } };
  assert.equal(await run(["add-column", "--db", t.dir, "--table", "t", "--column", "w", "--sql", "id + 1"], io), 0, o.err);
  assert.match(o.out, /added SQL column w = id \+ 1 \(int64\), computed by LanceDB/);
  assert.equal(await run(["backfill", "--db", t.dir, "--table", "t", "--column", "w", "--json"], io), 0, o.err);
  assert.equal((JSON.parse(o.out.trim().split("\n").at(-1)!) as { metrics: { rowsComputed: number } }).metrics.rowsComputed, 100);
  await backfill(ref(t.dir), "z");
  for (const row of await readAll(t, ["id", "x", "z", "w"])) {
    assert.equal(row.z, row.x === null ? null : (row.x as number) * 3);
    assert.equal(row.w, (row.id as bigint) + 1n);
  }
  await assert.rejects(addColumns(ref(t.dir), { bad: { sql: "nope + 1" } }), (e: unknown) => isBackfillError(e, "UDF_INVALID") && /SQL expression "nope \+ 1" for column bad of table t was refused by LanceDB/.test((e as Error).message));
});
