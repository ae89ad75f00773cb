// The view commands as a user types them: create-view, refresh (incremental, --json), views, help and bad input.
import { test } from "node:test";
import assert from "node:assert/strict";
import { arrow } from "../../src/arrow.ts";
import { run, type CliIo } from "../../src/cli/main.ts";
import { tempDb, udfRef } from "../helpers.ts";

function io(): CliIo & { out: string; err: string } {
  const o = { out: "", err: "", isTTY: false } as CliIo & { out: string; err: string };
  return Object.assign(o, { stdout: { write: (s: string) => (o.out += s) }, stderr: { write: (s: string) => (o.err += s) } });
}
const last = (s: string): Record<string, unknown> => JSON.parse(s.trim().split("\n").at(-1)!) as Record<string, unknown>;

test("lancet create-view, refresh and views: incremental refreshes with exact counts; help; clear errors", async () => {
  await using t = await tempDb();
  const rows = (from: number, n: number) => new arrow.Table({ id: arrow.vectorFromArray(Array.from({ length: n }, (_, i) => BigInt(from + i)), new arrow.Int64()), x: arrow.vectorFromArray(Array.from({ length: n }, (_, i) => from + i), new arrow.Float64()) });
  const source = await t.db.createTable("src", rows(0, 50) as never, { storageOptions: { new_table_enable_stable_row_ids: "true" } } as never);
  let o = io();
  assert.equal(await run(["create-view", "--db", t.dir, "--view", "big", "--source", "src", "--select", "id,x", "--udf", `dbl=${udfRef("doubled")}`, "--where", "x >= 10"], o), 0, o.err);
  assert.match(o.out, /created view big of src \(id, x; UDF columns dbl\)/);
  o = io();
  assert.equal(await run(["refresh", "--db", t.dir, "--view", "big", "--json"], o), 0, o.err);
  assert.deepEqual(last(o.out), { status: "finished", sourceVersion: 1, rowsAdded: 40, rowsDeleted: 0, rowsUpdated: 0, rowsComputed: 40 });
  await source.add(rows(50, 5) as never);
  await source.delete("id < 12");
  o = io();
  assert.equal(await run(["refresh", "--db", t.dir, "--view", "big", "--json"], o), 0, o.err);
  assert.deepEqual({ ...last(o.out), sourceVersion: 0 }, { status: "finished", sourceVersion: 0, rowsAdded: 5, rowsDeleted: 2, rowsUpdated: 0, rowsComputed: 5 });
  o = io();
  assert.equal(await run(["views", "--db", t.dir], o), 0, o.err);
  assert.match(o.out, /^big {2}of src {2}select id,x {2}where x >= 10 {2}udfs dbl=.*#doubled {2}at source version \d+/m);
  o = io();
  assert.equal(await run(["views", "--db", t.dir, "--json"], o), 0, o.err);
  assert.equal((JSON.parse(o.out.trim()) as { name: string }[])[0]!.name, "big");
  o = io();
  assert.equal(await run(["status", "--db", t.dir, "--table", "big"], o), 0, o.err);
  assert.match(o.out, /^view of src \(select id,x; where x >= 10\), at source version \d+; refresh with `lancet refresh/m);
  // The refresh jobs are in `lancet jobs`, and `jobs show` says what each did.
  o = io();
  assert.equal(await run(["jobs", "--db", t.dir, "--json"], o), 0, o.err);
  const refreshes = (JSON.parse(o.out.trim().split("\n").at(-1)!) as { id: string; kind: string }[]).filter((j) => j.kind === "refresh");
  assert.equal(refreshes.length, 2);
  o = io();
  assert.equal(await run(["jobs", "show", refreshes[0]!.id, "--db", t.dir], o), 0, o.err);
  assert.match(o.out, /refresh of view big \(source src version \d+\): 5 added, 2 removed, 0 updated; column jobs dbl \S+ \(finished\)/);
  for (const cmd of ["create-view", "refresh", "views"]) {
    o = io();
    assert.equal(await run([cmd, "--help"], o), 0);
    assert.match(o.out, new RegExp(`^lancet ${cmd} — `));
  }
  // Bad input: a table that is not a view; a source without stable row ids; a missing flag.
  await t.db.createTable("plain", rows(0, 3) as never);
  o = io();
  assert.equal(await run(["refresh", "--db", t.dir, "--view", "plain"], o), 1);
  assert.match(o.err, /lancet: error TABLE_UNSUPPORTED: table plain is not a view/);
  o = io();
  assert.equal(await run(["create-view", "--db", t.dir, "--view", "v2", "--source", "plain", "--select", "id"], o), 1);
  assert.match(o.err, /new_table_enable_stable_row_ids/);
  o = io();
  assert.equal(await run(["create-view", "--db", t.dir, "--view", "v3", "--source", "src"], o), 2);
  assert.match(o.err, /--select is required|--select/);
});
