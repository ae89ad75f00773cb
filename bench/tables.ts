/** Benchmark tables: `id` int64 and `x` float64, written in fragments of `fragRows` rows (one `add` each). */
import { arrow, lancedb } from "../src/arrow.ts";

export async function buildXTable(dir: string, table: string, rows: number, fragRows: number): Promise<void> {
  const db = await lancedb.connect(dir);
  let t: Awaited<ReturnType<typeof db.createTable>> | undefined;
  for (let start = 0; start < rows; start += fragRows) {
    const n = Math.min(fragRows, rows - start);
    const ids = new BigInt64Array(n);
    const xs = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      ids[i] = BigInt(start + i);
      xs[i] = ((start + i) % 10007) * 0.25 - 1000.5;
    }
    const data = new arrow.Table({ id: arrow.makeVector(ids), x: arrow.makeVector(xs) });
    if (t === undefined) t = await db.createTable(table, data);
    else await t.add(data);
  }
  const n = await t!.countRows();
  t!.close();
  db.close();
  if (n !== rows) throw new Error(`built ${n} rows in ${dir}, expected ${rows}`);
}
