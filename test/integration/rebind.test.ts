// Binding a UDF to a column that holds user data (a primary key, an input column) is refused unless
// forced: a backfill would overwrite its values. Backfill refuses data columns, and Lancet's own
// columns are never bound.
import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import * as path from "node:path";
import { addColumns, alterColumns, backfill, isBackfillError, type ErrorCode } from "../../src/index.ts";
import { internalColumns } from "../../src/columns.ts";
import { makeTable, readAll, tempDb, udfRef, type TempDb } from "../helpers.ts";

const ref = (dir: string) => ({ db: dir, table: "t" });

/** A module with int64 UDFs that do not read `id`, so they can be bound to it. */
function zeroModule(t: TempDb): { v1: string; v2: string } {
  const file = path.join(t.dir, "zero.ts");
  writeFileSync(file, 'export const zero = { inputs: ["x"], dataType: "int64", fn: () => 0n };\nexport const zeroV2 = { inputs: ["x"], dataType: "int64", version: "v2", fn: () => 0n };\n');
  return { v1: `${file}#zero`, v2: `${file}#zeroV2` };
}

function isCode(code: ErrorCode, ...patterns: RegExp[]): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(isBackfillError(e, code), `expected ${code}, got ${(e as { code?: string }).code}: ${(e as Error).message}`);
    for (const re of patterns) assert.match((e as Error).message, re);
    return true;
  };
}

test("alterColumns refuses a data column, saying what would be overwritten and how to proceed; the table is unchanged", async () => {
  await using t = await tempDb();
  await makeTable(t, 2, 10);
  const zero = zeroModule(t);
  const version = await (await t.open()).version();
  await assert.rejects(
    alterColumns(ref(t.dir), { id: zero.v1 }),
    isCode("COLUMN_NOT_UDF", /column id of table t is a data column \(int64, 20 non-null values\), not a UDF column/, /would be overwritten/, /force: true \(CLI: alter-column --force\)/, /add-column/),
  );
  // The count is of non-null values: x is null on every 7th row.
  await assert.rejects(alterColumns(ref(t.dir), { x: udfRef("asFloat32") }), isCode("COLUMN_NOT_UDF", /column x of table t is a data column \(float64, 17 non-null values\)/));
  const table = await t.open();
  assert.equal(await table.version(), version, "nothing was committed");
  assert.equal((await table.schema()).fields.find((f) => f.name === "id")!.metadata.size, 0, "id is still unbound");
});

test("alterColumns with force binds a data column; a version change then overwrites it, as the refusal said", async () => {
  await using t = await tempDb();
  await makeTable(t, 2, 10);
  const zero = zeroModule(t);
  const [bound] = await alterColumns(ref(t.dir), { id: zero.v1 }, { force: true });
  assert.equal(bound!.binding.exportName, "zero");
  await backfill(ref(t.dir), "id");
  assert.deepEqual((await readAll(t, ["id"])).map((r) => r.id), Array.from({ length: 20 }, (_, i) => BigInt(i)), "non-null values are kept at first");
  // Now a UDF column: rebinding needs no force, and the new version recomputes every row.
  await alterColumns(ref(t.dir), { id: zero.v2 });
  await backfill(ref(t.dir), "id");
  assert.deepEqual(new Set((await readAll(t, ["id"])).map((r) => r.id)), new Set([0n]));
});

test("rebinding a UDF column needs no force", async () => {
  await using t = await tempDb();
  await makeTable(t, 1, 10);
  await addColumns(ref(t.dir), { y: udfRef("doubledV1") });
  const [r] = await alterColumns(ref(t.dir), { y: udfRef("doubledV2") });
  assert.equal(r!.binding.version, "v2");
});

test("alterColumns checks options.force", async () => {
  await using t = await tempDb();
  await makeTable(t, 1, 10);
  await assert.rejects(alterColumns(ref(t.dir), { id: udfRef("doubled") }, { force: "yes" as never }), isCode("CONFIG_INVALID", /options\.force must be a boolean \(got "yes"\)/));
});

test("addColumns on an existing data column points away from alter-column", async () => {
  await using t = await tempDb();
  await makeTable(t, 1, 10);
  await assert.rejects(addColumns(ref(t.dir), { x: udfRef("asFloat32") }), isCode("COLUMN_EXISTS", /table t already has a column x; it is a data column \(float64\), not a UDF column; pick another name/));
  await addColumns(ref(t.dir), { y: udfRef("doubled") });
  await assert.rejects(addColumns(ref(t.dir), { y: udfRef("doubled") }), isCode("COLUMN_EXISTS", /already has a column y; use alter-column to rebind it/));
});

test("backfill of a data column is refused, pointing to add-column", async () => {
  await using t = await tempDb();
  await makeTable(t, 1, 10);
  await assert.rejects(backfill(ref(t.dir), "x"), isCode("COLUMN_NOT_UDF", /column x of table t is a data column, not bound to a UDF, so there is nothing to backfill; add a UDF column with add-column/));
  assert.equal((await readAll(t, ["x"]))[1]!.x, 0.5, "x is unchanged");
});

test("_lancet_key after a mergeInsert run: listed as internal, never bound, never offered as a column", async () => {
  await using t = await tempDb();
  await makeTable(t, 2, 10);
  await addColumns(ref(t.dir), { y: udfRef("doubled") });
  await backfill(ref(t.dir), "y", { commitMode: "merge" });
  const fields = (await (await t.open()).schema()).fields.map((f) => f.name);
  assert.ok(fields.includes("_lancet_key"), `the merge path added its key (${fields.join(", ")})`);
  const internal = await internalColumns(ref(t.dir));
  assert.deepEqual(internal.map((c) => c.column), ["_lancet_key"]);
  assert.match(internal[0]!.purpose, /Lancet's internal row key/);
  await assert.rejects(alterColumns(ref(t.dir), { _lancet_key: udfRef("asUtf8") }, { force: true }), isCode("CONFIG_INVALID", /column _lancet_key of table t is Lancet's internal row key .*; it cannot be bound to a UDF/));
  await assert.rejects(backfill(ref(t.dir), "nope"), (e: unknown) => isCode("COLUMN_NOT_FOUND", /its columns are id, x, s, y\./)(e) && !/_lancet_key/.test((e as Error).message));
  await assert.rejects(backfill(ref(t.dir), "y", { where: "nope > 1" }), (e: unknown) => isCode("WHERE_INVALID", /No field named nope\. Valid fields are `id`, `x`, `s`, `y`\./)(e) && !/_lancet_key/.test((e as Error).message));
  await assert.rejects(addColumns(ref(t.dir), { z: udfRef("missingInput") }), (e: unknown) => isCode("INPUT_COLUMN_NOT_FOUND", /columns are id, x, s, y$/)(e));
});
