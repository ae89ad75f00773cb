/**
 * Blob v2 columns in and out of UDFs, on real LanceDB tables: a `blob` output filled by backfill
 * (through mergeInsert: the graft refuses blob columns), blob inputs as lazy handles read from the
 * job's pinned version, and the errors for bad values.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { arrow, lancedb, type LanceNs } from "../../src/arrow.ts";
import { addColumns, backfill, isBackfillError } from "../../src/index.ts";
import { blobHandles } from "../../src/udf/blob.ts";
import { tempDb, udfRef, type TempDb } from "../helpers.ts";
import { pattern } from "../fixtures/blobs.ts";

const ref = (dir: string) => ({ db: dir, table: "t" });
const blobUdf = (name: string) => udfRef(name, "blobs.ts");
const sha = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");
// -1: a null value. The graft writes blob values of any size up to 1 GiB (LanceDB's sidecar blob
// files move with the data file); mergeInsert, used only for fragments that already have values,
// takes at most 25 MiB per row (tested below).
const SIZES = [0, 1, 1024, 1024 ** 2, 64 * 1024 ** 2, -1];

/** A table with id, n (the size to make) and gate (a path for the gated UDF). */
async function sizesTable(t: TempDb): Promise<LanceNs.Table> {
  return t.db.createTable("t", SIZES.map((n, i) => ({ id: BigInt(i), n, gate: "" })), {
    schema: new arrow.Schema([new arrow.Field("id", new arrow.Int64()), new arrow.Field("n", new arrow.Int32()), new arrow.Field("gate", new arrow.Utf8())]),
  } as never);
}

async function rowIdsById(table: LanceNs.Table): Promise<Map<bigint, bigint>> {
  const rows = (await table.query().select(["id"]).withRowId().toArray()) as { id: bigint; _rowid: bigint }[];
  return new Map(rows.map((r) => [r.id, r._rowid]));
}

test("a blob output round-trips 0 B, 1 B, 1 KiB, 1 MiB, 64 MiB and null through the graft; blob inputs are read lazily through handles", async () => {
  await using t = await tempDb();
  await sizesTable(t);
  await addColumns(ref(t.dir), { b: blobUdf("makeBlob") });
  const field = (await (await t.open()).schema()).fields.find((f) => f.name === "b")!;
  assert.ok(lancedb.isBlobField(field as never), "b is a blob v2 field");
  const r = await backfill(ref(t.dir), "b", { checkpointSize: 2, maxCheckpointSize: 2 });
  assert.equal(r.status, "finished");
  assert.equal(r.metrics.rowsComputed, SIZES.length);
  assert.deepEqual(r.events.filter((e) => e.type === "commit-fallback").map((e) => e.message), [], "the graft wrote every fragment (sidecar blob files included)");

  const table = await t.open();
  const ids = await rowIdsById(table);
  const order = SIZES.map((_, i) => ids.get(BigInt(i))!);
  const bytes = await table.fetchBlobs("b", order);
  SIZES.forEach((n, i) => {
    const want = pattern(i, n);
    if (want === null) assert.equal(bytes[i], null, `row ${i} is null`);
    else {
      assert.equal(bytes[i]!.length, n, `row ${i} has ${n} bytes`);
      assert.ok(Buffer.compare(bytes[i]!, want) === 0, `row ${i}'s bytes round-trip`);
    }
  });

  // Blob inputs: the first 4 KiB through readRange, the whole blob through bytes(), sizes in a batch UDF.
  await addColumns(ref(t.dir), { head: blobUdf("head4k"), full: blobUdf("fullHash"), sizes: blobUdf("batchSizes") });
  for (const c of ["head", "full", "sizes"]) assert.equal((await backfill(ref(t.dir), c, { checkpointSize: 3, maxCheckpointSize: 3 })).status, "finished");
  const rows = (await (await t.open()).query().select(["id", "head", "full", "sizes"]).toArray()) as { id: bigint; head: string | null; full: string | null; sizes: bigint | null }[];
  for (const row of rows) {
    const i = Number(row.id);
    const want = pattern(i, SIZES[i]!);
    if (want === null) {
      assert.deepEqual([row.head, row.full, row.sizes], [null, null, null]);
      continue;
    }
    assert.equal(row.head, `${want.length}:${sha(want.subarray(0, 4096))}`, `head of row ${i}`);
    assert.equal(row.full, `${want.length}:${sha(want)}`, `full of row ${i}`);
    assert.equal(row.sizes, BigInt(want.length), `size of row ${i}`);
  }

  // blobHandles for other worker-side code: ranges are cut at the end, nulls stay null.
  const hs = await blobHandles(await t.open(), "b", order);
  assert.deepEqual(hs.map((h) => h?.size ?? null), SIZES.map((n) => (n < 0 ? null : n)));
  assert.equal((await hs[2]!.readRange(1000, 100)).length, 24);
  assert.deepEqual([...(await hs[2]!.readRange(10, 3))], [...pattern(2, 1024)!.subarray(10, 13)]);
  assert.equal((await hs[0]!.bytes()).length, 0);
  await assert.rejects(hs[2]!.readRange(-1, 3), RangeError);
});

test("blob inputs are read from the job's pinned version: a blob rewritten after the job started is not seen", async () => {
  await using t = await tempDb();
  const gate = path.join(t.dir, "gate");
  const schema = new arrow.Schema([new arrow.Field("id", new arrow.Int64()), lancedb.blob("b"), new arrow.Field("gate", new arrow.Utf8())]);
  const old = [pattern(100, 5000)!, pattern(101, 5000)!, pattern(102, 5000)!];
  const table = await t.db.createTable("t", old.map((b, i) => ({ id: BigInt(i), b, gate })), { schema } as never);
  await addColumns(ref(t.dir), { seen: blobUdf("gatedHash") });
  const job = backfill(ref(t.dir), "seen", { concurrency: 1, checkpointSize: 1, maxCheckpointSize: 1 });
  const until = Date.now() + 60_000;
  while (!existsSync(`${gate}.started`) && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  assert.ok(existsSync(`${gate}.started`), "the job started");
  // Rewrite row 1's blob (delete + add) after the job pinned its version.
  await table.delete("id = 1");
  await table.add([{ id: 1n, b: pattern(999, 5000)!, gate }] as never);
  const latest = await rowIdsById(await t.open());
  assert.equal(sha((await (await t.open()).fetchBlobs("b", [latest.get(1n)!]))[0]!), sha(pattern(999, 5000)!), "the latest version has the new bytes");
  writeFileSync(gate, "");
  const r = await job;
  assert.equal(r.status, "finished");
  for (let i = 0; i < 3; i++) assert.equal(readFileSync(`${gate}.seen.${i}`, "utf8"), sha(old[i]!), `row ${i} was read at the pinned version`);
});

async function expectOutputType(p: Promise<unknown>, ...patterns: RegExp[]): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isBackfillError(e, "UDF_OUTPUT_TYPE"), `expected UDF_OUTPUT_TYPE, got ${(e as { code?: string }).code}: ${(e as Error).message}`);
    for (const re of patterns) assert.match((e as Error).message, re);
    return true;
  });
}

test("bad values: a non-binary value for a blob output, a blob handle or a 2 GiB value for a binary column; nothing is written; a blob over 25 MiB cannot go through mergeInsert (commitMode merge) and says so", async () => {
  await using t = await tempDb();
  const schema = new arrow.Schema([new arrow.Field("id", new arrow.Int64()), new arrow.Field("n", new arrow.Int32()), lancedb.blob("b")]);
  await t.db.createTable("t", [0, 1, 2, 3].map((i) => ({ id: BigInt(i), n: 10, b: pattern(i, 10) })), { schema } as never);
  await addColumns(ref(t.dir), { out: blobUdf("notBinary"), passed: blobUdf("passHandle"), big: blobUdf("tooLarge"), huge: blobUdf("makeHuge") });

  await expectOutputType(backfill(ref(t.dir), "out"), /table t/, /column out/, /fragment 0/, /row 3/, /the string "not bytes", expected blob/);
  await expectOutputType(backfill(ref(t.dir), "passed"), /column passed/, /row 0/, /a blob handle \(10 bytes; return await handle.bytes\(\)/);
  await expectOutputType(backfill(ref(t.dir), "big"), /column big/, /row 1/, /a value of 2147483648 bytes/, /declare dataType "blob"/);
  await assert.rejects(backfill(ref(t.dir), "huge", { commitMode: "merge" }), (e: unknown) => {
    assert.ok(isBackfillError(e, "COMMIT_FAILED"), (e as Error).message);
    assert.match((e as Error).message, /column huge of table t .*a blob of 67108864 bytes cannot go through mergeInsert, which takes at most 25 MiB per row/);
    return true;
  });
  const table = await t.open();
  for (const c of ["out", "passed", "big", "huge"]) assert.equal(await table.countRows(`\`${c}\` IS NOT NULL`), 0, `nothing written to ${c}`);
  assert.equal((await backfill(ref(t.dir), "huge")).status, "finished", "the graft writes the 64 MiB value");

  await addColumns(ref(t.dir), { copy: blobUdf("makeBlob") });
  assert.equal((await backfill(ref(t.dir), "copy", { commitMode: "merge" })).status, "finished");
  const ids = await rowIdsById(await t.open());
  assert.ok(Buffer.compare((await (await t.open()).fetchBlobs("copy", [ids.get(2n)!]))[0]!, pattern(2, 10)!) === 0);
});

test("refragment refuses a table with blob v2 columns (TABLE_UNSUPPORTED), leaving it unchanged and its blobs readable", async () => {
  await using t = await tempDb();
  const schema = new arrow.Schema([new arrow.Field("id", new arrow.Int64()), lancedb.blob("b")]);
  await t.db.createTable("t", [0, 1, 2, 3].map((i) => ({ id: BigInt(i), b: pattern(i, 200_000) })), { schema } as never);
  const before = await (await t.open()).version();
  const { refragment } = await import("../../src/index.ts");
  await assert.rejects(refragment(ref(t.dir), { maxRowsPerFragment: 2 }), (e: unknown) => isBackfillError(e, "TABLE_UNSUPPORTED") && /blob v2 column\(s\) b/.test((e as Error).message));
  const table = await t.open();
  assert.equal(await table.version(), before);
  const ids = await rowIdsById(table);
  const bytes = await table.fetchBlobs("b", [0n, 1n, 2n, 3n].map((i) => ids.get(i)!));
  bytes.forEach((b, i) => assert.ok(Buffer.compare(b!, pattern(i, 200_000)!) === 0, `blob ${i} intact`));
});

test("a blob column of a fragment of more than 1,024 rows is written through the graft too (the read-back check keeps sizes and small values only)", async () => {
  await using t = await tempDb();
  await t.db.createTable("t", Array.from({ length: 3000 }, (_, i) => ({ id: BigInt(i), n: 100 + (i % 7), gate: "" })), {
    schema: new arrow.Schema([new arrow.Field("id", new arrow.Int64()), new arrow.Field("n", new arrow.Int32()), new arrow.Field("gate", new arrow.Utf8())]),
  } as never);
  await addColumns(ref(t.dir), { b: blobUdf("makeBlob") });
  const r = await backfill(ref(t.dir), "b");
  assert.deepEqual(r.events.filter((e) => e.type === "commit-fallback").map((e) => e.message), []);
  const table = await t.open();
  const ids = await rowIdsById(table);
  for (const i of [0, 1500, 2999]) {
    const [bytes] = await table.fetchBlobs("b", [ids.get(BigInt(i))!]);
    assert.ok(Buffer.compare(bytes!, pattern(i, 100 + (i % 7))!) === 0, `row ${i}`);
  }
});
