/**
 * Chunk views (issue 13): peak memory of a refresh whose chunker fans out 1,000 children of 1 KB
 * each per parent (bench/chunkers-udfs.ts#kilo), goal ≤ 1 GB for the coordinator (the process
 * running the refresh) and for each worker process, while the output (parents × 1,000 × 1 KB) is
 * well beyond 1 GB.
 *
 * The source (`id` int64, stable row ids) and the chunk view are made here; the refresh runs as
 * `node bin/lancet.mjs refresh --db DIR --view chunks --json` in a child process, with the default
 * maxRowsPerFragment (65,536) and a smaller one, side by side. Every 200 ms this process reads
 * VmHWM/VmRSS from /proc/<pid>/status of the CLI process and of its worker processes (descendants
 * running worker-entry), with the TreeSampler of bench/suite/harness.ts that bench/suite.ts's P5
 * uses. Each run is checked: the view has exactly parents × 1,000 rows and the CLI reports them added.
 *
 *   node bench/chunkers.ts [--parents 2000] [--reps 3] [--small 8192] [--child-kb 1|4]
 */
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { cpus, tmpdir, totalmem } from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { arrow, lancedb } from "../src/arrow.ts";
import { createView } from "../src/index.ts";
import { FANOUT } from "./chunkers-udfs.ts";
import { TreeSampler } from "./suite/harness.ts";

const { values } = parseArgs({ options: { parents: { type: "string" }, reps: { type: "string" }, small: { type: "string" }, "child-kb": { type: "string" } } });
const PARENTS = Number(values.parents ?? 2000);
const REPS = Number(values.reps ?? 3);
const SMALL = Number(values.small ?? 8192);
/** Bytes per child: 1 KB (issue 13's case, chunker kilo) or 4 KB (kilo4). */
const CHILD_KB = Number(values["child-kb"] ?? 1);
if (CHILD_KB !== 1 && CHILD_KB !== 4) throw new Error("--child-kb: 1 or 4");
const KB = 1024 * CHILD_KB;
const BIN = fileURLToPath(new URL("../bin/lancet.mjs", import.meta.url));
const CHUNKER = `${fileURLToPath(new URL("./chunkers-udfs.ts", import.meta.url))}#${CHILD_KB === 1 ? "kilo" : "kilo4"}`;
const CONFIGS: { label: string; args: string[]; maxRows: number }[] = [
  { label: "default (65,536)", args: [], maxRows: 65_536 },
  { label: `--max-rows-per-fragment ${SMALL.toLocaleString("en-US")}`, args: ["--max-rows-per-fragment", String(SMALL)], maxRows: SMALL },
];

const fmt = (n: number, d = 0): string => n.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const mib = (kb: number): number => kb / 1024;

function runCli(argv: string[]): Promise<{ code: number | null; wallMs: number; json: Record<string, unknown> | undefined; stderr: string; sampler: TreeSampler }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [BIN, ...argv], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    // Peak RSS (VmHWM) of the CLI process and of its worker processes, sampled every 200 ms.
    const sampler = new TreeSampler(child.pid!).start(200);
    child.on("error", reject);
    // The last sample before exit is the one taken while the process is still there: sample on "exit" too.
    child.on("exit", () => sampler.sample());
    child.on("close", (code) => {
      sampler.stop();
      let json: Record<string, unknown> | undefined;
      try {
        json = JSON.parse(stdout.trim().split("\n").at(-1) ?? "") as Record<string, unknown>;
      } catch {
        json = undefined;
      }
      resolve({ code, wallMs: performance.now() - t0, json, stderr, sampler });
    });
  });
}

function dirBytes(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) n += e.isDirectory() ? dirBytes(path.join(dir, e.name)) : statSync(path.join(dir, e.name)).size;
  return n;
}

interface Run {
  wallMs: number;
  coordMiB: number;
  workerMiB: number;
  treeMiB: number;
  workers: number;
  viewGB: number;
}

const root = mkdtempSync(path.join(tmpdir(), "lancet-bench-chunkers-"));
const children = PARENTS * FANOUT;
const outputGB = (children * KB) / 1e9;
const results = new Map<string, Run[]>(CONFIGS.map((c) => [c.label, []]));
console.log(`# chunk views: ${fmt(PARENTS)} parents × ${fmt(FANOUT)} children × ${CHILD_KB} KB = ${fmt(children)} children, ${fmt(outputGB, 2)} GB of output`);
console.log(`# machine: ${cpus().length} × ${cpus()[0]?.model ?? "?"}, ${fmt(totalmem() / 2 ** 30, 1)} GiB RAM; node ${process.version}; ${new Date().toISOString()}`);
try {
  for (let rep = 1; rep <= REPS; rep++) {
    for (const c of rep % 2 === 1 ? CONFIGS : [...CONFIGS].reverse()) {
      const db = path.join(root, `rep${rep}-${c.maxRows}`);
      const conn = await lancedb.connect(db);
      const ids = BigInt64Array.from({ length: PARENTS }, (_, i) => BigInt(i));
      await conn.createTable("src", arrow.tableFromArrays({ id: ids }) as never, { storageOptions: { new_table_enable_stable_row_ids: "true" } } as never);
      await createView(db, "chunks", { source: "src", chunker: CHUNKER, select: ["id"] });
      const run = await runCli(["refresh", "--db", db, "--view", "chunks", ...c.args, "--json"]);
      const rowsAdded = run.json?.rowsAdded;
      const view = await conn.openTable("chunks");
      const count = await view.countRows();
      if (run.code !== 0 || rowsAdded !== children || count !== children) {
        throw new Error(`${c.label}: CLI exited ${run.code}, rowsAdded ${String(rowsAdded)}, view has ${count} rows (want ${children}); stderr: ${run.stderr}`);
      }
      const viewGB = dirBytes(path.join(db, "chunks.lance")) / 1e9;
      const r: Run = { wallMs: run.wallMs, coordMiB: mib(run.sampler.rootHwmKb), workerMiB: mib(run.sampler.workerHwmKb), treeMiB: mib(run.sampler.treeRssKb), workers: run.sampler.workerPids.size, viewGB };
      results.get(c.label)!.push(r);
      console.log(`  rep ${rep}, ${c.label}: ${fmt(r.wallMs / 1000, 1)} s, ${fmt(children / (r.wallMs / 1000))} children/s; peak RSS coordinator ${fmt(r.coordMiB)} MiB, largest worker ${fmt(r.workerMiB)} MiB (${r.workers} worker process(es)), tree ${fmt(r.treeMiB)} MiB; view ${fmt(viewGB, 2)} GB on disk`);
      rmSync(db, { recursive: true, force: true });
    }
  }
} finally {
  rmSync(root, { recursive: true, force: true });
}

console.log();
console.log(`| maxRowsPerFragment | wall (s) | children/s | output MB/s | coordinator peak RSS (MiB) | largest worker peak RSS (MiB) | peak tree RSS, summed (MiB) | worker processes | view on disk (GB) |`);
console.log(`|---|---:|---:|---:|---:|---:|---:|---:|---:|`);
let worst = 0;
for (const c of CONFIGS) {
  const rs = results.get(c.label)!;
  const wall = median(rs.map((r) => r.wallMs)) / 1000;
  const coord = median(rs.map((r) => r.coordMiB));
  const worker = median(rs.map((r) => r.workerMiB));
  worst = Math.max(worst, ...rs.map((r) => Math.max(r.coordMiB, r.workerMiB)));
  console.log(`| ${c.label} | ${fmt(wall, 1)} | ${fmt(children / wall)} | ${fmt((outputGB * 1000) / wall)} | **${fmt(coord)}** | **${fmt(worker)}** | ${fmt(median(rs.map((r) => r.treeMiB)))} | ${median(rs.map((r) => r.workers))} | ${fmt(median(rs.map((r) => r.viewGB)), 2)} |`);
}
console.log();
console.log(`Goal ≤ 1 GB (1,024 MiB) peak RSS per process: ${worst <= 1024 ? "**met**" : "**not met**"} (largest peak of any run: ${fmt(worst)} MiB; ${REPS} repetition(s), medians shown; wall = the CLI process's, start-up included).`);
