/**
 * Chunk views: a view whose rows are the children a chunker yields for each source row (its parent).
 * Every test compares the view with children recomputed here from the source (the fixture's
 * `splitWords` / `fanoutOf` are what its chunkers yield), ordered by (__source_row_id, __child_index).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { arrow } from "../../src/arrow.ts";
import type { ArrowNs, LanceNs } from "../../src/arrow.ts";
import { alterView, createView, isBackfillError, refreshView } from "../../src/index.ts";
import { fanoutOf, splitWords } from "../fixtures/chunkers.ts";
import { REPO, fragmentLayout, tempDb, udfRef, type TempDb } from "../helpers.ts";

const STABLE = { storageOptions: { new_table_enable_stable_row_ids: "true" } } as never;
const chunkerRef = (name: string): string => udfRef(name, "chunkers.ts");

/** The text of source row i: i % 4 words ("" — no words — every 4th row), null every 11th row from 5. */
const textOf = (i: number): string | null => (i % 11 === 5 ? null : Array.from({ length: i % 4 }, (_, k) => `w${i}_${k}`).join(" "));

/** Source rows id start..start+n-1: id int64, s utf8 (textOf), n int32 (= id % 5), tag utf8, other int64 (never selected). */
function src(start: number, n: number): ArrowNs.Table {
  const ids = Array.from({ length: n }, (_, i) => start + i);
  return new arrow.Table({
    id: arrow.vectorFromArray(ids.map(BigInt), new arrow.Int64()),
    s: arrow.vectorFromArray(ids.map(textOf), new arrow.Utf8()),
    n: arrow.vectorFromArray(ids.map((i) => i % 5), new arrow.Int32()),
    tag: arrow.vectorFromArray(ids.map((i) => `t${i}`), new arrow.Utf8()),
    other: arrow.vectorFromArray(ids.map(() => 0n), new arrow.Int64()),
  });
}

async function makeSource(t: TempDb, n = 60, name = "src"): Promise<LanceNs.Table> {
  return t.db.createTable(name, src(0, n), STABLE);
}

type Row = Record<string, unknown>;
const cmp = (a: unknown, b: unknown): number => (a === b ? 0 : (a as bigint | number) < (b as bigint | number) ? -1 : 1);

/** A table's rows with their stable row id (`_rowid`), ordered by it. */
async function parents(t: TempDb, name: string, columns: string[], where?: string): Promise<Row[]> {
  let q = (await t.open(name)).query().withRowId().select(columns);
  if (where !== undefined) q = q.where(where);
  const out = (await q.toArray()).map((r) => Object.fromEntries(["_rowid", ...columns].map((c) => [c, (r as Row)[c]])));
  return out.sort((a, b) => cmp(a._rowid, b._rowid));
}

/** A chunk view's rows (the two id columns and `columns`), ordered by (__source_row_id, __child_index). */
async function children(t: TempDb, view: string, columns: string[], withRowId = false): Promise<Row[]> {
  const cols = ["__source_row_id", "__child_index", ...columns];
  let q = (await t.open(view)).query().select(cols);
  if (withRowId) q = q.withRowId();
  const out = (await q.toArray()).map((r) => Object.fromEntries([...cols, ...(withRowId ? ["_rowid"] : [])].map((c) => [c, (r as Row)[c]])));
  return out.sort((a, b) => cmp(a.__source_row_id, b.__source_row_id) || cmp(a.__child_index, b.__child_index));
}

/** The children each parent should have: `expand(parent)` gives its output objects; `select` columns are inherited. */
function expected(ps: Row[], select: string[], expand: (p: Row) => Row[]): Row[] {
  return ps.flatMap((p) => expand(p).map((c, i) => ({ __source_row_id: p._rowid, __child_index: i, ...Object.fromEntries(select.map((k) => [k, p[k]])), ...c })));
}

const wordsOf = (p: Row): Row[] => splitWords(p.s as string | null);

/** Asserts view `view` holds exactly the `words` children of `source` (where `where`), inheriting `select`. */
async function assertWords(t: TempDb, view: string, select: string[], opts: { source?: string; where?: string; expand?: (p: Row) => Row[] } = {}): Promise<Row[]> {
  const ps = await parents(t, opts.source ?? "src", [...new Set([...select, "s"])], opts.where);
  const want = expected(ps, select, opts.expand ?? wordsOf);
  const got = await children(t, view, [...select, "word", "pos"]);
  assert.deepEqual(got, want, `view ${view}: its children are the words of its source rows`);
  return want;
}

/** How many children the parents with these stable row ids have in `rows`. */
const childrenOfParents = (rows: Row[], ids: Set<bigint>): number => rows.filter((r) => ids.has(r.__source_row_id as bigint)).length;

const counts = (r: { rowsAdded: number; rowsDeleted: number; parents?: { added: number; deleted: number; updated: number } }) => ({ rowsAdded: r.rowsAdded, rowsDeleted: r.rowsDeleted, parents: r.parents });

test("create + refresh: the view's columns, its children ordered by (__source_row_id, __child_index), the counts; a refresh with nothing changed does nothing", async () => {
  await using t = await tempDb();
  const source = await makeSource(t);
  await createView(t.dir, "v", { source: "src", chunker: chunkerRef("words"), select: ["id", "tag"] });
  const schema = await (await t.open("v")).schema();
  const names = schema.fields.map((f) => f.name);
  assert.deepEqual(names.slice(0, 2), ["__source_row_id", "__child_index"], names.join(", "));
  assert.deepEqual(names.filter((n) => !n.startsWith("__")), ["id", "tag", "word", "pos"], "selected columns, then the chunker's outputs; its input s is not copied");
  const typeOf = (n: string) => String(schema.fields.find((f) => f.name === n)!.type);
  assert.deepEqual(["__source_row_id", "__child_index", "id", "tag", "word", "pos"].map(typeOf), ["Int64", "Int32", "Int64", "Utf8", "Utf8", "Int32"]);
  assert.equal(await (await t.open("v")).countRows(), 0, "createView writes no rows");

  const first = await refreshView(t.dir, "v", { concurrency: 2 });
  assert.equal(first.status, "finished");
  assert.equal(first.sourceVersion, await source.version());
  const want = await assertWords(t, "v", ["id", "tag"]);
  assert.ok(want.length > 60, `${want.length} children`);
  assert.deepEqual(counts(first), { rowsAdded: want.length, rowsDeleted: 0, parents: { added: 60, deleted: 0, updated: 0 } });

  const idle = await refreshView(t.dir, "v");
  assert.deepEqual(counts(idle), { rowsAdded: 0, rowsDeleted: 0, parents: { added: 0, deleted: 0, updated: 0 } });
  await assertWords(t, "v", ["id", "tag"]);
});

test("the chunker's kinds give the same children: an array, a generator, an async generator, batch: true, one with setup()", async () => {
  await using t = await tempDb();
  await makeSource(t, 50);
  for (const name of ["words", "wordsGen", "wordsAsync", "wordsBatch", "wordsWithSetup"]) {
    await createView(t.dir, name, { source: "src", chunker: chunkerRef(name), select: ["id"] });
    const r = await refreshView(t.dir, name);
    assert.equal(r.status, "finished", name);
    const expand = name === "wordsWithSetup" ? (p: Row) => splitWords(p.s as string | null).map((w) => ({ word: `>${w.word}`, pos: w.pos })) : wordsOf;
    const want = await assertWords(t, name, ["id"], { expand });
    assert.equal(r.rowsAdded, want.length, name);
  }
});

test("selected columns are inherited by every child; a where filter on the source; without select a child holds the ids and the outputs only", async () => {
  await using t = await tempDb();
  const source = await makeSource(t);
  await createView(t.dir, "sel", { source: "src", chunker: chunkerRef("words"), select: ["id", "tag", "n"], where: "id >= 10" });
  await refreshView(t.dir, "sel");
  await assertWords(t, "sel", ["id", "tag", "n"], { where: "id >= 10" });

  await createView(t.dir, "bare", { source: "src", chunker: chunkerRef("words") });
  const bare = await (await t.open("bare")).schema();
  assert.deepEqual(bare.fields.map((f) => f.name).filter((n) => !n.startsWith("__")), ["word", "pos"]);
  await refreshView(t.dir, "bare");
  await assertWords(t, "bare", []);

  // A parent that leaves the filter loses its children; one that enters it gains them; an inherited column's change reaches every child.
  await source.update({ where: "id = 12", values: { id: 3 } });
  await source.update({ where: "id = 2", values: { id: 50 } });
  await source.update({ where: "id = 15", values: { tag: "changed" } });
  await refreshView(t.dir, "sel");
  await assertWords(t, "sel", ["id", "tag", "n"], { where: "id >= 10" });
  const rows15 = (await children(t, "sel", ["id", "tag"])).filter((r) => r.id === 15n);
  assert.ok(rows15.length === 3 && rows15.every((r) => r.tag === "changed"), JSON.stringify(rows15, (_k, x: unknown) => (typeof x === "bigint" ? String(x) : x)));
  await refreshView(t.dir, "bare");
  await assertWords(t, "bare", []);
});

test("incremental refresh is exact: new parents expanded, deleted parents lose their children, a parent whose input or selected column changed has all its children replaced (even with fewer or none), unrelated writes touch nothing", async () => {
  await using t = await tempDb();
  const source = await makeSource(t);
  await createView(t.dir, "v", { source: "src", chunker: chunkerRef("words"), select: ["id", "tag"] });
  await refreshView(t.dir, "v");
  const before = await children(t, "v", ["id"], true);
  const rowIdOf = async (ids: number[]) => new Set((await parents(t, "src", ["id"], `id IN (${ids.join(", ")})`)).map((p) => p._rowid as bigint));

  // Unrelated writes only: nothing to do, and the children are untouched (same view rows).
  await source.update({ where: "id >= 30", values: { other: 7 } });
  await source.update({ where: "id < 5", values: { n: 4 } });
  const unrelated = await refreshView(t.dir, "v");
  assert.deepEqual(counts(unrelated), { rowsAdded: 0, rowsDeleted: 0, parents: { added: 0, deleted: 0, updated: 0 } });
  assert.deepEqual(await children(t, "v", ["id"], true), before, "an unrelated write re-expands nothing");

  const deleted = await rowIdOf([20, 21, 22, 23, 24]);
  const updated = await rowIdOf([6, 7, 8, 9, 10]);
  const oldChildren = await children(t, "v", ["id"]);
  await source.add(src(60, 10));
  await source.update({ where: "id = 7", values: { s: "only" } }); // 3 words -> 1
  await source.update({ where: "id = 9", values: { s: "a b c d e" } }); // 1 -> 5
  await source.update({ where: "id = 6", values: { s: "" } }); // 2 -> 0
  await source.update({ where: "id = 8", values: { s: "x y" } }); // 0 -> 2
  await source.update({ where: "id = 10", values: { tag: "changed" } }); // a selected column: its 2 children replaced
  await source.update({ where: "id >= 30", values: { other: 8 } }); // unrelated
  await source.delete("id >= 20 AND id <= 24");
  const r = await refreshView(t.dir, "v", { concurrency: 2 });
  assert.equal(r.status, "finished");
  assert.equal(r.sourceVersion, await source.version());
  const want = await assertWords(t, "v", ["id", "tag"]);
  const added = await rowIdOf([60, 61, 62, 63, 64, 65, 66, 67, 68, 69]);
  const rowsDeleted = childrenOfParents(oldChildren, new Set([...deleted, ...updated]));
  const rowsAdded = childrenOfParents(want, new Set([...added, ...updated]));
  assert.deepEqual(counts(r), { rowsAdded, rowsDeleted, parents: { added: 10, deleted: 5, updated: 5 } });

  // The children of every other parent are the same view rows as before: not rewritten.
  const touched = new Set([...deleted, ...updated, ...added]);
  const keep = (rows: Row[]) => rows.filter((x) => !touched.has(x.__source_row_id as bigint));
  assert.deepEqual(keep(await children(t, "v", ["id"], true)), keep(before), "untouched parents' children are not rewritten");
  const idle = await refreshView(t.dir, "v");
  assert.deepEqual(counts(idle), { rowsAdded: 0, rowsDeleted: 0, parents: { added: 0, deleted: 0, updated: 0 } });
});

test("parents yielding zero children count as done: not expanded again by later refreshes; an update of their input expands them once", async () => {
  await using t = await tempDb();
  const source = await makeSource(t, 45);
  const logFile = path.join(t.dir, "calls.log");
  const env = { CHUNK_LOG: logFile };
  const calls = (): string[] => (existsSync(logFile) ? readFileSync(logFile, "utf8").trim().split("\n").filter(Boolean).map((l) => l.split(" ")[1]!) : []);
  const sparse = (p: Row): Row[] => ((p.id as bigint) % 3n === 0n ? [] : wordsOf(p));
  await createView(t.dir, "v", { source: "src", chunker: chunkerRef("sparse"), select: ["id"] });
  const first = await refreshView(t.dir, "v", { env });
  await assertWords(t, "v", ["id"], { expand: sparse });
  assert.deepEqual(calls().sort(), Array.from({ length: 45 }, (_, i) => String(i)).sort(), "each parent expanded once");
  assert.equal(first.parents!.added, 45);
  const zero = (await parents(t, "src", ["id", "s"])).filter((p) => sparse(p).length === 0).length;
  assert.ok(zero >= 15, `${zero} parents without children`);

  const again = await refreshView(t.dir, "v", { env });
  assert.deepEqual(counts(again), { rowsAdded: 0, rowsDeleted: 0, parents: { added: 0, deleted: 0, updated: 0 } });
  await source.update({ where: "id >= 0", values: { other: 3 } });
  await refreshView(t.dir, "v", { env });
  assert.equal(calls().length, 45, "no parent expanded again, with or without children, after no change or an unrelated write");

  // A zero-child parent (id 3) whose input changes is expanded once more: still no children (id % 3 == 0).
  // A parent with children (id 4, "" -> two words) likewise.
  await source.update({ where: "id = 3", values: { s: "p q" } });
  await source.update({ where: "id = 4", values: { s: "p q" } });
  const r = await refreshView(t.dir, "v", { env });
  assert.deepEqual(calls().slice(45).sort(), ["3", "4"]);
  assert.deepEqual(counts(r), { rowsAdded: 2, rowsDeleted: 0, parents: { added: 0, deleted: 0, updated: 2 } });
  await assertWords(t, "v", ["id"], { expand: sparse });
});

test("alterView rebinds the chunker: a new version regenerates every child at the next refresh; the same version regenerates nothing; changed code of the same export does", async () => {
  await using t = await tempDb();
  await makeSource(t, 40);
  await createView(t.dir, "v", { source: "src", chunker: chunkerRef("words"), select: ["id"] });
  await refreshView(t.dir, "v");
  const old = await assertWords(t, "v", ["id"]);
  const upper = (p: Row): Row[] => splitWords(p.s as string | null).map((w) => ({ word: w.word.toUpperCase(), pos: w.pos }));

  await alterView(t.dir, "v", { chunker: chunkerRef("wordsV2") });
  const regen = await refreshView(t.dir, "v");
  const want = await assertWords(t, "v", ["id"], { expand: upper });
  assert.equal(regen.rowsAdded, want.length);

  await alterView(t.dir, "v", { chunker: chunkerRef("wordsV2") });
  const same = await refreshView(t.dir, "v");
  assert.deepEqual([same.rowsAdded, same.rowsDeleted], [0, 0], "rebinding the same version regenerates nothing");
  await assertWords(t, "v", ["id"], { expand: upper });

  // No explicit version: the code is the version.
  const mod = path.join(t.dir, "mod.ts");
  const moduleText = (suffix: string) =>
    `export const c = { kind: "chunker", inputs: ["s"], outputs: { word: "utf8", pos: "int32" }, fn: (s: string | null) => (s === null ? [] : s.split(" ").filter((w) => w.length > 0).map((w, pos) => ({ word: w + "${suffix}", pos }))) };\n`;
  writeFileSync(mod, moduleText("-a"));
  await alterView(t.dir, "v", { chunker: `${mod}#c` });
  await refreshView(t.dir, "v");
  const suffixed = (suffix: string) => (p: Row): Row[] => splitWords(p.s as string | null).map((w) => ({ word: w.word + suffix, pos: w.pos }));
  await assertWords(t, "v", ["id"], { expand: suffixed("-a") });
  writeFileSync(mod, moduleText("-b"));
  const unbound = await refreshView(t.dir, "v");
  assert.deepEqual([unbound.rowsAdded, unbound.rowsDeleted], [0, 0], "the bound code is a snapshot: editing the file changes nothing until it is rebound");
  await alterView(t.dir, "v", { chunker: `${mod}#c` });
  const changed = await refreshView(t.dir, "v");
  await assertWords(t, "v", ["id"], { expand: suffixed("-b") });
  assert.equal(changed.rowsAdded, want.length);
  // Last, so that the rest is checked first: every old child was removed, and rowsDeleted says so.
  assert.deepEqual({ versionChange: regen.rowsDeleted, codeChange: changed.rowsDeleted }, { versionChange: old.length, codeChange: want.length }, "rowsDeleted counts the children a new chunker version removed");
});

test("many small work items and flushes (sourceTaskSize 3, maxRowsPerFragment 10) give the same children as the defaults; fragments hold at most 10 rows", async () => {
  await using t = await tempDb();
  const source = await makeSource(t, 90);
  const fan = (p: Row): Row[] => fanoutOf(p.id as bigint, p.n as number | null);
  const check = async (view: string) => {
    const want = expected(await parents(t, "src", ["id", "n"]), ["id"], fan);
    assert.deepEqual(await children(t, view, ["id", "k", "label"]), want, view);
    return want;
  };
  await createView(t.dir, "small", { source: "src", chunker: chunkerRef("fanout"), select: ["id"] });
  await createView(t.dir, "big", { source: "src", chunker: chunkerRef("fanout"), select: ["id"] });
  const small = await refreshView(t.dir, "small", { sourceTaskSize: 3, maxRowsPerFragment: 10, concurrency: 3 });
  const big = await refreshView(t.dir, "big");
  const want = await check("small");
  await check("big");
  assert.equal(want.length, 180); // n = id % 5: 0+1+2+3+4 per 5 parents
  assert.deepEqual(counts(small), counts(big));
  const layout = await fragmentLayout(t, "small");
  assert.ok(layout.every((f) => f.physicalRows <= 10), JSON.stringify(layout));
  assert.ok(layout.length >= 18, `${layout.length} fragments`);

  await source.update({ where: "id >= 40 AND id < 50", values: { n: 6 } });
  await source.delete("id < 7");
  await source.add(src(90, 20));
  const a = await refreshView(t.dir, "small", { sourceTaskSize: 3, maxRowsPerFragment: 10, concurrency: 3 });
  const b = await refreshView(t.dir, "big");
  await check("small");
  await check("big");
  assert.deepEqual(counts(a), counts(b));
  // Parents now fan out to 6 children each: a work item of 3 holds 18, more than one fragment's worth.
  const after = await fragmentLayout(t, "small");
  assert.ok(after.every((f) => f.physicalRows <= 10), `maxRowsPerFragment 10, fragments: ${JSON.stringify(after.map((f) => f.physicalRows))}`);
});

test("a UDF column of a chunk view is computed from the children's own columns by the refresh, for new and replaced children", async () => {
  await using t = await tempDb();
  const source = await makeSource(t, 40);
  await createView(t.dir, "v", { source: "src", chunker: chunkerRef("words"), select: ["id"], udfs: { len: chunkerRef("wordLength") } });
  const names = (await (await t.open("v")).schema()).fields.map((f) => f.name).filter((n) => !n.startsWith("__"));
  assert.deepEqual(names, ["id", "word", "pos", "len"]);
  const check = async () => {
    await assertWords(t, "v", ["id"]);
    const rows = await children(t, "v", ["word", "len"]);
    assert.ok(rows.length > 0);
    for (const r of rows) assert.equal(r.len, (r.word as string).length, `len of ${String(r.word)}`);
  };
  const first = await refreshView(t.dir, "v");
  await check();
  assert.ok(first.rowsComputed >= first.rowsAdded, `rowsComputed ${first.rowsComputed}`);
  await source.update({ where: "id = 9", values: { s: "abcdefghij k" } });
  await source.add(src(40, 5));
  await refreshView(t.dir, "v");
  await check();
  assert.equal(await (await t.open("v")).countRows("len IS NULL"), 0);
});

test("chained views: a chunk view over a plain view, and a plain view over a chunk view, stay exact through changes", async () => {
  await using t = await tempDb();
  const source = await makeSource(t, 50);
  await createView(t.dir, "pv", { source: "src", where: "id >= 10", select: ["id", "s", "tag"] });
  await createView(t.dir, "cv", { source: "pv", chunker: chunkerRef("words"), select: ["id", "tag"] });
  await createView(t.dir, "vv", { source: "cv", where: "pos = 0", select: ["id", "word", "pos"] });
  const check = async () => {
    await assertWords(t, "cv", ["id", "tag"], { source: "pv" });
    // vv: the first word of each parent, keyed by cv's own row id.
    const want = (await parents(t, "cv", ["id", "word", "pos"], "pos = 0")).map(({ _rowid, ...r }) => ({ __source_row_id: _rowid, ...r }));
    const got = (await (await t.open("vv")).query().select(["__source_row_id", "id", "word", "pos"]).toArray()).map((r) => ({ __source_row_id: (r as Row).__source_row_id, id: (r as Row).id, word: (r as Row).word, pos: (r as Row).pos }));
    got.sort((a, b) => cmp(a.__source_row_id, b.__source_row_id));
    assert.deepEqual(got, want, "vv is the pos = 0 children of cv");
    assert.ok(want.length > 0);
  };
  for (const v of ["pv", "cv", "vv"]) await refreshView(t.dir, v);
  await check();
  await source.update({ where: "id = 13", values: { s: "new words here" } });
  await source.update({ where: "id = 14", values: { tag: "t" } });
  await source.delete("id = 15 OR id = 30");
  await source.add(src(50, 5));
  for (const v of ["pv", "cv", "vv"]) await refreshView(t.dir, v);
  await check();
});

test("kill -9 of a refresh's coordinator mid-way (a real process): a re-run in this process gives every child exactly once, and work done before the kill is not redone", async () => {
  await using t = await tempDb();
  await makeSource(t, 300);
  await createView(t.dir, "v", { source: "src", chunker: chunkerRef("slowWords"), select: ["id"] });
  const total = expected(await parents(t, "src", ["id", "s"]), [], wordsOf).length;
  const script = `const { refreshView } = await import(${JSON.stringify(path.join(REPO, "src/index.ts"))});
await refreshView(${JSON.stringify(t.dir)}, "v", { concurrency: 1, sourceTaskSize: 10 });`;
  const logFile = path.join(t.dir, "calls.log");
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], { env: { ...process.env, CHUNK_LOG: logFile }, stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  let exitedEarly = false;
  const exited = new Promise<NodeJS.Signals | null>((r) => child.on("exit", (_code, signal) => ((exitedEarly = true), r(signal))));
  const expanded = (): number => (existsSync(logFile) ? readFileSync(logFile, "utf8").split("\n").filter(Boolean).length : 0);
  // Kill it once about a third of the parents were expanded (some of their children flushed, some recorded done).
  for (let i = 0; i < 1500 && !exitedEarly && expanded() < 100; i++) await new Promise((r) => setTimeout(r, 20));
  child.kill("SIGKILL");
  const signal = await exited;
  const atKill = await (await t.open("v")).countRows();
  assert.equal(signal, "SIGKILL", `the refresh was killed before it finished (${expanded()} parents expanded, ${atKill} of ${total} children in the view): ${stderr}`);
  assert.ok(atKill < total, `killed with ${atKill} of ${total} children in the view`);

  const r = await refreshView(t.dir, "v");
  assert.equal(r.status, "finished");
  const rows = await children(t, "v", ["id"]);
  const keys = rows.map((x) => `${String(x.__source_row_id)}/${String(x.__child_index)}`);
  assert.equal(new Set(keys).size, keys.length, "no child twice");
  await assertWords(t, "v", ["id"]);
  assert.ok(r.parents!.added < 300, `the re-run expanded ${r.parents!.added} of 300 parents: the parents finished before the kill are not redone`);
  const idle = await refreshView(t.dir, "v");
  assert.deepEqual(counts(idle), { rowsAdded: 0, rowsDeleted: 0, parents: { added: 0, deleted: 0, updated: 0 } });
});

test("a worker killed right after it flushed children (LANCET_FAILPOINTS=chunk.after-flush:kill@2) is retried on a fresh process: every child exactly once", async () => {
  await using t = await tempDb();
  await makeSource(t, 60);
  const logFile = path.join(t.dir, "calls.log");
  await createView(t.dir, "v", { source: "src", chunker: chunkerRef("slowWords"), select: ["id"] });
  const r = await refreshView(t.dir, "v", { concurrency: 1, sourceTaskSize: 10, env: { LANCET_FAILPOINTS: "chunk.after-flush:kill@2", CHUNK_LOG: logFile } });
  assert.equal(r.status, "finished");
  const rows = await children(t, "v", ["id"]);
  const keys = rows.map((x) => `${String(x.__source_row_id)}/${String(x.__child_index)}`);
  assert.equal(new Set(keys).size, keys.length, "no child twice");
  const want = await assertWords(t, "v", ["id"]);
  assert.equal(r.rowsAdded, want.length, "children flushed by a killed attempt are not counted twice");
  assert.equal(r.parents!.added, 60);
  // Evidence of the kill and the retry: more than one worker process, and some parents expanded twice.
  const lines = readFileSync(logFile, "utf8").trim().split("\n");
  const pids = new Set(lines.map((l) => l.split(" ")[0]));
  assert.ok(pids.size >= 2, `worker processes: ${[...pids].join(", ")}`);
  assert.ok(lines.length > 60, `${lines.length} expansions of 60 parents: a killed work item was redone`);
});

test("bad chunker or options at createView: each a clear error code, nothing left behind", async () => {
  await using t = await tempDb();
  await makeSource(t, 10);
  const before = (await t.db.tableNames()).sort();
  const cases: [string, Parameters<typeof createView>[2], string, RegExp][] = [
    ["no outputs", { source: "src", chunker: chunkerRef("noOutputs") }, "UDF_INVALID", /outputs/],
    ["unknown output type", { source: "src", chunker: chunkerRef("unknownOutputType") }, "UDF_INVALID", /float65/],
    ["not a chunker", { source: "src", chunker: udfRef("doubled") }, "UDF_INVALID", /chunker/],
    ["unknown export", { source: "src", chunker: chunkerRef("nope") }, "", /nope/],
    ["input not a source column", { source: "src", chunker: chunkerRef("missingInput") }, "INPUT_COLUMN_NOT_FOUND", /nope/],
    ["output collides with a selected column", { source: "src", chunker: chunkerRef("tagOutput"), select: ["id", "tag"] }, "COLUMN_EXISTS", /tag/],
    ["UDF column collides with an output", { source: "src", chunker: chunkerRef("words"), udfs: { word: chunkerRef("wordLength") } }, "COLUMN_EXISTS", /word/],
    ["UDF input not a view column", { source: "src", chunker: chunkerRef("words"), udfs: { dbl: udfRef("doubled") } }, "INPUT_COLUMN_NOT_FOUND", /x/],
  ];
  for (const [label, options, code, message] of cases) {
    await assert.rejects(createView(t.dir, "v", options), (e: unknown) => {
      assert.ok(code === "" ? isBackfillError(e) : isBackfillError(e, code as never), `${label}: ${String(e)}`);
      assert.match((e as Error).message, message, label);
      return true;
    });
    assert.deepEqual((await t.db.tableNames()).sort(), before, `${label}: no table written`);
    assert.ok(!existsSync(path.join(t.dir, "_lancet", "v")), `${label}: no Lancet store written`);
  }
  // The name is still free: a good chunk view can take it.
  await createView(t.dir, "v", { source: "src", chunker: chunkerRef("words"), select: ["id"] });
  assert.equal((await refreshView(t.dir, "v")).status, "finished");
  await assertWords(t, "v", ["id"]);
});

test("a child missing an output field or of the wrong type fails the refresh with UDF_OUTPUT_TYPE naming the view, the parent and the field; no child of the failed work item is kept", async () => {
  await using t = await tempDb();
  await makeSource(t, 40);
  const rowIdOfId = async (id: number) => (await parents(t, "src", ["id"], `id = ${id}`))[0]!._rowid as bigint;
  for (const [view, chunker, parentId, field] of [
    ["missingfield", "bad", 39, "pos"],
    ["wrongtype", "badType", 23, "word"],
  ] as const) {
    await createView(t.dir, view, { source: "src", chunker: chunkerRef(chunker), select: ["id"] });
    const parentRowId = await rowIdOfId(parentId);
    await assert.rejects(refreshView(t.dir, view, { sourceTaskSize: 5 }), (e: unknown) => {
      assert.ok(isBackfillError(e, "UDF_OUTPUT_TYPE"), `${view}: ${String(e)}`);
      const m = (e as Error).message;
      assert.ok(m.includes(view), `names the view: ${m}`);
      assert.ok(new RegExp(`\\b${parentRowId}\\b`).test(m), `names the parent's source row id ${parentRowId}: ${m}`);
      assert.ok(new RegExp(`\\b${field}\\b`).test(m), `names the field ${field}: ${m}`);
      return true;
    });
    const rows = await children(t, view, ["id"]);
    assert.equal(rows.filter((r) => r.__source_row_id === parentRowId).length, 0, `${view}: no child of the failing parent`);
    // The failed work item (sourceTaskSize 5: the 5 parents around it) left nothing; whatever else is there is correct and once only.
    const keys = rows.map((x) => `${String(x.__source_row_id)}/${String(x.__child_index)}`);
    assert.equal(new Set(keys).size, keys.length, `${view}: no child twice`);
    const want = new Map(expected(await parents(t, "src", ["id", "s"]), ["id"], wordsOf).map((w) => [`${String(w.__source_row_id)}/${String(w.__child_index)}`, w]));
    for (const r of await children(t, view, ["id", "word", "pos"])) {
      assert.deepEqual(r, want.get(`${String(r.__source_row_id)}/${String(r.__child_index)}`), `${view}: a kept child is correct`);
    }
    // Parents of the failed item's neighbours that yield children must not be half-present: each parent has all its children or none.
    const byParent = new Map<bigint, number>();
    for (const r of rows) byParent.set(r.__source_row_id as bigint, (byParent.get(r.__source_row_id as bigint) ?? 0) + 1);
    for (const [p, n] of byParent) assert.equal(n, [...want.values()].filter((w) => w.__source_row_id === p).length, `${view}: parent ${p} has all its children`);
    // Rebound to a good chunker, the view refreshes to exactly the right children.
    await alterView(t.dir, view, { chunker: chunkerRef("words") });
    assert.equal((await refreshView(t.dir, view)).status, "finished");
    await assertWords(t, view, ["id"]);
  }
});
