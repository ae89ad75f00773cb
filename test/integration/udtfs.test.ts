/**
 * Batch UDTF views: a view whose rows are what a UDTF yields for each partition of its source (all
 * source rows with the same `partitionBy` value, or the whole source without one). Every test compares
 * the view with the rows recomputed here from the source (the fixture's `wordCount` / `totals` are what
 * its UDTFs compute), as sorted multisets: a UDTF view has no row order.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import * as path from "node:path";
import { arrow, lancedb } from "../../src/arrow.ts";
import type { ArrowNs, LanceNs } from "../../src/arrow.ts";
import { addColumns, alterView, createView, getJob, isBackfillError, listErrors, listJobs, listViews, readView, refreshView } from "../../src/index.ts";
import { totals, wordCount } from "../fixtures/udtfs.ts";
import { run as cli, type CliIo } from "../../src/cli/main.ts";
import { REPO, fragmentLayout, tempDb, udfRef, type TempDb } from "../helpers.ts";

const STABLE = { storageOptions: { new_table_enable_stable_row_ids: "true" } } as never;
const udtfRef = (name: string): string => udfRef(name, "udtfs.ts");

type Row = Record<string, unknown>;
interface UdtfViewOptions {
  source: string;
  udtf: string;
  where?: string;
  udfs?: Record<string, string>;
}
type RefreshOptions = NonNullable<Parameters<typeof refreshView>[2]> & { maxRowsPerFragment?: number };
type UdtfRefresh = Awaited<ReturnType<typeof refreshView>> & { skipped?: boolean; partitions?: { total: number; computed: number } };

// The UDTF options are typed loosely here so that this file states the API it tests, whatever the option types say.
const createUdtfView = (db: string, name: string, options: UdtfViewOptions) => createView(db, name, options as unknown as Parameters<typeof createView>[2]);
const alterUdtf = (db: string, name: string, udtf: string) => alterView(db, name, { udtf } as unknown as Parameters<typeof alterView>[2]);
const refresh = async (db: string, name: string, options: RefreshOptions = {}): Promise<UdtfRefresh> => (await refreshView(db, name, options as never)) as UdtfRefresh;

const LANGS = ["en", "fr", "de", "it", "nl"];
/** The text of source row i: i % 4 words ("" every 4th row), null every 11th row from 5. */
const textOf = (i: number): string | null => (i % 11 === 5 ? null : Array.from({ length: i % 4 }, (_, k) => `w${i}_${k}`).join(" "));

/** Source rows id start..start+n-1: id int64, lang utf8 (LANGS[i % 5] unless `lang`), text utf8 (textOf), bucket int32 (i % 12), other int64 (never an input). */
function src(start: number, n: number, lang?: string): ArrowNs.Table {
  const ids = Array.from({ length: n }, (_, i) => start + i);
  return new arrow.Table({
    id: arrow.vectorFromArray(ids.map(BigInt), new arrow.Int64()),
    lang: arrow.vectorFromArray(ids.map((i) => lang ?? LANGS[i % 5]!), new arrow.Utf8()),
    text: arrow.vectorFromArray(ids.map(textOf), new arrow.Utf8()),
    bucket: arrow.vectorFromArray(ids.map((i) => i % 12), new arrow.Int32()),
    other: arrow.vectorFromArray(ids.map(() => 0n), new arrow.Int64()),
  });
}

async function makeSource(t: TempDb, n = 100, name = "src"): Promise<LanceNs.Table> {
  return t.db.createTable(name, src(0, n), STABLE);
}

const json = (x: unknown): string => JSON.stringify(x, (_k, v: unknown) => (typeof v === "bigint" ? `${v}n` : v));
const sortRows = (rows: Row[]): Row[] => rows.map((r) => [json(r), r] as const).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)).map(([, r]) => r);

/** A table's rows (the given columns), as plain objects, sorted; at `version` when given. */
async function read(t: TempDb, name: string, columns: string[], opts: { where?: string; version?: number } = {}): Promise<Row[]> {
  const table = await t.open(name);
  if (opts.version !== undefined) await table.checkout(opts.version);
  let q = table.query().select(columns);
  if (opts.where !== undefined) q = q.where(opts.where);
  return sortRows((await q.toArray()).map((r) => Object.fromEntries(columns.map((c) => [c, (r as Row)[c]]))));
}

/** The rows `langStats` should give for `rows` (with lang, text): one per language. */
function langStatsOf(rows: Row[], words: (w: bigint) => bigint = (w) => w): Row[] {
  const by = new Map<string, Row[]>();
  for (const r of rows) by.set(r.lang as string, [...(by.get(r.lang as string) ?? []), r]);
  return sortRows([...by].map(([lang, rs]) => {
    const tot = totals(rs);
    return { __partition: JSON.stringify(lang), lang, docs: tot.docs, words: words(tot.words) };
  }));
}

/** The rows `bucketStats` / `slowStats` should give: one per bucket. */
function bucketStatsOf(rows: Row[]): Row[] {
  const by = new Map<number, Row[]>();
  for (const r of rows) by.set(r.bucket as number, [...(by.get(r.bucket as number) ?? []), r]);
  return sortRows([...by].map(([bucket, rs]) => ({ __partition: JSON.stringify(bucket), bucket, ...totals(rs) })));
}

const STATS_COLS = ["__partition", "lang", "docs", "words"];
const BUCKET_COLS = ["__partition", "bucket", "docs", "words"];

/** Asserts view `view` holds exactly langStats of the source rows (where `where`, at `version`). */
async function assertLangStats(t: TempDb, view: string, opts: { where?: string; version?: number; words?: (w: bigint) => bigint } = {}): Promise<Row[]> {
  const want = langStatsOf(await read(t, "src", ["lang", "text"], opts), opts.words);
  assert.deepEqual(await read(t, view, STATS_COLS), want, `view ${view}: one row per language of its source rows`);
  return want;
}

async function assertBucketStats(t: TempDb, view: string): Promise<Row[]> {
  const want = bucketStatsOf(await read(t, "src", ["bucket", "text"]));
  assert.deepEqual(await read(t, view, BUCKET_COLS), want, `view ${view}: one row per bucket of its source rows`);
  return want;
}

const viewVersion = async (t: TempDb, view: string): Promise<number> => (await t.open(view)).version();

/** A call log (UDTF_LOG) of the fixture: its lines as [pid, partition JSON]. */
function callLog(file: string): { lines: () => [string, string][]; partitions: () => string[] } {
  const lines = (): [string, string][] => (existsSync(file) ? readFileSync(file, "utf8").split("\n").filter(Boolean).map((l) => { const i = l.indexOf(" "); return [l.slice(0, i), l.slice(i + 1)]; }) : []);
  return { lines, partitions: () => lines().map(([, p]) => p) };
}

const counts = (r: UdtfRefresh) => ({ rowsAdded: r.rowsAdded, rowsDeleted: r.rowsDeleted, partitions: r.partitions });

test("create + refresh: __partition then the UDTF's outputs, typed; createView writes no rows; one row per partition; the counts", async () => {
  await using t = await tempDb();
  const source = await makeSource(t);
  await createUdtfView(t.dir, "v", { source: "src", udtf: udtfRef("langStats") });
  const schema = await (await t.open("v")).schema();
  assert.deepEqual(schema.fields.map((f) => f.name), ["__partition", "lang", "docs", "words"]);
  assert.deepEqual(schema.fields.map((f) => String(f.type)), ["Utf8", "Utf8", "Int64", "Int64"]);
  assert.equal(await (await t.open("v")).countRows(), 0, "createView writes no rows");

  const log = callLog(path.join(t.dir, "calls.log"));
  const r = await refresh(t.dir, "v", { env: { UDTF_LOG: path.join(t.dir, "calls.log") } });
  assert.equal(r.status, "finished");
  assert.notEqual(r.skipped, true);
  assert.equal(r.sourceVersion, await source.version());
  const want = await assertLangStats(t, "v");
  assert.equal(want.length, 5);
  assert.deepEqual(want.map((w) => w.__partition), ['"de"', '"en"', '"fr"', '"it"', '"nl"'], "__partition is the partition's value as JSON");
  assert.deepEqual(counts(r), { rowsAdded: 5, rowsDeleted: 0, partitions: { total: 5, computed: 5 } });
  assert.deepEqual(log.partitions().sort(), ['"de"', '"en"', '"fr"', '"it"', '"nl"'], "each partition computed once");
  const jobs = await listJobs(t.dir);
  assert.ok(jobs.some((j) => j.kind === "udtf" && j.status === "finished"), `a finished job of kind udtf: ${json(jobs.map((j) => [j.kind, j.status, j.table]))}`);
});

test("a refresh with the source version and the UDTF version unchanged is skipped: nothing computed, nothing written; any new source version recomputes every partition", async () => {
  await using t = await tempDb();
  const source = await makeSource(t);
  const logFile = path.join(t.dir, "calls.log");
  const log = callLog(logFile);
  const env = { UDTF_LOG: logFile };
  await createUdtfView(t.dir, "v", { source: "src", udtf: udtfRef("langStats") });
  await refresh(t.dir, "v", { env });
  const rows = await read(t, "v", STATS_COLS);
  const version = await viewVersion(t, "v");

  const idle = await refresh(t.dir, "v", { env });
  assert.equal(idle.status, "finished");
  assert.equal(idle.skipped, true, "skipped");
  assert.equal(idle.sourceVersion, await source.version());
  assert.deepEqual([idle.rowsAdded, idle.rowsDeleted, idle.rowsComputed], [0, 0, 0]);
  assert.equal(await viewVersion(t, "v"), version, "the view's LanceDB version is unchanged");
  assert.equal(log.lines().length, 5, "no partition computed");
  const pinned = await refresh(t.dir, "v", { env, srcVersion: await source.version() });
  assert.equal(pinned.skipped, true, "the same source version, asked for explicitly: skipped");
  assert.equal(await viewVersion(t, "v"), version);
  assert.deepEqual(await read(t, "v", STATS_COLS), rows);

  // A write to a column the UDTF does not read still makes a new source version: every partition is recomputed, the rows are the same.
  await source.update({ where: "id >= 0", values: { other: 7 } });
  const again = await refresh(t.dir, "v", { env });
  assert.notEqual(again.skipped, true);
  assert.equal(again.sourceVersion, await source.version());
  assert.deepEqual(counts(again), { rowsAdded: 5, rowsDeleted: 5, partitions: { total: 5, computed: 5 } });
  assert.equal(log.lines().length, 10);
  assert.deepEqual(await read(t, "v", STATS_COLS), rows);
  assert.ok((await viewVersion(t, "v")) > version);
  assert.equal((await refresh(t.dir, "v", { env })).skipped, true);
});

test("after inserts, updates and deletes every partition is recomputed and the view's rows replaced: a partition that disappeared is gone, a new one appears; srcVersion pins an older source version", async () => {
  await using t = await tempDb();
  const source = await makeSource(t);
  await createUdtfView(t.dir, "v", { source: "src", udtf: udtfRef("langStats") });
  await refresh(t.dir, "v");
  const v1 = await source.version();
  const old = await assertLangStats(t, "v");

  await source.add(src(100, 7, "es")); // a new partition
  await source.add(src(107, 5)); // more rows in existing ones
  await source.update({ where: "id = 1", values: { text: "a b c d e f g" } });
  await source.update({ where: "id = 6", values: { lang: "it" } }); // fr -> it
  await source.delete("lang = 'de'"); // a partition disappears
  await source.delete("id = 3 OR id = 8");
  const r = await refresh(t.dir, "v", { concurrency: 2 });
  assert.equal(r.status, "finished");
  assert.notEqual(r.skipped, true);
  assert.equal(r.sourceVersion, await source.version());
  const want = await assertLangStats(t, "v");
  assert.deepEqual(want.map((w) => w.lang), ["en", "es", "fr", "it", "nl"]);
  assert.deepEqual(counts(r), { rowsAdded: 5, rowsDeleted: old.length, partitions: { total: 5, computed: 5 } });
  assert.equal(await (await t.open("v")).countRows(), 5, "the old rows are gone, not kept beside the new");

  // Every language removed but one.
  await source.delete("lang <> 'nl'");
  const one = await refresh(t.dir, "v");
  await assertLangStats(t, "v");
  assert.deepEqual(counts(one), { rowsAdded: 1, rowsDeleted: 5, partitions: { total: 1, computed: 1 } });

  // Back to the first source version.
  const back = await refresh(t.dir, "v", { srcVersion: v1 });
  assert.equal(back.sourceVersion, v1);
  assert.deepEqual(await read(t, "v", STATS_COLS), old, "the view reflects source version v1 again");
  assert.deepEqual(counts(back), { rowsAdded: old.length, rowsDeleted: 1, partitions: { total: old.length, computed: old.length } });
});

test("the view's rows are replaced atomically: a reader polling during a refresh sees the old rows or the new rows, never a mix", async () => {
  await using t = await tempDb();
  const source = await makeSource(t, 120);
  await createUdtfView(t.dir, "v", { source: "src", udtf: udtfRef("slowStats") });
  const env = { UDTF_SLOW_MS: "60" };
  await refresh(t.dir, "v", { env });
  const old = await assertBucketStats(t, "v");
  await source.update({ where: "id >= 0", values: { text: "one two" } }); // every bucket's words change
  await source.delete("bucket = 11");

  const seen = new Map<string, number>();
  let done = false;
  const reader = (async () => {
    const db = await lancedb.connect(t.dir, { readConsistencyInterval: 0 });
    const view = await db.openTable("v");
    while (!done) {
      let key: string;
      try {
        key = json(sortRows((await view.query().select(BUCKET_COLS).toArray()).map((r) => Object.fromEntries(BUCKET_COLS.map((c) => [c, (r as Row)[c]])))));
      } catch (e) {
        key = `a read failed: ${(e as Error).message}`;
      }
      seen.set(key, (seen.get(key) ?? 0) + 1);
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  let r: UdtfRefresh;
  try {
    r = await refresh(t.dir, "v", { env, concurrency: 1 });
  } finally {
    done = true;
    await reader;
  }
  assert.equal(r.status, "finished");
  const want = await assertBucketStats(t, "v");
  assert.equal(want.length, 11);
  const allowed = new Set([json(old), json(want)]);
  const mixes = [...seen.keys()].filter((k) => !allowed.has(k));
  assert.equal(mixes.length, 0, `the reader saw ${mixes.length} states that are neither the old nor the new rows, e.g. ${mixes[0]?.slice(0, 600)}`);
  assert.ok((seen.get(json(old)) ?? 0) > 0, `the reader read during the refresh (${[...seen.values()].join(", ")} reads)`);
});

test("a where filter on the source: only the matching rows reach the UDTF; a partition with no matching row has no row", async () => {
  await using t = await tempDb();
  const source = await makeSource(t);
  const where = "id >= 20 AND lang <> 'fr'";
  await createUdtfView(t.dir, "v", { source: "src", udtf: udtfRef("langStats"), where });
  const r = await refresh(t.dir, "v");
  const want = await assertLangStats(t, "v", { where });
  assert.deepEqual(want.map((w) => w.lang), ["de", "en", "it", "nl"]);
  assert.equal(r.partitions?.total, 4);
  const docs = Object.fromEntries(want.map((w) => [w.lang, w.docs]));
  assert.deepEqual(docs, { de: 16n, en: 16n, it: 16n, nl: 16n });

  await source.update({ where: "id = 25", values: { id: 5 } }); // leaves the filter
  await source.update({ where: "id = 2", values: { id: 200 } }); // enters it
  await source.add(src(100, 10));
  await refresh(t.dir, "v");
  await assertLangStats(t, "v", { where });

  // Without partitionBy the whole filtered source is one partition: __partition is null.
  await createUdtfView(t.dir, "whole", { source: "src", udtf: udtfRef("wholeTable"), where });
  await refresh(t.dir, "whole");
  const rows = await read(t, "whole", ["__partition", "docs", "words"]);
  assert.deepEqual(rows, [{ __partition: "null", ...totals(await read(t, "src", ["text"], { where })) }]);
});

test("many partitions (an int32 partitionBy) on 2 workers: each partition computed exactly once, __partition is the number as JSON; a partition's rows staged in appends of 7 rows are exact", async () => {
  await using t = await tempDb();
  const source = await makeSource(t, 240);
  const logFile = path.join(t.dir, "calls.log");
  const log = callLog(logFile);
  await createUdtfView(t.dir, "v", { source: "src", udtf: udtfRef("bucketStats") });
  const r = await refresh(t.dir, "v", { concurrency: 2, env: { UDTF_LOG: logFile } });
  const want = await assertBucketStats(t, "v");
  assert.equal(want.length, 12);
  assert.deepEqual(want.map((w) => w.__partition).sort(), Array.from({ length: 12 }, (_, i) => String(i)).sort());
  assert.deepEqual(counts(r), { rowsAdded: 12, rowsDeleted: 0, partitions: { total: 12, computed: 12 } });
  assert.deepEqual(log.partitions().sort(), Array.from({ length: 12 }, (_, i) => String(i)).sort(), "each partition computed once");
  const schema = await (await t.open("v")).schema();
  assert.equal(String(schema.fields.find((f) => f.name === "bucket")!.type), "Int32");

  // perBatch: one output row per input row, so every source row must reach its own partition exactly once.
  await createUdtfView(t.dir, "rows", { source: "src", udtf: udtfRef("perBatch") });
  const perRow = async () => {
    const want = sortRows((await read(t, "src", ["id", "lang", "text"])).map((s) => ({ __partition: JSON.stringify(s.lang), id: s.id, lang: s.lang, words: BigInt(wordCount(s.text as string | null)) })));
    assert.deepEqual(await read(t, "rows", ["__partition", "id", "lang", "words"]), want, "one row per source row, in its language's partition");
    return want;
  };
  const rr = await refresh(t.dir, "rows", { concurrency: 3, maxRowsPerFragment: 7 });
  assert.equal(rr.rowsAdded, (await perRow()).length);
  await source.delete("id < 30");
  await source.add(src(240, 20));
  const again = await refresh(t.dir, "rows", { concurrency: 3, maxRowsPerFragment: 7 });
  assert.deepEqual([again.rowsAdded, again.rowsDeleted], [(await perRow()).length, 240]);
});

/** The rows perBatch gives for the source (one per source row), with asInt64 of the id when `big`. */
async function perRowOf(t: TempDb, big = false): Promise<Row[]> {
  return sortRows((await read(t, "src", ["id", "lang", "text"])).map((s) => ({ __partition: JSON.stringify(s.lang), id: s.id, lang: s.lang, words: BigInt(wordCount(s.text as string | null)), ...(big ? { big: (s.id as bigint) * 1_000_000_007n } : {}) })));
}
const PER_ROW_COLS = ["__partition", "id", "lang", "words"];

/** The schema's metadata and that of the fields `names` (default: all), without the watermark: what a split must keep. */
async function viewMetadata(t: TempDb, name: string, names?: string[]): Promise<Record<string, Record<string, string>>> {
  const schema = await (await t.open(name)).schema();
  const fields = Object.fromEntries(schema.fields.filter((f) => names === undefined || names.includes(f.name)).map((f) => [f.name, Object.fromEntries([...f.metadata].filter(([k]) => k !== "lancet:view:watermark"))]));
  return { "(schema)": Object.fromEntries(schema.metadata), ...fields };
}

/** The backfill job of column `column` that refresh `r` ran: its planned fragments and tasks. */
async function columnJob(t: TempDb, r: UdtfRefresh, column: string): Promise<{ fragmentsPlanned: number; tasksTotal: number; rowsComputed: number }> {
  const id = r.jobs.find((j) => j.column === column)?.jobId;
  assert.ok(id !== undefined, `refresh ${r.jobId} ran a backfill of ${column}: ${json(r.jobs)}`);
  const { metrics } = await getJob(t.dir, id);
  return { fragmentsPlanned: metrics.fragmentsPlanned, tasksTotal: metrics.tasksTotal, rowsComputed: metrics.rowsComputed };
}

/** Re-layouts (splits of the view's fragments) that refresh `r` made: its `commit` events. */
const splits = async (t: TempDb, r: UdtfRefresh): Promise<number> => (await getJob(t.dir, r.jobId)).events.filter((e) => e.type === "commit").length;

test("maxRowsPerFragment bounds the view's fragments as for chunk views (a UDTF yielding one row per source row): one overwrite, then an atomic split keeping definition, bindings and watermark; the view's UDF column backfills one task per fragment", async () => {
  await using t = await tempDb();
  const source = await makeSource(t, 100);
  await createUdtfView(t.dir, "rows", { source: "src", udtf: udtfRef("perBatch"), udfs: { big: udfRef("asInt64") } });
  const created = await viewMetadata(t, "rows");
  const r = await refresh(t.dir, "rows", { concurrency: 2, maxRowsPerFragment: 7 });
  assert.equal(r.status, "finished");
  assert.equal(r.rowsAdded, 100);
  assert.equal(await (await t.open("rows")).countRows(), 100);
  const layout = await fragmentLayout(t, "rows");
  assert.ok(layout.every((f) => f.physicalRows <= 7), `maxRowsPerFragment 7, fragments: ${JSON.stringify(layout.map((f) => f.physicalRows))}`);
  assert.equal(layout.length, 15, `100 rows in fragments of at most 7: ${JSON.stringify(layout.map((f) => f.physicalRows))}`);
  assert.deepEqual(await read(t, "rows", [...PER_ROW_COLS, "big"]), await perRowOf(t, true), "one row per source row, its UDF column computed");
  const first = await read(t, "rows", PER_ROW_COLS);

  // The split kept what the view keeps in its metadata: its definition, the UDTF and UDF bindings, the watermark.
  assert.deepEqual(await viewMetadata(t, "rows", Object.keys(created).slice(1)), created);
  const described = await readView(t.dir, "rows");
  assert.equal(described.definition.udtf, udtfRef("perBatch"));
  assert.equal(described.watermark?.sourceVersion, await source.version());
  assert.deepEqual((await listViews(t.dir)).map((v) => v.name), ["rows"]);
  assert.equal(await splits(t, r), 1, "one re-layout after the overwrite");
  const job = await columnJob(t, r, "big");
  assert.equal(job.rowsComputed, 100);
  assert.equal(job.fragmentsPlanned, 15, `the backfill of big planned one fragment each: ${json(job)}`);
  assert.ok(job.tasksTotal >= 15, `the backfill of big ran a task per fragment at least: ${json(job)}`);

  // Nothing changed: skipped, nothing written (no split either: the layout is within the bound).
  const version = await viewVersion(t, "rows");
  const again = await refresh(t.dir, "rows", { concurrency: 2, maxRowsPerFragment: 7 });
  assert.equal(again.skipped, true);
  assert.equal(await viewVersion(t, "rows"), version);
  assert.deepEqual(await fragmentLayout(t, "rows"), layout);

  // After a source change the rows are replaced and split again; a bound the overwrite already meets splits nothing.
  await source.add(src(100, 30));
  const replaced = await refresh(t.dir, "rows", { concurrency: 2, maxRowsPerFragment: 7 });
  assert.deepEqual([replaced.rowsAdded, replaced.rowsDeleted], [130, 100]);
  assert.ok((await fragmentLayout(t, "rows")).every((f) => f.physicalRows <= 7));
  assert.deepEqual(await read(t, "rows", [...PER_ROW_COLS, "big"]), await perRowOf(t, true));
  const second = await read(t, "rows", PER_ROW_COLS);
  await source.delete("id >= 120");
  const wide = await refresh(t.dir, "rows", { maxRowsPerFragment: 1000 });
  assert.equal(wide.rowsAdded, 120);
  assert.deepEqual((await fragmentLayout(t, "rows")).map((f) => f.physicalRows), [120], "one fragment: within the bound, not split");
  assert.deepEqual(await read(t, "rows", [...PER_ROW_COLS, "big"]), await perRowOf(t, true));
  assert.equal(await splits(t, wide), 0, "no re-layout");
  assert.deepEqual(await viewMetadata(t, "rows", Object.keys(created).slice(1)), created);

  // Every version a reader could have read holds one refresh's rows, all of them: none (created), 100, 130 or 120.
  const sets = [[], first, second, await read(t, "rows", PER_ROW_COLS)].map(json);
  for (const { version: v } of await (await t.open("rows")).listVersions()) {
    assert.ok(sets.includes(json(await read(t, "rows", PER_ROW_COLS, { version: v }))), `version ${v} of the view holds one refresh's rows, all of them`);
  }
});

test("kill -9 between the swap and the split (udtf.before-split:kill): the view holds every new row, in one fragment; the next refresh is skipped for its rows, splits the view, then fills its UDF column", async () => {
  await using t = await tempDb();
  const source = await makeSource(t, 100);
  await createUdtfView(t.dir, "rows", { source: "src", udtf: udtfRef("perBatch"), udfs: { big: udfRef("asInt64") } });
  const created = await viewMetadata(t, "rows");

  const run = childRefresh(t, "rows", { LANCET_FAILPOINTS: "udtf.before-split:kill" }, { concurrency: 2, maxRowsPerFragment: 7 });
  const timer = setTimeout(() => run.child.kill("SIGKILL"), 60_000);
  const { signal } = await run.exited;
  clearTimeout(timer);
  assert.equal(signal, "SIGKILL", `the refresh was killed by its failpoint: ${run.stderr()}`);
  assert.deepEqual(await read(t, "rows", PER_ROW_COLS), await perRowOf(t), "every new row is in the view");
  assert.deepEqual((await fragmentLayout(t, "rows")).map((f) => f.physicalRows), [100], "one fragment: the overwrite's");
  assert.equal((await readView(t.dir, "rows")).watermark?.sourceVersion, await source.version(), "the watermark was written before the split");
  // The killed refresh's record reads as running until its heartbeat is overdue (then as failed, abandoned).
  const killed = (await listJobs(t.dir, { table: "rows" })).find((j) => j.kind === "refresh");
  assert.ok(killed !== undefined);
  for (const until = Date.now() + 30_000; (await getJob(t.dir, killed.id)).status === "running"; ) {
    assert.ok(Date.now() < until, `the killed refresh ${killed.id} still reads as running`);
    await new Promise((r) => setTimeout(r, 250));
  }

  const r = await refresh(t.dir, "rows", { concurrency: 2, maxRowsPerFragment: 7 });
  assert.equal(r.status, "finished");
  assert.equal(r.skipped, true, "the rows are current: nothing is computed again");
  assert.equal(await splits(t, r), 1, "the skipped refresh split the view");
  const layout = await fragmentLayout(t, "rows");
  assert.ok(layout.every((f) => f.physicalRows <= 7), `split by the next refresh: ${JSON.stringify(layout.map((f) => f.physicalRows))}`);
  assert.deepEqual(await read(t, "rows", [...PER_ROW_COLS, "big"]), await perRowOf(t, true));
  assert.deepEqual(await viewMetadata(t, "rows", Object.keys(created).slice(1)), created);
  const job = await columnJob(t, r, "big");
  assert.equal(job.rowsComputed, 100);
  assert.equal(job.fragmentsPlanned, layout.length);

  const version = await viewVersion(t, "rows");
  assert.equal((await refresh(t.dir, "rows", { maxRowsPerFragment: 7 })).skipped, true);
  assert.equal(await viewVersion(t, "rows"), version, "nothing left to do");
});

test("each kind of UDTF gives the same rows: an async generator of objects, arrays per batch, an Arrow table, record batches, an async function returning an array, a function returning a promise; setup() reaches ctx.state", async () => {
  await using t = await tempDb();
  await makeSource(t, 150);
  for (const name of ["langStats", "asTable", "asRecordBatches", "returnsArray", "returnsPromise", "withSetup"]) {
    await createUdtfView(t.dir, name, { source: "src", udtf: udtfRef(name) });
    const r = await refresh(t.dir, name);
    assert.equal(r.status, "finished", name);
    const want = await assertLangStats(t, name, name === "withSetup" ? { words: (w) => w * 10n } : {});
    assert.equal(r.rowsAdded, want.length, name);
  }
});

test("partitions that yield no row: computed and counted, nothing in the view for them", async () => {
  await using t = await tempDb();
  await makeSource(t);
  await createUdtfView(t.dir, "v", { source: "src", udtf: udtfRef("enOnly") });
  const r = await refresh(t.dir, "v");
  assert.deepEqual(counts(r), { rowsAdded: 1, rowsDeleted: 0, partitions: { total: 5, computed: 5 } });
  assert.deepEqual(await read(t, "v", STATS_COLS), langStatsOf(await read(t, "src", ["lang", "text"], { where: "lang = 'en'" })));
  assert.equal((await refresh(t.dir, "v")).skipped, true);
});

test("CLI: create-view --udtf, refresh --json (partitions, skipped), alter-view --udtf", async () => {
  await using t = await tempDb();
  await makeSource(t);
  const io = (): CliIo & { out: string; err: string } => {
    const o = { out: "", err: "", isTTY: false } as CliIo & { out: string; err: string };
    return Object.assign(o, { stdout: { write: (x: string) => (o.out += x) }, stderr: { write: (x: string) => (o.err += x) } });
  };
  const last = (x: string): Record<string, unknown> => JSON.parse(x.trim().split("\n").at(-1)!) as Record<string, unknown>;
  let o = io();
  assert.equal(await cli(["create-view", "--db", t.dir, "--view", "v", "--source", "src", "--udtf", udtfRef("langStatsV1")], o), 0, o.err);
  o = io();
  assert.equal(await cli(["refresh", "--db", t.dir, "--view", "v", "--json"], o), 0, o.err);
  const { status, rowsAdded, rowsDeleted, partitions } = last(o.out);
  assert.deepEqual({ status, rowsAdded, rowsDeleted, partitions }, { status: "finished", rowsAdded: 5, rowsDeleted: 0, partitions: { total: 5, computed: 5 } }, o.out);
  assert.notEqual(last(o.out).skipped, true);
  await assertLangStats(t, "v");
  o = io();
  assert.equal(await cli(["refresh", "--db", t.dir, "--view", "v", "--json"], o), 0, o.err);
  assert.equal(last(o.out).skipped, true, o.out);
  o = io();
  assert.equal(await cli(["alter-view", "--db", t.dir, "--view", "v", "--udtf", udtfRef("langStatsV2")], o), 0, o.err);
  o = io();
  assert.equal(await cli(["refresh", "--db", t.dir, "--view", "v", "--json"], o), 0, o.err);
  assert.deepEqual(last(o.out).partitions, { total: 5, computed: 5 }, o.out);
  await assertLangStats(t, "v", { words: (w) => w * 2n });
  // --max-rows-per-fragment bounds a UDTF view's fragments (one row per source row: 100 rows in fragments of at most 7).
  o = io();
  assert.equal(await cli(["create-view", "--db", t.dir, "--view", "rows", "--source", "src", "--udtf", udtfRef("perBatch")], o), 0, o.err);
  o = io();
  assert.equal(await cli(["refresh", "--db", t.dir, "--view", "rows", "--max-rows-per-fragment", "7", "--json"], o), 0, o.err);
  assert.equal(last(o.out).rowsAdded, 100, o.out);
  const layout = (await fragmentLayout(t, "rows")).map((f) => f.physicalRows);
  assert.ok(layout.length === 15 && layout.every((n) => n <= 7), `fragments: ${JSON.stringify(layout)}`);
  assert.deepEqual(await read(t, "rows", PER_ROW_COLS), await perRowOf(t));
});

test("a UDTF yielding an Arrow table built with its own bundled ESM copy of apache-arrow (import from \"apache-arrow\", as a user writes it)", async () => {
  await using t = await tempDb();
  await makeSource(t, 50);
  await createUdtfView(t.dir, "v", { source: "src", udtf: udtfRef("asTableEsm") });
  const r = await refresh(t.dir, "v");
  assert.equal(r.status, "finished");
  await assertLangStats(t, "v");
});

test("a UDF column of a UDTF view is computed from the view's own columns, for the first rows and for the replacing ones", async () => {
  await using t = await tempDb();
  const source = await makeSource(t);
  await createUdtfView(t.dir, "v", { source: "src", udtf: udtfRef("langStats"), udfs: { avg: udtfRef("avgWords") } });
  const schema = await (await t.open("v")).schema();
  assert.deepEqual(schema.fields.map((f) => f.name), ["__partition", "lang", "docs", "words", "avg"]);
  const check = async () => {
    const want = await assertLangStats(t, "v");
    const rows = await read(t, "v", ["lang", "docs", "words", "avg"]);
    assert.equal(rows.length, want.length);
    for (const r of rows) assert.equal(r.avg, Number(r.words) / Number(r.docs), `avg of ${String(r.lang)}`);
  };
  const first = await refresh(t.dir, "v");
  await check();
  assert.ok(first.rowsComputed >= 5, `rowsComputed ${first.rowsComputed}`);
  await source.update({ where: "lang = 'en'", values: { text: "a b c d e f g h" } });
  await source.add(src(100, 3, "es"));
  await refresh(t.dir, "v");
  await check();
  assert.equal(await (await t.open("v")).countRows("avg IS NULL"), 0);
  // A UDF column added to the view later is filled by the next refresh, even one skipped for its rows.
  await addColumns({ db: t.dir, table: "v" }, { avg2: udtfRef("avgWords") });
  const skipped = await refresh(t.dir, "v");
  assert.equal(skipped.skipped, true);
  assert.equal(await (await t.open("v")).countRows("avg2 IS NULL"), 0, "avg2 filled");
  for (const r of await read(t, "v", ["avg", "avg2"])) assert.equal(r.avg2, r.avg);
});

test("alterView rebinds the UDTF: a new version recomputes at the next refresh with the source unchanged; the same version again does not; other outputs are refused", async () => {
  await using t = await tempDb();
  await makeSource(t);
  const logFile = path.join(t.dir, "calls.log");
  const log = callLog(logFile);
  const env = { UDTF_LOG: logFile };
  await createUdtfView(t.dir, "v", { source: "src", udtf: udtfRef("langStatsV1") });
  await refresh(t.dir, "v", { env });
  const old = await assertLangStats(t, "v");

  await alterUdtf(t.dir, "v", udtfRef("langStatsV2"));
  const r = await refresh(t.dir, "v", { env });
  assert.notEqual(r.skipped, true, "a new UDTF version is not skipped");
  await assertLangStats(t, "v", { words: (w) => w * 2n });
  assert.deepEqual(counts(r), { rowsAdded: 5, rowsDeleted: old.length, partitions: { total: 5, computed: 5 } });
  assert.equal(log.lines().length, 10);

  const idle = await refresh(t.dir, "v", { env });
  assert.equal(idle.skipped, true);
  await alterUdtf(t.dir, "v", udtfRef("langStatsV2"));
  const same = await refresh(t.dir, "v", { env });
  assert.equal(same.skipped, true, "rebinding the same version recomputes nothing");
  assert.equal(log.lines().length, 10);

  const version = await viewVersion(t, "v");
  await assert.rejects(alterUdtf(t.dir, "v", udtfRef("wholeTable")), (e: unknown) => {
    assert.ok(isBackfillError(e), String(e));
    assert.match((e as Error).message, /output/, "says the outputs differ");
    return true;
  });
  assert.equal((await refresh(t.dir, "v", { env })).skipped, true, "a refused rebind changes nothing");
  assert.equal(await viewVersion(t, "v"), version);
  await assertLangStats(t, "v", { words: (w) => w * 2n });

  // Back to version "1": recomputed.
  await alterUdtf(t.dir, "v", udtfRef("langStatsV1"));
  assert.notEqual((await refresh(t.dir, "v", { env })).skipped, true);
  await assertLangStats(t, "v");
});

test("errorPolicy \"skip\": a failing partition's output is dropped, the others are written", async () => {
  await using t = await tempDb();
  await makeSource(t);
  await createUdtfView(t.dir, "v", { source: "src", udtf: udtfRef("skipsFr") });
  const r = await refresh(t.dir, "v");
  assert.equal(r.status, "finished");
  const want = langStatsOf(await read(t, "src", ["lang", "text"])).filter((w) => w.lang !== "fr");
  assert.deepEqual(await read(t, "v", STATS_COLS), want);
  assert.equal(r.rowsAdded, 4);
  const errors = await listErrors(t.dir);
  assert.ok(errors.some((e) => /no French today/.test(e.message)), `the skipped partition's error is recorded: ${json(errors.map((e) => [e.table, e.message]))}`);
});

test("a UDTF that throws (errorPolicy \"fail\", the default) fails the refresh naming the partition; the view keeps its previous rows", async () => {
  await using t = await tempDb();
  const source = await makeSource(t);
  await createUdtfView(t.dir, "v", { source: "src", udtf: udtfRef("langStats") });
  await refresh(t.dir, "v");
  const old = await assertLangStats(t, "v");
  await source.add(src(100, 5));
  await alterUdtf(t.dir, "v", udtfRef("failsFr"));
  const version = await viewVersion(t, "v");
  await assert.rejects(refresh(t.dir, "v"), (e: unknown) => {
    assert.ok(isBackfillError(e, "UDF_FAILED"), String(e));
    assert.match((e as Error).message, /no French today/);
    assert.match((e as Error).message, /\bfr\b/, "names the partition");
    return true;
  });
  assert.deepEqual(await read(t, "v", STATS_COLS), old);
  assert.equal(await viewVersion(t, "v"), version, "nothing written to the view");
  await alterUdtf(t.dir, "v", udtfRef("langStatsV1"));
  await refresh(t.dir, "v");
  await assertLangStats(t, "v");
});

test("two refreshes of one UDTF view at once: one runs, the other is refused with TABLE_BUSY; the view is exact", async () => {
  await using t = await tempDb();
  await makeSource(t, 60);
  await createUdtfView(t.dir, "v", { source: "src", udtf: udtfRef("slowStats") });
  const results = await Promise.allSettled([refresh(t.dir, "v", { env: { UDTF_SLOW_MS: "100" } }), refresh(t.dir, "v", { env: { UDTF_SLOW_MS: "100" } })]);
  const ok = results.filter((r) => r.status === "fulfilled");
  const refused = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
  assert.equal(ok.length, 1, json(results.map((r) => (r.status === "rejected" ? String(r.reason) : r.status))));
  assert.ok(isBackfillError(refused[0]!.reason, "TABLE_BUSY"), String(refused[0]!.reason));
  await assertBucketStats(t, "v");
});

test("chained: a UDTF view over a plain view, and a plain view over the UDTF view, stay exact through changes", async () => {
  await using t = await tempDb();
  const source = await makeSource(t);
  await createView(t.dir, "pv", { source: "src", where: "id >= 10", select: ["id", "lang", "text"] });
  await createUdtfView(t.dir, "stats", { source: "pv", udtf: udtfRef("langStats") });
  await createView(t.dir, "big", { source: "stats", where: "words >= 25", select: ["lang", "docs", "words"] });
  const check = async () => {
    const want = langStatsOf(await read(t, "src", ["lang", "text"], { where: "id >= 10" }));
    assert.deepEqual(await read(t, "stats", STATS_COLS), want, "stats: langStats of pv");
    const big = want.filter((w) => (w.words as bigint) >= 25n).map(({ lang, docs, words }) => ({ lang, docs, words }));
    assert.deepEqual(await read(t, "big", ["lang", "docs", "words"]), sortRows(big), "big: the stats rows with words >= 25");
    return big;
  };
  for (const v of ["pv", "stats", "big"]) await refresh(t.dir, v);
  const first = await check();
  assert.ok(first.length > 0 && first.length < 5, json(first));
  await source.update({ where: "lang = 'de'", values: { text: "one two three four five six seven eight nine ten" } });
  await source.delete("lang = 'en'");
  await source.add(src(100, 20, "es"));
  for (const v of ["pv", "stats", "big"]) await refresh(t.dir, v);
  await check();
  for (const v of ["pv", "stats", "big"]) await refresh(t.dir, v);
  await check();
});

test("errorPolicy { retry: 3 }: a partition that fails on its first attempt is retried and its rows are exact", async () => {
  await using t = await tempDb();
  await makeSource(t);
  await createUdtfView(t.dir, "v", { source: "src", udtf: udtfRef("flakyOnce") });
  const r = await refresh(t.dir, "v", { concurrency: 2 });
  assert.equal(r.status, "finished");
  await assertLangStats(t, "v");
  assert.equal(r.rowsAdded, 5);
});

test("partition values: null is a partition of its own (__partition \"null\"), a value with a quote is filtered correctly", async () => {
  await using t = await tempDb();
  const source = await makeSource(t, 40);
  await source.update({ where: "id < 4", values: { lang: "o'brien" } });
  await source.add([{ id: 100n, lang: null, text: "a b c", bucket: 0, other: 0n }, { id: 101n, lang: null, text: null, bucket: 1, other: 0n }] as never);
  await createUdtfView(t.dir, "v", { source: "src", udtf: udtfRef("langStats") });
  await createUdtfView(t.dir, "whole", { source: "src", udtf: udtfRef("wholeTable") });
  await refresh(t.dir, "v");
  const rows = await read(t, "v", STATS_COLS);
  const byPartition = Object.fromEntries(rows.map((r) => [r.__partition as string, r]));
  assert.deepEqual(byPartition["null"], { __partition: "null", lang: null, docs: 2n, words: 3n }, json(rows));
  assert.deepEqual(byPartition[JSON.stringify("o'brien")], { __partition: JSON.stringify("o'brien"), lang: "o'brien", ...totals(await read(t, "src", ["text"], { where: "id < 4" })) }, json(rows));
  assert.equal(rows.length, 7);
  assert.equal(rows.reduce((n, r) => n + (r.docs as bigint), 0n), 42n, "every source row in exactly one partition");
  await refresh(t.dir, "whole");
  assert.deepEqual(await read(t, "whole", ["__partition", "docs", "words"]), [{ __partition: "null", ...totals(await read(t, "src", ["text"])) }]);
});

test("a source with no rows left (or a where matching none) empties the view; without partitionBy it is one partition of no rows", async () => {
  await using t = await tempDb();
  const source = await makeSource(t, 40);
  await createUdtfView(t.dir, "v", { source: "src", udtf: udtfRef("langStats") });
  await createUdtfView(t.dir, "whole", { source: "src", udtf: udtfRef("wholeTable") });
  await createUdtfView(t.dir, "none", { source: "src", udtf: udtfRef("langStats"), where: "id < 0" });
  await refresh(t.dir, "v");
  await refresh(t.dir, "whole");
  const none = await refresh(t.dir, "none");
  assert.equal(none.status, "finished");
  assert.deepEqual([none.rowsAdded, none.partitions?.total], [0, 0]);
  assert.equal(await (await t.open("none")).countRows(), 0);

  await source.delete("id >= 0");
  const empty = await refresh(t.dir, "v");
  assert.deepEqual([empty.rowsAdded, empty.rowsDeleted, empty.partitions?.total], [0, 5, 0]);
  assert.equal(await (await t.open("v")).countRows(), 0);
  await refresh(t.dir, "whole");
  assert.deepEqual(await read(t, "whole", ["__partition", "docs", "words"]), [{ __partition: "null", docs: 0n, words: 0n }]);
});

test("a worker killed right after it staged its 2nd partition (LANCET_FAILPOINTS=udtf.after-partition:kill@2) is retried on a fresh process: every partition's row exactly once", async () => {
  await using t = await tempDb();
  await makeSource(t, 150);
  const logFile = path.join(t.dir, "calls.log");
  const log = callLog(logFile);
  await createUdtfView(t.dir, "v", { source: "src", udtf: udtfRef("langStats") });
  const r = await refresh(t.dir, "v", { concurrency: 1, env: { LANCET_FAILPOINTS: "udtf.after-partition:kill@2", UDTF_LOG: logFile } });
  assert.equal(r.status, "finished");
  const want = await assertLangStats(t, "v");
  assert.deepEqual(counts(r), { rowsAdded: want.length, rowsDeleted: 0, partitions: { total: 5, computed: 5 } }, "rows staged by a killed worker are not counted twice");
  const lines = log.lines();
  const pids = new Set(lines.map(([pid]) => pid));
  assert.ok(pids.size >= 2, `worker processes: ${[...pids].join(", ")} — the kill happened and a fresh worker went on`);
  assert.deepEqual([...new Set(lines.map(([, p]) => p))].sort(), ['"de"', '"en"', '"fr"', '"it"', '"nl"'], "every partition computed");
  assert.ok(lines.length > 5, `${lines.length} computations of 5 partitions: the partition of the killed worker was computed again`);
  assert.equal((await refresh(t.dir, "v")).skipped, true);
});

/** Runs refreshView(view) in a child process with `env`; returns it and its stderr. */
function childRefresh(t: TempDb, view: string, env: Record<string, string>, options: Record<string, unknown> = {}) {
  const script = `const { refreshView } = await import(${JSON.stringify(path.join(REPO, "src/index.ts"))});
await refreshView(${JSON.stringify(t.dir)}, ${JSON.stringify(view)}, ${JSON.stringify(options)});`;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], { env: { ...process.env, ...env }, stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  let exitedAt = 0;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.on("exit", (code, signal) => ((exitedAt = Date.now()), r({ code, signal }))));
  return { child, exited, stderr: () => stderr, hasExited: () => exitedAt > 0 };
}

test("kill -9 of the coordinator after every partition was staged, before the swap (udtf.before-swap:kill): the view keeps its old rows; a re-run recomputes nothing and gives the new rows exactly", async () => {
  await using t = await tempDb();
  const source = await makeSource(t);
  const logFile = path.join(t.dir, "calls.log");
  const log = callLog(logFile);
  await createUdtfView(t.dir, "v", { source: "src", udtf: udtfRef("langStats") });
  await refresh(t.dir, "v", { env: { UDTF_LOG: logFile } });
  const old = await assertLangStats(t, "v");
  const oldVersion = await viewVersion(t, "v");
  await source.add(src(100, 9, "es"));
  await source.delete("lang = 'it'");
  await source.update({ where: "id = 0", values: { text: "x y z" } });

  const run = childRefresh(t, "v", { LANCET_FAILPOINTS: "udtf.before-swap:kill", UDTF_LOG: logFile }, { concurrency: 2 });
  const timer = setTimeout(() => run.child.kill("SIGKILL"), 60_000);
  const { signal } = await run.exited;
  clearTimeout(timer);
  assert.equal(signal, "SIGKILL", `the refresh was killed by its failpoint: ${run.stderr()}`);
  const staged = log.lines().slice(5);
  assert.deepEqual(staged.map(([, p]) => p).sort(), ['"de"', '"en"', '"es"', '"fr"', '"nl"'], "the killed refresh computed every partition once");
  assert.deepEqual(await read(t, "v", STATS_COLS), old, "the view still holds its old rows: nothing of the killed refresh is visible");

  const r = await refresh(t.dir, "v", { env: { UDTF_LOG: logFile } });
  assert.equal(r.status, "finished");
  assert.equal(r.sourceVersion, await source.version());
  assert.equal(log.lines().length, 10, `the re-run recomputed nothing: ${json(log.lines().slice(10))}`);
  assert.deepEqual(counts(r), { rowsAdded: 5, rowsDeleted: old.length, partitions: { total: 5, computed: 0 } });
  await assertLangStats(t, "v");
  assert.ok((await viewVersion(t, "v")) > oldVersion);
  assert.equal((await refresh(t.dir, "v")).skipped, true);
});

test("kill -9 of a refresh's coordinator mid-way (a real process): a re-run for the same source version computes only the partitions not yet checkpointed, and the view is exact", async () => {
  await using t = await tempDb();
  await makeSource(t, 240);
  const logFile = path.join(t.dir, "calls.log");
  const log = callLog(logFile);
  await createUdtfView(t.dir, "v", { source: "src", udtf: udtfRef("slowStats") });
  const run = childRefresh(t, "v", { UDTF_LOG: logFile, UDTF_SLOW_MS: "150" }, { concurrency: 1 });
  // Kill it once 5 of its 12 partitions were computed.
  for (let i = 0; i < 1500 && !run.hasExited() && log.lines().length < 5; i++) await new Promise((r) => setTimeout(r, 20));
  run.child.kill("SIGKILL");
  const { signal } = await run.exited;
  assert.equal(signal, "SIGKILL", `the refresh was killed before it finished (${log.lines().length} partitions computed): ${run.stderr()}`);
  assert.equal(await (await t.open("v")).countRows(), 0, "nothing of the killed refresh is visible");
  // Let the killed coordinator's orphaned workers (if any) notice and stop before counting.
  await new Promise((r) => setTimeout(r, 500));
  const before = new Set(log.partitions());
  assert.ok(before.size >= 5 && before.size < 12, `${before.size} partitions computed before the kill`);

  const linesBefore = log.lines().length;
  const r = await refresh(t.dir, "v", { env: { UDTF_LOG: logFile, UDTF_SLOW_MS: "0" } });
  assert.equal(r.status, "finished");
  await assertBucketStats(t, "v");
  const rerun = log.lines().slice(linesBefore).map(([, p]) => p);
  assert.equal(rerun.length, r.partitions?.computed, "partitions.computed counts the partitions the re-run computed");
  const missing = Array.from({ length: 12 }, (_, i) => String(i)).filter((p) => !before.has(p));
  assert.ok(r.partitions !== undefined && r.partitions.total === 12, json(r.partitions));
  assert.ok(r.partitions!.computed <= missing.length + 1, `the re-run computed ${r.partitions!.computed} partitions; ${missing.length} had not been computed before the kill (at most one more may have been computed but not checkpointed)`);
  for (const p of missing) assert.ok(rerun.includes(p), `partition ${p} computed by the re-run`);
  assert.equal(r.rowsAdded, 12);
});

test("kill -9 before the swap, then the source changes: the re-run recomputes every partition for the new version and none of the stale staged rows reach the view", async () => {
  await using t = await tempDb();
  const source = await makeSource(t);
  const logFile = path.join(t.dir, "calls.log");
  const log = callLog(logFile);
  await createUdtfView(t.dir, "v", { source: "src", udtf: udtfRef("langStats") });
  const run = childRefresh(t, "v", { LANCET_FAILPOINTS: "udtf.before-swap:kill", UDTF_LOG: logFile });
  const timer = setTimeout(() => run.child.kill("SIGKILL"), 60_000);
  const { signal } = await run.exited;
  clearTimeout(timer);
  assert.equal(signal, "SIGKILL", `the refresh was killed by its failpoint: ${run.stderr()}`);
  assert.equal(log.lines().length, 5);
  await source.update({ where: "lang = 'en'", values: { text: "changed text" } });
  await source.delete("lang = 'nl'");
  const r = await refresh(t.dir, "v", { env: { UDTF_LOG: logFile } });
  assert.deepEqual(counts(r), { rowsAdded: 4, rowsDeleted: 0, partitions: { total: 4, computed: 4 } });
  assert.equal(log.lines().length, 9);
  await assertLangStats(t, "v");
});

test("kill -9 of the coordinator in the middle of a partition whose rows were partly staged (maxRowsPerFragment 3): the re-run stages that partition again from scratch, one view row per source row", async () => {
  await using t = await tempDb();
  await makeSource(t, 120);
  const logFile = path.join(t.dir, "calls.log");
  const log = callLog(logFile);
  await createUdtfView(t.dir, "v", { source: "src", udtf: udtfRef("slowRows") });
  const run = childRefresh(t, "v", { UDTF_LOG: logFile, UDTF_SLOW_MS: "15" }, { concurrency: 1, maxRowsPerFragment: 3 });
  // 10 rows per bucket, 15 ms each: kill 80 ms into the 3rd partition, after 1 or 2 flushes of 3 rows.
  for (let i = 0; i < 1500 && !run.hasExited() && log.lines().length < 3; i++) await new Promise((r) => setTimeout(r, 10));
  await new Promise((r) => setTimeout(r, 80));
  run.child.kill("SIGKILL");
  const { signal } = await run.exited;
  assert.equal(signal, "SIGKILL", `the refresh was killed before it finished (${log.lines().length} partitions started): ${run.stderr()}`);
  await new Promise((r) => setTimeout(r, 300));
  const r = await refresh(t.dir, "v", { env: { UDTF_SLOW_MS: "0" } });
  assert.equal(r.status, "finished");
  const want = sortRows((await read(t, "src", ["id", "bucket", "text"])).map((s) => ({ __partition: JSON.stringify(s.bucket), id: s.id, bucket: s.bucket, words: BigInt(wordCount(s.text as string | null)) })));
  const got = await read(t, "v", ["__partition", "id", "bucket", "words"]);
  assert.equal(got.length, 120, "no row twice, none missing");
  assert.deepEqual(got, want);
  assert.ok((r.partitions?.computed ?? 12) < 12, `the re-run computed ${r.partitions?.computed} of 12 partitions`);
});

test("bad UDTF or options at createView: each a clear error code, nothing left behind", async () => {
  await using t = await tempDb();
  await makeSource(t, 10);
  const before = (await t.db.tableNames()).sort();
  const cases: [string, UdtfViewOptions, string, RegExp][] = [
    ["no outputs", { source: "src", udtf: udtfRef("noOutputs") }, "UDF_INVALID", /outputs/],
    ["unknown output type", { source: "src", udtf: udtfRef("unknownOutputType") }, "UDF_INVALID", /float65/],
    ["kind missing", { source: "src", udtf: udtfRef("noKind") }, "UDF_INVALID", /udtf/],
    ["a scalar UDF", { source: "src", udtf: udfRef("doubled") }, "UDF_INVALID", /udtf/],
    ["a chunker", { source: "src", udtf: udfRef("words", "chunkers.ts") }, "UDF_INVALID", /udtf/],
    ["unknown export", { source: "src", udtf: udtfRef("nope") }, "", /nope/],
    ["input not a source column", { source: "src", udtf: udtfRef("missingInput") }, "INPUT_COLUMN_NOT_FOUND", /nope/],
    ["partitionBy not a source column", { source: "src", udtf: udtfRef("missingPartitionBy") }, "INPUT_COLUMN_NOT_FOUND", /nope/],
    ["an output named __partition", { source: "src", udtf: udtfRef("partitionOutput") }, "UDF_INVALID", /__partition/],
    ["UDF input not a view column", { source: "src", udtf: udtfRef("langStats"), udfs: { dbl: udfRef("doubled") } }, "INPUT_COLUMN_NOT_FOUND", /x/],
    ["UDF column collides with an output", { source: "src", udtf: udtfRef("langStats"), udfs: { words: udtfRef("avgWords") } }, "COLUMN_EXISTS", /words/],
  ];
  for (const [label, options, code, message] of cases) {
    await assert.rejects(createUdtfView(t.dir, "v", options), (e: unknown) => {
      assert.ok(code === "" ? isBackfillError(e) : isBackfillError(e, code as never), `${label}: ${String(e)}`);
      assert.match((e as Error).message, message, label);
      return true;
    });
    assert.deepEqual((await t.db.tableNames()).sort(), before, `${label}: no table written`);
    assert.ok(!existsSync(path.join(t.dir, "_lancet", "v")), `${label}: no Lancet store written`);
  }
  // The name is still free.
  await createUdtfView(t.dir, "v", { source: "src", udtf: udtfRef("langStats") });
  assert.equal((await refresh(t.dir, "v")).status, "finished");
  await assertLangStats(t, "v");
});

test("an output row missing a field or of the wrong type fails the refresh with UDF_OUTPUT_TYPE naming the view, the partition and the field; the view keeps its previous rows", async () => {
  await using t = await tempDb();
  const source = await makeSource(t);
  for (const [view, udtf, partition, field] of [
    ["missingfield", "bad", "fr", "words"],
    ["wrongtype", "badType", "de", "words"],
  ] as const) {
    // A first refresh of a view bound to the bad UDTF: fails, the view stays empty.
    await createUdtfView(t.dir, `${view}_new`, { source: "src", udtf: udtfRef(udtf) });
    const check = (e: unknown, name: string) => {
      assert.ok(isBackfillError(e, "UDF_OUTPUT_TYPE"), `${name}: ${String(e)}`);
      const m = (e as Error).message;
      assert.ok(m.includes(name), `names the view ${name}: ${m}`);
      assert.ok(new RegExp(`\\b${partition}\\b`).test(m), `names the partition ${partition}: ${m}`);
      assert.ok(new RegExp(`\\b${field}\\b`).test(m), `names the field ${field}: ${m}`);
      return true;
    };
    await assert.rejects(refresh(t.dir, `${view}_new`, { concurrency: 2 }), (e) => check(e, `${view}_new`));
    assert.equal(await (await t.open(`${view}_new`)).countRows(), 0, `${view}_new: no row of the failed refresh`);
    // Run again for the same target: the failed partition was not marked done, so it fails again (the others' staged rows are not swapped in alone).
    await assert.rejects(refresh(t.dir, `${view}_new`), (e) => check(e, `${view}_new`));
    assert.equal(await (await t.open(`${view}_new`)).countRows(), 0, `${view}_new: still no row`);

    // A view with rows, rebound to the bad UDTF: the failed refresh leaves its rows as they were.
    await createUdtfView(t.dir, view, { source: "src", udtf: udtfRef("langStats") });
    await refresh(t.dir, view);
    const old = await assertLangStats(t, view);
    await source.add(src(1000, 3));
    await alterUdtf(t.dir, view, udtfRef(udtf));
    await assert.rejects(refresh(t.dir, view, { concurrency: 2 }), (e) => check(e, view));
    assert.deepEqual(await read(t, view, STATS_COLS), old, `${view}: the previous rows, unchanged`);
    // Rebound to a good UDTF, the view refreshes to exactly the right rows.
    await alterUdtf(t.dir, view, udtfRef("langStatsV2"));
    assert.equal((await refresh(t.dir, view)).status, "finished");
    await assertLangStats(t, view, { words: (w) => w * 2n });
  }
});
