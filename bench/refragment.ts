/**
 * Writer-bound benchmark: a data-expanding UDF (4 KB per row, some CPU per row) on a table with one
 * fragment, then the same backfill after `refragment` into 8 fragments, side by side per repetition.
 * Prints the medians, the speed-up, each run's diagnosis, and the refragment itself (its wall time;
 * the table has a BTREE on id, which refragment keeps).
 *
 *   node bench/refragment.ts [--rows 20000] [--reps 3] [--fragments 8]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { availableParallelism, cpus, tmpdir } from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { arrow, lancedb } from "../src/arrow.ts";
import { addColumns, backfill, refragment, type JobRecord } from "../src/index.ts";

const { values } = parseArgs({ options: { rows: { type: "string" }, reps: { type: "string" }, fragments: { type: "string" } } });
const ROWS = Number(values.rows ?? 20000);
const REPS = Number(values.reps ?? 3);
const FRAGS = Number(values.fragments ?? 8);
const UDF = `${fileURLToPath(new URL("./udfs-expand.ts", import.meta.url))}#thumbnail`;
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

interface Run {
  ms: number;
  diagnosis: string;
  bound: string;
  record: JobRecord;
}

async function runOnce(dir: string, column: string): Promise<Run> {
  const ref = { db: dir, table: "t" };
  await addColumns(ref, { [column]: UDF });
  const r = await backfill(ref, column);
  const d = r.diagnosis!;
  return { ms: r.metrics.elapsedMs, diagnosis: `${d.summary}${d.hint ? ` — ${d.hint}` : ""}`, bound: d.bound, record: r };
}

const root = mkdtempSync(path.join(tmpdir(), "lancet-bench-refrag-"));
const results: { one: Run; many: Run; refragmentMs: number }[] = [];
for (let rep = 1; rep <= REPS; rep++) {
  const dir = path.join(root, `rep${rep}`);
  const db = await lancedb.connect(dir);
  const table = await db.createTable("t", arrow.tableFromArrays({ id: BigInt64Array.from({ length: ROWS }, (_, i) => BigInt(i)) }));
  await table.createIndex("id", { config: lancedb.Index.btree() });
  const one = await runOnce(dir, "thumb_a");
  const r0 = performance.now();
  const rf = await refragment({ db: dir, table: "t" }, { maxRowsPerFragment: Math.ceil(ROWS / FRAGS) });
  const refragmentMs = performance.now() - r0;
  if (!rf.indexes.includes("id_idx")) throw new Error(`refragment did not keep id_idx (kept ${rf.indexes.join(", ")})`);
  const many = await runOnce(dir, "thumb_b");
  process.stderr.write(`rep ${rep}: 1 fragment ${Math.round(one.ms)} ms (${one.bound}); ${rf.fragmentsAfter} fragments ${Math.round(many.ms)} ms (${many.bound})\n`);
  results.push({ one, many, refragmentMs });
  rmSync(dir, { recursive: true, force: true });
}
rmSync(root, { recursive: true, force: true });

const oneMs = median(results.map((r) => r.one.ms));
const manyMs = median(results.map((r) => r.many.ms));
const m = (r: Run, k: "udfMs" | "writeMs" | "checkpointMs" | "commitMs"): number => Math.round(r.record.metrics[k]);
const out: string[] = [];
out.push(`Rows: ${ROWS.toLocaleString("en-US")} × 4 KB output (${((ROWS * 4096) / 2 ** 20).toFixed(0)} MiB); ${REPS} repetitions; ${availableParallelism()} cores (${cpus()[0]?.model.trim()}); Node ${process.version}`);
out.push("");
out.push("| rep | layout | wall (ms) | udf | checkpoint | write | commit (ms) | diagnosis |");
out.push("|---:|---|---:|---:|---:|---:|---:|---|");
results.forEach((r, i) => {
  out.push(`| ${i + 1} | 1 fragment | ${Math.round(r.one.ms)} | ${m(r.one, "udfMs")} | ${m(r.one, "checkpointMs")} | ${m(r.one, "writeMs")} | ${m(r.one, "commitMs")} | ${r.one.diagnosis} |`);
  out.push(`| ${i + 1} | ${FRAGS} fragments | ${Math.round(r.many.ms)} | ${m(r.many, "udfMs")} | ${m(r.many, "checkpointMs")} | ${m(r.many, "writeMs")} | ${m(r.many, "commitMs")} | ${r.many.diagnosis} |`);
});
out.push("");
out.push(`Median wall time: 1 fragment ${Math.round(oneMs)} ms, ${FRAGS} fragments ${Math.round(manyMs)} ms; speed-up ${(oneMs / manyMs).toFixed(2)}×.`);
out.push(`refragment itself (${(ROWS * 4096 / 2 ** 20).toFixed(0)} MiB of thumbnails rewritten, BTREE on id rebuilt): median ${Math.round(median(results.map((r) => r.refragmentMs)))} ms.`);
out.push(`Bound: 1 fragment → ${results.map((r) => r.one.bound).join(", ")}; ${FRAGS} fragments → ${results.map((r) => r.many.bound).join(", ")}.`);
process.stdout.write(out.join("\n") + "\n");
process.stdout.write(JSON.stringify({ rows: ROWS, reps: REPS, fragments: FRAGS, oneFragmentMedianMs: Math.round(oneMs), manyFragmentsMedianMs: Math.round(manyMs), speedup: Math.round((oneMs / manyMs) * 100) / 100, refragmentMedianMs: Math.round(median(results.map((r) => r.refragmentMs))), bounds: results.map((r) => [r.one.bound, r.many.bound]) }) + "\n");
