/**
 * Blob inputs in views: a chunker gets a lazy handle per parent, a UDTF gets handles for a batch
 * through ctx.blobs; both read the source version the refresh pinned, never the column's bytes in a
 * scan. A view refuses to copy a blob column.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { arrow, lancedb } from "../../src/arrow.ts";
import { createView, isBackfillError, refreshView } from "../../src/index.ts";
import { tempDb, udfRef, type TempDb } from "../helpers.ts";

const STABLE = { storageOptions: { new_table_enable_stable_row_ids: "true" } };
const sha = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex").slice(0, 16);
/** Deterministic bytes: `n` of them for row `i`. */
const bytesOf = (i: number, n: number): Buffer => Buffer.from(Array.from({ length: n }, (_, k) => (i * 31 + k * 7) % 251));
const SIZES = [0, 1, 1000, 1024, 5000, 70_000];

async function blobSource(t: TempDb): Promise<void> {
  const schema = new arrow.Schema([new arrow.Field("id", new arrow.Int64()), new arrow.Field("grp", new arrow.Utf8()), lancedb.blob("b")]);
  await t.db.createTable("src", SIZES.map((n, i) => ({ id: BigInt(i), grp: i % 2 === 0 ? "even" : "odd", b: bytesOf(i, n) })), { schema, ...STABLE } as never);
}

function expectedPieces(i: number, n: number): string[] {
  const all = bytesOf(i, n);
  const out: string[] = [];
  for (let o = 0; o < n; o += 1024) out.push(`${i}:${o}:${Math.min(1024, n - o)}:${sha(all.subarray(o, o + 1024))}`);
  return out;
}

test("a chunker reads its blob input through a lazy handle (readRange), and a refresh after a blob is rewritten re-expands that parent only", async () => {
  await using t = await tempDb();
  await blobSource(t);
  await createView(t.dir, "pieces", { source: "src", chunker: udfRef("pieces", "view-blobs.ts"), select: ["id"] });
  const first = await refreshView(t.dir, "pieces");
  assert.deepEqual(first.parents, { added: SIZES.length, deleted: 0, updated: 0 });
  const rows = async (): Promise<string[]> => ((await (await t.open("pieces")).query().select(["id", "offset", "size", "digest"]).toArray()) as { id: bigint; offset: number; size: number; digest: string }[]).map((r) => `${r.id}:${r.offset}:${r.size}:${r.digest}`).sort();
  assert.deepEqual(await rows(), SIZES.flatMap((n, i) => expectedPieces(i, n)).sort());

  // Rewrite row 4's blob (5000 → 2100 bytes of other content).
  const src = await t.open("src");
  await src.delete("id = 4");
  await src.add([{ id: 4n, grp: "even", b: bytesOf(40, 2100) }] as never);
  const next = await refreshView(t.dir, "pieces");
  assert.deepEqual(next.parents, { added: 1, deleted: 1, updated: 0 });
  const want = SIZES.flatMap((n, i) => (i === 4 ? expectedPieces(40, 2100).map((s) => s.replace(/^40:/, "4:")) : expectedPieces(i, n))).sort();
  assert.deepEqual(await rows(), want);
});

test("a UDTF reads blob inputs through ctx.blobs(batch, column), per partition", async () => {
  await using t = await tempDb();
  await blobSource(t);
  await createView(t.dir, "stats", { source: "src", udtf: udfRef("blobStats", "view-blobs.ts") });
  const r = await refreshView(t.dir, "stats");
  assert.deepEqual(r.partitions, { total: 2, computed: 2 });
  const got = ((await (await t.open("stats")).query().select(["grp", "n", "bytes", "heads"]).toArray()) as { grp: string; n: bigint; bytes: bigint; heads: string }[]).map((x) => `${x.grp} ${x.n} ${x.bytes} ${x.heads}`).sort();
  const group = (odd: number): string => {
    const ids = SIZES.map((n, i) => ({ n, i })).filter((x) => x.i % 2 === odd);
    return `${odd ? "odd" : "even"} ${ids.length} ${ids.reduce((s, x) => s + x.n, 0)} ${ids.map((x) => sha(bytesOf(x.i, x.n).subarray(0, 16))).join(",")}`;
  };
  assert.deepEqual(got, [group(0), group(1)].sort());
});

test("a view refuses to copy a blob column (CONFIG_INVALID), and leaves nothing behind", async () => {
  await using t = await tempDb();
  await blobSource(t);
  await assert.rejects(createView(t.dir, "v", { source: "src", select: ["id", "b"] }), (e: unknown) => isBackfillError(e, "CONFIG_INVALID") && /blob column/.test((e as Error).message));
  assert.ok(!(await t.db.tableNames()).includes("v"));
});
