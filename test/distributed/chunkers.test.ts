/**
 * Chunk views in distributed mode: the expansion job's work items run on real `lancet worker`
 * processes through a BullMQ queue on Redis (LANCET_TEST_REDIS_URL, else a redis-server started here
 * on a free loopback port), each test on a queue of its own. Every check compares the view with the
 * children recomputed here from the source (the fixture's `splitWords` is what its chunkers yield),
 * ordered by (__source_row_id, __child_index): after the first refresh, after inserts, updates of the
 * chunker's input and deletes, and after one of two workers is killed (SIGKILL) mid-refresh. Also a
 * UDTF view, and a UDF with a blob input (lazy handles), on queue workers.
 */
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import * as path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { arrow } from "../../src/arrow.ts";
import type { ArrowNs } from "../../src/arrow.ts";
import { addColumns, backfill, createView, refreshView, type RefreshViewOptions } from "../../src/index.ts";
import { lancedb } from "../../src/arrow.ts";
import { createHash } from "node:crypto";
import { pattern } from "../fixtures/blobs.ts";
import { splitWords } from "../fixtures/chunkers.ts";
import { tempDb, udfRef, type TempDb } from "../helpers.ts";
import { startLancetWorker, type WorkerProc } from "../lancet-worker.ts";
import { RedisServer, skipRedis } from "../redis.ts";

const STABLE = { storageOptions: { new_table_enable_stable_row_ids: "true" } } as never;
const chunkerRef = (name: string): string => udfRef(name, "chunkers.ts");
/** Fast stall detection: a dead worker's task runs elsewhere within about 2.5 s. */
const STALL = ["--lock-duration-ms", "2000", "--stalled-interval-ms", "500"];

/**
 * Where the tests get Redis: LANCET_TEST_REDIS_URL, else a redis-server of their own. Without either
 * they skip, except in CI (CI set), where a failing test says what is missing instead.
 */
function redisSkip(): string | false {
  if (process.env.LANCET_TEST_REDIS_URL || !skipRedis) return false;
  if (process.env.CI) {
    test("Redis is available for the distributed chunk-view tests (CI is set)", () => {
      throw new Error(`${skipRedis}, and LANCET_TEST_REDIS_URL is not set: the distributed chunk-view tests cannot run`);
    });
  }
  return `${skipRedis}, and LANCET_TEST_REDIS_URL is not set`;
}

const workers = new Set<WorkerProc>();

/** Starts `lancet worker` on `queue` as a separate process and waits until it takes tasks. */
const startWorker = (url: string, queue: string): Promise<WorkerProc> => startLancetWorker(url, workers, { args: ["--queue", queue, ...STALL] });

/** The text of source row i: i % 4 words ("" — no words — every 4th row), null every 11th row from 5. */
const textOf = (i: number): string | null => (i % 11 === 5 ? null : Array.from({ length: i % 4 }, (_, k) => `w${i}_${k}`).join(" "));

/** Source rows id start..start+n-1: id int64, s utf8 (textOf), other int64 (neither selected nor an input). */
function src(start: number, n: number): ArrowNs.Table {
  const ids = Array.from({ length: n }, (_, i) => start + i);
  return new arrow.Table({
    id: arrow.vectorFromArray(ids.map(BigInt), new arrow.Int64()),
    s: arrow.vectorFromArray(ids.map(textOf), new arrow.Utf8()),
    other: arrow.vectorFromArray(ids.map(() => 0n), new arrow.Int64()),
  });
}

type Row = Record<string, unknown>;
const cmp = (a: unknown, b: unknown): number => (a === b ? 0 : (a as bigint | number) < (b as bigint | number) ? -1 : 1);

/**
 * Asserts chunk view `v` holds exactly the words of every source row, inheriting `id`: one child per
 * word, __child_index = its position, none missing, none duplicated, none of a parent gone.
 */
async function assertExact(t: TempDb, what: string): Promise<number> {
  const ps = (await (await t.open("src")).query().withRowId().select(["id", "s"]).toArray()) as Row[];
  const want = ps
    .map((p) => ({ _rowid: p._rowid as bigint, id: p.id, s: p.s as string | null }))
    .sort((a, b) => cmp(a._rowid, b._rowid))
    .flatMap((p) => splitWords(p.s).map((w, i) => ({ __source_row_id: p._rowid, __child_index: i, id: p.id, word: w.word, pos: w.pos })));
  const cols = ["__source_row_id", "__child_index", "id", "word", "pos"];
  const got = ((await (await t.open("v")).query().select(cols).toArray()) as Row[])
    .map((r) => Object.fromEntries(cols.map((c) => [c, r[c]])))
    .sort((a, b) => cmp(a.__source_row_id, b.__source_row_id) || cmp(a.__child_index, b.__child_index));
  assert.equal(got.length, want.length, `${what}: the view has ${got.length} children, the source's words are ${want.length}`);
  assert.deepEqual(got, want, `${what}: the view's children are exactly the words of its source rows`);
  return want.length;
}

/** Lines of the chunkers' CHUNK_LOG ("<pid> <input>"): the parents expanded, by which process. */
function logLines(file: string): string[] {
  return existsSync(file) ? readFileSync(file, "utf8").split("\n").filter(Boolean) : [];
}

describe("chunk views on BullMQ/Redis workers", { skip: redisSkip() }, () => {
  let redis: RedisServer | undefined;
  let url = process.env.LANCET_TEST_REDIS_URL ?? "";
  before(async () => {
    if (!url) {
      redis = await RedisServer.start();
      url = redis.url;
    }
  });
  // A failed test must not leave its workers running.
  afterEach(() => Promise.all([...workers].map((w) => w.stop())));
  after(async () => {
    await Promise.all([...workers].map((w) => w.stop()));
    await redis?.stop();
  });

  test("two worker processes: exact children after the first refresh, then after an insert, an update of the input and a delete", async () => {
    await using t = await tempDb();
    const queue = `chunk-${randomUUID().slice(0, 8)}`;
    const source = await t.db.createTable("src", src(0, 300), STABLE);
    await createView(t.dir, "v", { source: "src", chunker: chunkerRef("words"), select: ["id"] });
    const ws = await Promise.all([startWorker(url, queue), startWorker(url, queue)]);
    const log = path.join(t.dir, "chunk.log");
    const opts: RefreshViewOptions = { executor: { redis: url, queue }, concurrency: 2, sourceTaskSize: 16, maxRowsPerFragment: 64, env: { CHUNK_LOG: log } };

    const first = await refreshView(t.dir, "v", opts);
    assert.equal(first.status, "finished");
    const n0 = await assertExact(t, "after the first refresh");
    assert.equal(first.rowsAdded, n0);
    assert.deepEqual(first.parents, { added: 300, deleted: 0, updated: 0 });
    // Every parent expanded once, and the 19 work items were spread over both workers' processes.
    const lines = logLines(log);
    assert.equal(lines.length, 300);
    assert.ok(new Set(lines.map((l) => l.split(" ")[0])).size >= 2, `work items ran in ${new Set(lines.map((l) => l.split(" ")[0])).size} process(es)`);

    // Insert 40 rows (ids 300..339).
    await source.add(src(300, 40) as never);
    const ins = await refreshView(t.dir, "v", opts);
    assert.equal(ins.status, "finished");
    const n1 = await assertExact(t, "after the insert");
    assert.deepEqual(ins.parents, { added: 40, deleted: 0, updated: 0 });
    assert.equal(ins.rowsAdded, n1 - n0);
    assert.equal(ins.rowsDeleted, 0);

    // Update the chunker's input of 30 rows (ids 10..39: each gets 5 words now).
    await source.update({ where: "id >= 10 AND id < 40", values: { s: "a b c d e" } });
    const before = (await (await t.open("v")).countRows("id >= 10 AND id < 40"));
    const upd = await refreshView(t.dir, "v", opts);
    assert.equal(upd.status, "finished");
    const n2 = await assertExact(t, "after the update of the input");
    assert.deepEqual(upd.parents, { added: 0, deleted: 0, updated: 30 });
    assert.equal(upd.rowsDeleted, before);
    assert.equal(upd.rowsAdded, 30 * 5);
    assert.equal(n2, n1 - before + 150);

    // Delete 50 rows (ids 100..149); a write to an unrelated column of others expands nothing.
    await source.delete("id >= 100 AND id < 150");
    await source.update({ where: "id >= 200 AND id < 210", values: { other: "1" } });
    const gone = await (await t.open("v")).countRows("id >= 100 AND id < 150");
    const del = await refreshView(t.dir, "v", opts);
    assert.equal(del.status, "finished");
    const n3 = await assertExact(t, "after the delete");
    assert.deepEqual(del.parents, { added: 0, deleted: 50, updated: 0 });
    assert.equal(del.rowsDeleted, gone);
    assert.equal(del.rowsAdded, 0);
    assert.equal(n3, n2 - gone);
    // Nothing changed: nothing expanded.
    const linesBefore = logLines(log).length;
    const idle = await refreshView(t.dir, "v", opts);
    assert.deepEqual([idle.rowsAdded, idle.rowsDeleted, idle.parents], [0, 0, { added: 0, deleted: 0, updated: 0 }]);
    assert.equal(logLines(log).length, linesBefore);
    await Promise.all(ws.map((w) => w.stop()));
  });

  test("a worker killed (SIGKILL) mid-refresh while another runs: the refresh finishes (or a re-run does) with exactly the right children", async (ctx) => {
    await using t = await tempDb();
    const queue = `chunk-${randomUUID().slice(0, 8)}`;
    const source = await t.db.createTable("src", src(0, 600), STABLE);
    await createView(t.dir, "v", { source: "src", chunker: chunkerRef("slowWords"), select: ["id"] });
    const victim = await startWorker(url, queue);
    const survivor = await startWorker(url, queue);
    const log = path.join(t.dir, "chunk.log");
    // Small appends (every 8 children): a killed item has left some of its children in the view.
    const opts: RefreshViewOptions = { executor: { redis: url, queue }, concurrency: 2, sourceTaskSize: 40, maxRowsPerFragment: 8, env: { CHUNK_LOG: log } };
    const running = refreshView(t.dir, "v", opts).then(
      (r) => ({ ok: true as const, r }),
      (e: unknown) => ({ ok: false as const, e }),
    );
    // Wait until both workers' processes are expanding parents, then kill the first worker.
    const deadline = Date.now() + 60_000;
    const pids = (): Set<string> => new Set(logLines(log).map((l) => l.split(" ")[0]!));
    while ((pids().size < 2 || logLines(log).length < 120) && Date.now() < deadline) await sleep(20);
    assert.ok(pids().size >= 2 && logLines(log).length >= 120, `both workers expanding parents before the kill (${logLines(log).length} parent(s) by ${pids().size} process(es))`);
    assert.ok(logLines(log).length < 600, "the kill comes before the expansion is over");
    await victim.kill9();
    const outcome = await running;
    ctx.diagnostic(`refresh ${outcome.ok ? `finished (${outcome.r.status})` : `failed: ${String((outcome.e as Error)?.message)}`}; parents expanded ${logLines(log).length} time(s) for 600 parents`);
    if (outcome.ok) {
      assert.equal(outcome.r.status, "finished");
      await assertExact(t, "after the refresh during which a worker was killed");
      assert.equal(outcome.r.parents?.added, 600);
    } else {
      // A failed refresh is acceptable only if a re-run (on the surviving worker) converges.
      const again = await refreshView(t.dir, "v", opts);
      assert.equal(again.status, "finished", `re-run after a failed refresh (${String((outcome.e as Error)?.message)})`);
      await assertExact(t, "after a re-run of the refresh during which a worker was killed");
    }
    // The dead worker's task process is gone too: it cannot append children behind the survivor's back.
    await sleep(1000);
    const n = await assertExact(t, "a second later (nothing appended by a leftover process of the killed worker)");
    // A later refresh with nothing changed does nothing, and after more changes it is still exact.
    const idle = await refreshView(t.dir, "v", opts);
    assert.deepEqual([idle.rowsAdded, idle.rowsDeleted], [0, 0]);
    await source.add(src(600, 20) as never);
    await source.delete("id < 20");
    const next = await refreshView(t.dir, "v", opts);
    assert.equal(next.status, "finished");
    assert.deepEqual(next.parents, { added: 20, deleted: 20, updated: 0 });
    assert.ok(n > 0);
    await assertExact(t, "after changes following the kill");
    await survivor.stop();
  });

  test("a UDTF view, and a UDF reading a blob input through lazy handles, run on queue workers too", async () => {
    await using t = await tempDb();
    const queue = `udtf-${randomUUID().slice(0, 8)}`;
    const w = await startWorker(url, queue);
    const opts: RefreshViewOptions = { executor: { redis: url, queue }, concurrency: 2 };
    const langs = ["en", "fr", "de"];
    const rows = Array.from({ length: 60 }, (_, i) => ({ id: BigInt(i), lang: langs[i % 3]!, text: Array.from({ length: i % 5 }, (_, k) => `w${k}`).join(" ") }));
    await t.db.createTable("docs", rows as never, STABLE);
    await createView(t.dir, "stats", { source: "docs", udtf: udfRef("langStats", "udtfs.ts") });
    const r = await refreshView(t.dir, "stats", opts);
    assert.equal(r.status, "finished");
    assert.deepEqual(r.partitions, { total: 3, computed: 3 });
    const got = ((await (await t.open("stats")).query().select(["lang", "docs", "words"]).toArray()) as { lang: string; docs: bigint; words: bigint }[]).map((x) => `${x.lang} ${x.docs} ${x.words}`).sort();
    const want = langs.map((l) => { const rs = rows.filter((x) => x.lang === l); return `${l} ${rs.length} ${rs.reduce((n, x) => n + (x.text === "" ? 0 : x.text.split(" ").length), 0)}`; }).sort();
    assert.deepEqual(got, want);

    // A blob input: each row's handle reads the first 4 KiB on the worker, from the job's pinned version.
    const schema = new arrow.Schema([new arrow.Field("id", new arrow.Int64()), lancedb.blob("b")]);
    await t.db.createTable("files", [0, 1, 2, 3, 4].map((i) => ({ id: BigInt(i), b: pattern(i, 3000 + i * 5000) })) as never, { schema } as never);
    await addColumns({ db: t.dir, table: "files" }, { head: udfRef("head4k", "blobs.ts") });
    const b = await backfill({ db: t.dir, table: "files" }, "head", { executor: { redis: url, queue }, concurrency: 1 });
    assert.equal(b.status, "finished");
    const heads = ((await (await t.open("files")).query().select(["id", "head"]).toArray()) as { id: bigint; head: string }[]).sort((x, y) => Number(x.id - y.id));
    for (const h of heads) {
      const want = pattern(Number(h.id), 3000 + Number(h.id) * 5000)!;
      assert.equal(h.head, `${want.length}:${createHash("sha256").update(want.subarray(0, 4096)).digest("hex")}`);
    }
    await w.stop();
  });
});
