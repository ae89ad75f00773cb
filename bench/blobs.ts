/**
 * Peak RSS of a UDF reading the first 4 KiB of each of N × 8 MiB blobs, against the same job with no
 * blob input. Usage: node bench/blobs.ts [N=100]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { arrow, lancedb } from "../src/arrow.ts";
import { addColumns, backfill } from "../src/index.ts";

const N = Number(process.argv[2] ?? 100);
const SIZE = 8 * 1024 * 1024;
const dir = mkdtempSync(path.join(tmpdir(), "lancet-blob-bench-"));
const udfs = fileURLToPath(new URL("./blob-udfs.ts", import.meta.url));
try {
  const db = await lancedb.connect(dir);
  const schema = new arrow.Schema([new arrow.Field("id", new arrow.Int64()), lancedb.blob("b")]);
  const payload = Buffer.alloc(SIZE, 7);
  const table = await db.createTable("t", [{ id: 0n, b: payload }], { schema } as never);
  for (let i = 1; i < N; i += 10) {
    await table.add(Array.from({ length: Math.min(10, N - i) }, (_, k) => ({ id: BigInt(i + k), b: payload })) as never);
  }
  const ref = { db: dir, table: "t" };
  await addColumns(ref, { rss_blob: `${udfs}#head4k`, rss_plain: `${udfs}#noBlob` });
  for (const column of ["rss_plain", "rss_blob"]) {
    const t0 = performance.now();
    const r = await backfill(ref, column, { concurrency: 1 });
    const rows = (await (await db.openTable("t")).query().select([column]).toArray()) as Record<string, string>[];
    const peak = Math.max(...rows.map((x) => Number(x[column])));
    console.log(`${column}: ${r.status}, ${N} rows × ${SIZE / 2 ** 20} MiB, worker peak RSS ${(peak / 1024).toFixed(0)} MiB, ${((performance.now() - t0) / 1000).toFixed(1)} s; coordinator peak RSS so far ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MiB`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
