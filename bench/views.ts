/**
 * Views (issue 12), side by side in one run on one source:
 * - a refresh after 1 % of the source changed (½ % inserts, ¼ % updates of a selected column, ¼ %
 *   deletes) against a full refresh of the same view (created afresh), goal ≤ 5 %;
 * - a full refresh against a plain backfill of the same UDF over the same rows (the source's own UDF
 *   column), goal ≥ 0.8 (backfill time ÷ refresh time).
 * The UDF is a trivial batched one, so the numbers are Lancet's own cost.
 *
 *   node bench/views.ts [--rows 1000000] [--reps 2]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { availableParallelism, cpus, tmpdir } from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { arrow, lancedb } from "../src/arrow.ts";
import { addColumns, backfill, createView, getJob, refreshView, silentLogger, type RefreshViewResult } from "../src/index.ts";

const { values } = parseArgs({ options: { rows: { type: "string" }, reps: { type: "string" } } });
const ROWS = Number(values.rows ?? 1_000_000);
const REPS = Number(values.reps ?? 2);
const UDF = `${fileURLToPath(new URL("./udfs.ts", import.meta.url))}#double`;
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const time = async (f: () => Promise<unknown>): Promise<number> => {
  const t0 = performance.now();
  await f();
  return performance.now() - t0;
};
const rows = (from: number, n: number): ArrowNs =>
  arrow.tableFromArrays({ id: BigInt64Array.from({ length: n }, (_, i) => BigInt(from + i)), x: Float64Array.from({ length: n }, (_, i) => from + i), other: Int32Array.from({ length: n }, () => 0) });
type ArrowNs = ReturnType<typeof arrow.tableFromArrays>;

const root = mkdtempSync(path.join(tmpdir(), "lancet-bench-views-"));
const results: { full: number; incremental: number; backfill: number; changed: number; fullUdf: number; incUdf: number }[] = [];
/** Time the refresh's UDF backfill jobs took (the rest of a refresh is the row sync). */
const udfMs = async (db: string, r: RefreshViewResult): Promise<number> => {
  let ms = 0;
  for (const j of r.jobs) ms += (await getJob(db, j.jobId)).metrics.elapsedMs;
  return ms;
};
try {
  for (let rep = 1; rep <= REPS; rep++) {
    const db = path.join(root, `rep${rep}`);
    const conn = await lancedb.connect(db);
    const source = await conn.createTable("src", rows(0, ROWS) as never, { storageOptions: { new_table_enable_stable_row_ids: "true" } } as never);
    // A plain backfill of the same UDF over the same rows.
    await addColumns({ db, table: "src" }, { dbl: UDF });
    const backfillMs = await time(() => backfill({ db, table: "src" }, "dbl", { logger: silentLogger }));
    // A full refresh of a view of every row with that UDF.
    await createView(db, "v", { source: "src", select: ["id", "x"], udfs: { dbl: UDF } });
    let fullResult: RefreshViewResult | undefined;
    const fullMs = await time(async () => (fullResult = await refreshView(db, "v", { logger: silentLogger })));
    const fullUdf = await udfMs(db, fullResult!);
    // 1 % changes, then an incremental refresh.
    const pct = Math.max(4, Math.round(ROWS / 100));
    await source.add(rows(ROWS, pct / 2) as never);
    await source.update({ where: `id < ${pct / 4}`, values: { x: -1 } } as never);
    await source.delete(`id >= ${ROWS - pct / 4} AND id < ${ROWS}`); // old rows only (not the ones just added)
    let changed = 0;
    let incResult: RefreshViewResult | undefined;
    const incrementalMs = await time(async () => {
      incResult = await refreshView(db, "v", { logger: silentLogger });
      changed = incResult.rowsAdded + incResult.rowsUpdated + incResult.rowsDeleted;
    });
    const incUdf = await udfMs(db, incResult!);
    process.stderr.write(`rep ${rep}: backfill ${Math.round(backfillMs)} ms, full refresh ${Math.round(fullMs)} ms (UDF jobs ${Math.round(fullUdf)}), refresh after 1 % ${Math.round(incrementalMs)} ms (UDF jobs ${Math.round(incUdf)}; ${changed} rows changed)\n`);
    results.push({ full: fullMs, incremental: incrementalMs, backfill: backfillMs, changed, fullUdf, incUdf });
    rmSync(db, { recursive: true, force: true });
  }
} finally {
  rmSync(root, { recursive: true, force: true });
}
const full = median(results.map((r) => r.full));
const inc = median(results.map((r) => r.incremental));
const bf = median(results.map((r) => r.backfill));
process.stdout.write(
  [
    `# ${new Date().toISOString()} — ${cpus()[0]?.model.trim()} × ${availableParallelism()}, Node ${process.version}; ${ROWS.toLocaleString("en-US")} source rows, ${REPS} repetitions (medians)`,
    `full refresh ${Math.round(full)} ms; refresh after 1 % changed ${Math.round(inc)} ms → ${((100 * inc) / full).toFixed(1)} % of a full refresh (goal ≤ 5 %)`,
    `plain backfill of the same UDF over the same rows ${Math.round(bf)} ms → backfill ÷ full refresh = ${(bf / full).toFixed(2)} (goal ≥ 0.8)`,
    `where a refresh's time goes: full — UDF backfill jobs ${Math.round(median(results.map((r) => r.fullUdf)))} ms, row sync (reading, hashing and writing view rows, index) the rest; after 1 % — UDF jobs ${Math.round(median(results.map((r) => r.incUdf)))} ms, row sync the rest`,
    JSON.stringify({ rows: ROWS, reps: REPS, fullMs: Math.round(full), incrementalMs: Math.round(inc), backfillMs: Math.round(bf), incrementalShare: Math.round((1000 * inc) / full) / 1000, backfillOverRefresh: Math.round((100 * bf) / full) / 100 }),
  ].join("\n") + "\n",
);
