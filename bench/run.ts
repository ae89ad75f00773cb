/**
 * Benchmark: computing `y = x * 2` for every row of a table, LanceDB native vs Lancet.
 *
 *   npm run bench                          # 1,000,000 rows (10 fragments), 3 repetitions
 *   npm run bench -- --rows 100000 --reps 1
 *
 * Builds the base table once in a temp directory; each repetition copies it twice and measures, on
 * the two fresh copies, (1) LanceDB's native `table.addColumns([{ name: "y", valueSql: "x * 2" }])`
 * and (2) Lancet's `addColumns` (bind a batched UDF from bench/udfs.ts) + `backfill` with default
 * options. The order of the two alternates between repetitions. Both results are verified with a
 * fresh connection (`countRows("y = x * 2")` must equal the row count). Prints a Markdown table and,
 * last, a one-line JSON summary to stdout; progress notes go to stderr.
 */
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { availableParallelism, cpus, tmpdir } from "node:os";
import * as path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { lancedb } from "../src/arrow.ts";
import { buildXTable } from "./tables.ts";
import { addColumns, backfill } from "../src/index.ts";
import type { JobRecord } from "../src/index.ts";

const { values: args } = parseArgs({
  options: {
    rows: { type: "string", default: "1000000" },
    reps: { type: "string", default: "3" },
    fragments: { type: "string", default: "10" },
  },
});
function intArg(name: string, v: string | undefined, min: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min} (got ${String(v)})`);
  return n;
}
const ROWS = intArg("rows", args.rows, 1);
const REPS = intArg("reps", args.reps, 1);
const FRAGMENTS = Math.min(ROWS, intArg("fragments", args.fragments, 1));
const UDF = `${fileURLToPath(new URL("./udfs.ts", import.meta.url))}#double`;
const TABLE = "t";

const note = (s: string): void => void process.stderr.write(s + "\n");
const ms = (a: number, b: number): number => Math.round((b - a) * 10) / 10;
function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
const fmt = (n: number, digits = 0): string => n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });

// ---- base table -------------------------------------------------------------------------------
const root = mkdtempSync(path.join(tmpdir(), "lancet-bench-"));
const baseDir = path.join(root, "base");
const tBuild = performance.now();
await buildXTable(baseDir, TABLE, ROWS, Math.ceil(ROWS / FRAGMENTS));
note(`built base table: ${fmt(ROWS)} rows in ${FRAGMENTS} fragments under ${baseDir} (${fmt((performance.now() - tBuild) / 1000, 1)} s)`);

async function verify(dbDir: string): Promise<number> {
  const db = await lancedb.connect(dbDir);
  const table = await db.openTable(TABLE);
  const n = await table.countRows("y = x * 2");
  table.close();
  db.close();
  if (n !== ROWS) throw new Error(`verification failed in ${dbDir}: ${n} of ${ROWS} rows have y = x * 2`);
  return n;
}

async function runNative(dbDir: string): Promise<number> {
  const db = await lancedb.connect(dbDir);
  const table = await db.openTable(TABLE);
  const t0 = performance.now();
  await table.addColumns([{ name: "y", valueSql: "x * 2" }]);
  const t1 = performance.now();
  table.close();
  db.close();
  return ms(t0, t1);
}

interface LancetRun {
  bindMs: number;
  /** Backfill time until the plan was ready (first progress report): checking the column, opening the table, reading the manifest, planning. */
  setupMs: number;
  backfillMs: number;
  totalMs: number;
  result: JobRecord;
}

async function runLancet(dbDir: string): Promise<LancetRun> {
  const ref = { db: dbDir, table: TABLE };
  const t0 = performance.now();
  await addColumns(ref, { y: UDF });
  const t1 = performance.now();
  let setupMs = -1;
  const result = await backfill(ref, "y", {
    onProgress: (p) => {
      if (setupMs < 0) setupMs = Math.round(p.elapsedMs * 10) / 10;
    },
  });
  const t2 = performance.now();
  if (result.metrics.rowsComputed !== ROWS || result.metrics.rowsCommitted !== ROWS) {
    throw new Error(`Lancet computed ${result.metrics.rowsComputed} and committed ${result.metrics.rowsCommitted} rows; expected ${ROWS}`);
  }
  return { bindMs: ms(t0, t1), setupMs, backfillMs: ms(t1, t2), totalMs: ms(t0, t2), result };
}

// ---- repetitions ------------------------------------------------------------------------------
interface Rep {
  rep: number;
  order: string;
  nativeMs: number;
  lancet: LancetRun;
}
const reps: Rep[] = [];
for (let r = 1; r <= REPS; r++) {
  const nativeDir = path.join(root, `rep${r}-native`);
  const lancetDir = path.join(root, `rep${r}-lancet`);
  cpSync(baseDir, nativeDir, { recursive: true });
  cpSync(baseDir, lancetDir, { recursive: true });
  const nativeFirst = r % 2 === 1;
  let nativeMs = 0;
  let lancet: LancetRun | undefined;
  if (nativeFirst) {
    nativeMs = await runNative(nativeDir);
    lancet = await runLancet(lancetDir);
  } else {
    lancet = await runLancet(lancetDir);
    nativeMs = await runNative(nativeDir);
  }
  await verify(nativeDir);
  await verify(lancetDir);
  const b = { ...lancet.result.metrics, commitMs: lancet.result.metrics.writeMs + lancet.result.metrics.commitMs };
  note(
    `rep ${r}/${REPS} (${nativeFirst ? "native first" : "lancet first"}): native ${fmt(nativeMs, 1)} ms; lancet ${fmt(lancet.totalMs, 1)} ms ` +
      `(bind ${fmt(lancet.bindMs, 1)} + backfill ${fmt(lancet.backfillMs, 1)}; setup ${fmt(lancet.setupMs)} udf ${fmt(b.udfMs)} read ${fmt(b.readMs)} checkpoint ${fmt(b.checkpointMs)} commit ${fmt(b.commitMs)} ms, ${b.commits} commits); verified`,
  );
  reps.push({ rep: r, order: nativeFirst ? "native, lancet" : "lancet, native", nativeMs, lancet });
  rmSync(nativeDir, { recursive: true, force: true });
  rmSync(lancetDir, { recursive: true, force: true });
}
rmSync(root, { recursive: true, force: true });

// ---- report -----------------------------------------------------------------------------------
const med = {
  nativeMs: median(reps.map((r) => r.nativeMs)),
  lancetTotalMs: median(reps.map((r) => r.lancet.totalMs)),
  lancetBindMs: median(reps.map((r) => r.lancet.bindMs)),
  lancetBackfillMs: median(reps.map((r) => r.lancet.backfillMs)),
  setupMs: median(reps.map((r) => r.lancet.setupMs)),
  udfMs: median(reps.map((r) => r.lancet.result.metrics.udfMs)),
  readMs: median(reps.map((r) => r.lancet.result.metrics.readMs)),
  checkpointMs: median(reps.map((r) => r.lancet.result.metrics.checkpointMs)),
  commitMs: median(reps.map((r) => r.lancet.result.metrics.writeMs + r.lancet.result.metrics.commitMs)),
  commits: median(reps.map((r) => r.lancet.result.metrics.commits)),
};
const rate = (t: number): number => (t > 0 ? (ROWS * 1000) / t : 0);
const ratio = med.nativeMs / med.lancetTotalMs;
const plan = reps[0]!.lancet.result.plan!;

const out: string[] = [];
out.push(`Rows: ${fmt(ROWS)} in ${FRAGMENTS} fragments; repetitions: ${REPS}; Lancet defaults (concurrency ${Math.min(8, availableParallelism())}, task size ${fmt(plan.taskSize)}, commit granularity ${plan.commitGranularity}, ${plan.tasks} tasks)`);
out.push("");
out.push("| rep | order | native addColumns (ms) | Lancet bind (ms) | Lancet backfill (ms) | Lancet total (ms) | setup | udf | read | checkpoint | commit (ms) | commits |");
out.push("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
for (const r of reps) {
  const b = { ...r.lancet.result.metrics, commitMs: r.lancet.result.metrics.writeMs + r.lancet.result.metrics.commitMs };
  out.push(`| ${r.rep} | ${r.order} | ${fmt(r.nativeMs, 1)} | ${fmt(r.lancet.bindMs, 1)} | ${fmt(r.lancet.backfillMs, 1)} | ${fmt(r.lancet.totalMs, 1)} | ${fmt(r.lancet.setupMs)} | ${fmt(b.udfMs)} | ${fmt(b.readMs)} | ${fmt(b.checkpointMs)} | ${fmt(b.commitMs)} | ${b.commits} |`);
}
out.push(`| **median** | | **${fmt(med.nativeMs, 1)}** | ${fmt(med.lancetBindMs, 1)} | ${fmt(med.lancetBackfillMs, 1)} | **${fmt(med.lancetTotalMs, 1)}** | ${fmt(med.setupMs)} | ${fmt(med.udfMs)} | ${fmt(med.readMs)} | ${fmt(med.checkpointMs)} | ${fmt(med.commitMs)} | ${fmt(med.commits)} |`);
out.push("");
out.push("| | median time (ms) | rows/s |");
out.push("|---|---:|---:|");
out.push(`| LanceDB native \`addColumns(valueSql: "x * 2")\` | ${fmt(med.nativeMs, 1)} | ${fmt(rate(med.nativeMs))} |`);
out.push(`| Lancet \`addColumns\` + \`backfill\` | ${fmt(med.lancetTotalMs, 1)} | ${fmt(rate(med.lancetTotalMs))} |`);
out.push(`| Lancet \`backfill\` only | ${fmt(med.lancetBackfillMs, 1)} | ${fmt(rate(med.lancetBackfillMs))} |`);
out.push("");
out.push(`Ratio native_time / lancet_time (= Lancet throughput / native throughput): ${ratio.toFixed(4)} (Lancet is ${(1 / ratio).toFixed(1)}x slower)`);
out.push("setup: backfill wall time until the plan was ready (check the column, open the table, read the manifest, plan). udf/read/checkpoint ms are summed over worker processes (they overlap in wall time). commit ms is the coordinator's wall time in commits: on the first commit, adding and indexing Lancet's _lancet_key column; then per fragment, assembling checkpoints, looking up keys and a mergeInsert.");
process.stdout.write(out.join("\n") + "\n");

const summary = {
  rows: ROWS,
  fragments: FRAGMENTS,
  reps: REPS,
  cpus: availableParallelism(),
  cpuModel: cpus()[0]?.model ?? "unknown",
  node: process.version,
  nativeMedianMs: med.nativeMs,
  lancetMedianMs: med.lancetTotalMs,
  lancetBindMedianMs: med.lancetBindMs,
  lancetBackfillMedianMs: med.lancetBackfillMs,
  nativeRowsPerSec: Math.round(rate(med.nativeMs)),
  lancetRowsPerSec: Math.round(rate(med.lancetTotalMs)),
  ratioNativeOverLancet: Number(ratio.toFixed(5)),
  breakdownMedianMs: { setup: Math.round(med.setupMs), udf: Math.round(med.udfMs), read: Math.round(med.readMs), checkpoint: Math.round(med.checkpointMs), commit: Math.round(med.commitMs) },
  commitsMedian: med.commits,
  nativeMs: reps.map((r) => r.nativeMs),
  lancetMs: reps.map((r) => r.lancet.totalMs),
  verified: true,
};
process.stdout.write(JSON.stringify(summary) + "\n");
