/**
 * Lancet demo: builds a 300,000-row LanceDB table in ./demo-data, binds four UDF columns from
 * demo/udfs.ts (scalar, batched, stateful batched, async scalar), backfills each with live progress,
 * then prints a summary, sample rows and the column status, and shows that a re-run computes nothing.
 *
 *   npm run demo
 */
import { rmSync, mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { performance } from "node:perf_hooks";
import { arrow, lancedb } from "../src/arrow.ts";
import { addColumns, backfill, columnStatus, getJob, listJobs } from "../src/index.ts";
import { formatJob } from "../src/cli/jobs.ts";
import { mulberry32 } from "./udfs.ts";
import type { BackfillOptions, JobRecord } from "../src/index.ts";
import { ProgressView } from "../src/cli/progress.ts";

const DB_DIR = fileURLToPath(new URL("../demo-data", import.meta.url));
const UDFS = fileURLToPath(new URL("./udfs.ts", import.meta.url));
const TABLE = "docs";
const FRAGMENTS = 6;
const ROWS_PER_FRAGMENT = 50_000;

const io = { stdout: process.stdout, stderr: process.stderr, isTTY: Boolean(process.stderr.isTTY) };
const out = (s = ""): void => void process.stdout.write(s + "\n");
const fmt = (n: number): string => n.toLocaleString("en-US");

// ---- 1. the table ---------------------------------------------------------------------------
const WORDS = (
  "lance arrow column table fragment vector query index batch commit checkpoint worker process " +
  "river mountain forest ocean desert valley island meadow canyon glacier harbor prairie " +
  "quick lazy bright quiet ancient modern gentle rapid silent golden hidden frozen " +
  "runs jumps reads writes builds computes stores fetches merges scans sorts hashes"
).split(" ");


const rand = mulberry32(2024);
const nullIds: number[] = [];

function makeFragment(f: number) {
  const ids = new Int32Array(ROWS_PER_FRAGMENT);
  const xs = new Float64Array(ROWS_PER_FRAGMENT);
  const texts = new Array<string | null>(ROWS_PER_FRAGMENT);
  for (let i = 0; i < ROWS_PER_FRAGMENT; i++) {
    const id = f * ROWS_PER_FRAGMENT + i;
    ids[i] = id;
    xs[i] = Math.round((rand() * 200 - 100) * 1000) / 1000;
    if (rand() < 0.03) {
      texts[i] = null;
      nullIds.push(id);
      continue;
    }
    const n = 2 + Math.floor(rand() * 9);
    const words: string[] = [];
    for (let w = 0; w < n; w++) words.push(WORDS[Math.floor(rand() * WORDS.length)]!);
    texts[i] = words.join(" ");
  }
  return new arrow.Table({
    id: arrow.makeVector(ids),
    text: arrow.vectorFromArray(texts, new arrow.Utf8()),
    x: arrow.makeVector(xs),
  });
}

const t0 = performance.now();
rmSync(DB_DIR, { recursive: true, force: true });
mkdirSync(DB_DIR, { recursive: true });
const db = await lancedb.connect(DB_DIR);
let table = await db.createTable(TABLE, makeFragment(0));
for (let f = 1; f < FRAGMENTS; f++) await table.add(makeFragment(f));
out(`Created table ${TABLE} in ${DB_DIR}: ${fmt(await table.countRows())} rows in ${FRAGMENTS} fragments (${((performance.now() - t0) / 1000).toFixed(1)} s)`);

// ---- 2. bind UDF columns (metadata only) ----------------------------------------------------
const ref = { db: DB_DIR, table: TABLE };
const columns: Record<string, string> = {
  word_count: `${UDFS}#wordCount`,
  x_squared: `${UDFS}#xSquared`,
  embedding: `${UDFS}#embedding`,
  shout: `${UDFS}#shout`,
};
const bound = await addColumns(ref, columns);
out(`Bound ${bound.length} UDF columns:`);
for (const b of bound) {
  const kind = [b.binding.batch ? "batched" : "scalar", b.binding.hasSetup ? "stateful" : ""].filter(Boolean).join(", ");
  out(`  ${b.column.padEnd(11)} ${b.binding.dataType.padEnd(28)} <- ${b.binding.exportName}(${b.binding.inputs.join(", ")}) [${kind}]`);
}
out();

// ---- 3. backfill each, with live progress ---------------------------------------------------
const plans: [string, BackfillOptions][] = [
  ["word_count", {}],
  ["x_squared", {}],
  ["embedding", {}],
  ["shout", { intraApplierConcurrency: 16 }],
];
const results: JobRecord[] = [];

async function run(column: string, options: BackfillOptions): Promise<JobRecord> {
  const view = new ProgressView(io, io.isTTY ? "bar" : "lines");
  io.stderr.write(`backfill ${column}${options.intraApplierConcurrency ? ` (intraApplierConcurrency ${options.intraApplierConcurrency})` : ""}\n`);
  try {
    return await backfill(ref, column, { ...options, onProgress: (p) => view.update(p) });
  } finally {
    view.done();
  }
}

for (const [column, options] of plans) results.push(await run(column, options));

out();
out("Summary");
out("| column | rows computed | seconds | rows/s | commits | udf s | read s | checkpoint s | write s | commit s | diagnosis |");
out("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
for (const r of results) {
  const s = r.metrics.elapsedMs / 1000;
  out(
    `| ${r.column} | ${fmt(r.metrics.rowsComputed)} | ${s.toFixed(2)} | ${fmt(Math.round(r.metrics.rowsComputed / s))} | ${r.metrics.commits} | ` +
      `${(r.metrics.udfMs / 1000).toFixed(2)} | ${(r.metrics.readMs / 1000).toFixed(2)} | ${(r.metrics.checkpointMs / 1000).toFixed(2)} | ${(r.metrics.writeMs / 1000).toFixed(2)} | ${(r.metrics.commitMs / 1000).toFixed(2)} | ${r.diagnosis?.summary ?? ""} |`,
  );
}
out("(udf/read/checkpoint seconds are summed over worker processes; write seconds over fragment writers)");
out();

// ---- 3b. the job record: what any process sees with `lancet jobs show ID` --------------------------
const shout = results.find((r) => r.column === "shout")!;
out(`Job record of the shout backfill (\`npx lancet jobs show ${shout.id} --db demo-data\`):`);
out(formatJob(await getJob(DB_DIR, shout.id)).trimEnd());
out();
out(`All jobs (\`npx lancet jobs --db demo-data\`): ${(await listJobs(DB_DIR)).map((j) => `${j.column} ${j.status}`).join(", ")}`);
out();

// ---- 4. sample rows ---------------------------------------------------------------------------
const fresh = await (await lancedb.connect(DB_DIR)).openTable(TABLE);
const sampleIds = [0, 1, 2, 150_000, nullIds[0] ?? 3];
const rows = await fresh.query().where(`id IN (${sampleIds.join(", ")})`).toArray();
const clip = (s: unknown, n: number): string => {
  const v = s === null || s === undefined ? "null" : String(s);
  return v.length > n ? v.slice(0, n - 1) + "…" : v;
};
out("Sample rows");
out("| id | text | x | word_count | x_squared | embedding (first 4 of 16) | shout |");
out("|---:|---|---:|---:|---:|---|---|");
for (const r of rows as Record<string, unknown>[]) {
  const emb = r.embedding as { toArray(): Float32Array } | null;
  const e = emb === null ? "null" : "[" + Array.from(emb.toArray().slice(0, 4), (v) => v.toFixed(3)).join(", ") + ", …]";
  const xsq = r.x_squared as number | null;
  out(`| ${String(r.id)} | ${clip(r.text, 36)} | ${String(r.x)} | ${String(r.word_count)} | ${xsq === null ? "null" : xsq.toFixed(3)} | ${e} | ${clip(r.shout, 36)} |`);
}
out();

// ---- 5. column status -------------------------------------------------------------------------
out("Column status");
out("| column | udf | version | filled | total | module |");
out("|---|---|---|---:|---:|---|");
for (const s of await columnStatus(ref)) {
  out(`| ${s.column} | ${s.binding.exportName} | ${s.binding.version} | ${fmt(s.filledRows)} | ${fmt(s.totalRows)} | ${s.moduleState} |`);
}
out("(filled counts non-null values: rows whose text is null stay null in word_count, embedding and shout)");
out();

// ---- 6. a re-run computes nothing ---------------------------------------------------------------
const again = await run("word_count", {});
out(`Re-run of word_count: ${fmt(again.metrics.rowsComputed)} rows computed, ${again.metrics.commits} commits, ${again.plan!.fragmentsDone} of ${again.plan!.fragmentsTotal} fragments already done (${(again.metrics.elapsedMs / 1000).toFixed(2)} s)`);
if (again.metrics.rowsComputed !== 0) throw new Error(`expected the re-run to compute 0 rows, got ${again.metrics.rowsComputed}`);
out(`Demo finished in ${((performance.now() - t0) / 1000).toFixed(1)} s.`);
table.close();
fresh.close();
