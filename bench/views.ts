/**
 * Views (issue 12), side by side in one run on one source:
 * - a refresh after 1 % of the source changed (½ % inserts, ¼ % updates of a selected column, ¼ %
 *   deletes) against a full refresh of the same view (created afresh), goal ≤ 5 %;
 * - a full refresh against a plain backfill of the same UDF over the same rows (the source's own UDF
 *   column), goal ≥ 0.8 (backfill time ÷ refresh time).
 * Twice, side by side: with a trivial batched UDF (the numbers are Lancet's own cost) and with one
 * doing ~10 µs of arithmetic per row (bench/udfs.ts#work, a stand-in for a small model).
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
const UDFS_MODULE = fileURLToPath(new URL("./udfs.ts", import.meta.url));
/** A trivial UDF (Lancet's own cost) and one doing ~10 µs of arithmetic per row (a stand-in for a small model). */
const UDFS: [string, string][] = [
  ["y = x * 2", `${UDFS_MODULE}#double`],
  ["~10 µs/row of arithmetic", `${UDFS_MODULE}#work`],
];
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
interface Rep { full: number; incremental: number; backfill: number; changed: number; fullUdf: number; incUdf: number; incRead: string; udfCpuUsPerRow: number }
/** Time the refresh's UDF backfill jobs took (the rest of a refresh is the row sync). */
const udfMs = async (db: string, r: RefreshViewResult): Promise<number> => {
  let ms = 0;
  for (const j of r.jobs) ms += (await getJob(db, j.jobId)).metrics.elapsedMs;
  return ms;
};
const results = new Map<string, Rep[]>(UDFS.map(([label]) => [label, []]));
try {
  for (let rep = 1; rep <= REPS; rep++) {
    for (const [label, udf] of rep % 2 === 1 ? UDFS : [...UDFS].reverse()) {
      const db = path.join(root, `rep${rep}-${label}`);
      const conn = await lancedb.connect(db);
      const source = await conn.createTable("src", rows(0, ROWS) as never, { storageOptions: { new_table_enable_stable_row_ids: "true" } } as never);
      // A plain backfill of the same UDF over the same rows.
      await addColumns({ db, table: "src" }, { y: udf });
      let bfRecord: Awaited<ReturnType<typeof backfill>> | undefined;
      const backfillMs = await time(async () => (bfRecord = await backfill({ db, table: "src" }, "y", { logger: silentLogger })));
      // A full refresh of a view of every row with that UDF.
      await createView(db, "v", { source: "src", select: ["id", "x"], udfs: { y: udf } });
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
      const incRead = (await getJob(db, incResult!.jobId)).refresh?.read ?? "?";
      const udfCpuUsPerRow = (1000 * bfRecord!.metrics.udfCpuMs) / ROWS;
      process.stderr.write(`rep ${rep} ${label}: backfill ${Math.round(backfillMs)} ms, full refresh ${Math.round(fullMs)} ms (UDF jobs ${Math.round(fullUdf)}), refresh after 1 % ${Math.round(incrementalMs)} ms (UDF jobs ${Math.round(incUdf)}; ${changed} rows changed; read ${incRead})\n`);
      results.get(label)!.push({ full: fullMs, incremental: incrementalMs, backfill: backfillMs, changed, fullUdf, incUdf, incRead, udfCpuUsPerRow });
      rmSync(db, { recursive: true, force: true });
    }
  }
} finally {
  rmSync(root, { recursive: true, force: true });
}
const lines = [`# ${new Date().toISOString()} — ${cpus()[0]?.model.trim()} × ${availableParallelism()}, Node ${process.version}; ${ROWS.toLocaleString("en-US")} source rows, ${REPS} repetitions (medians), UDFs in alternating order`];
const summary: Record<string, unknown> = { rows: ROWS, reps: REPS };
for (const [label] of UDFS) {
  const rs = results.get(label)!;
  const m = (f: (r: Rep) => number): number => median(rs.map(f));
  const full = m((r) => r.full);
  const inc = m((r) => r.incremental);
  const bf = m((r) => r.backfill);
  lines.push(
    `## ${label} (UDF CPU ${m((r) => r.udfCpuUsPerRow).toFixed(2)} µs/row)`,
    `full refresh ${Math.round(full)} ms; refresh after 1 % changed ${Math.round(inc)} ms (read: ${rs.map((r) => r.incRead).join(",")}) → ${((100 * inc) / full).toFixed(1)} % of a full refresh (goal ≤ 5 %)`,
    `plain backfill of the same UDF over the same rows ${Math.round(bf)} ms → backfill ÷ full refresh = ${(bf / full).toFixed(2)} (goal ≥ 0.8)`,
    `where a refresh's time goes: full — UDF backfill jobs ${Math.round(m((r) => r.fullUdf))} ms, row sync the rest (${Math.round(full - m((r) => r.fullUdf))} ms); after 1 % — UDF jobs ${Math.round(m((r) => r.incUdf))} ms, row sync the rest (${Math.round(inc - m((r) => r.incUdf))} ms)`,
  );
  summary[label] = { fullMs: Math.round(full), incrementalMs: Math.round(inc), backfillMs: Math.round(bf), incrementalShare: Math.round((1000 * inc) / full) / 1000, backfillOverRefresh: Math.round((100 * bf) / full) / 100 };
}
lines.push(JSON.stringify(summary));
process.stdout.write(lines.join("\n") + "\n");
