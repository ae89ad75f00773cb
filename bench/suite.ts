/**
 * The benchmark suite: P1 (trivial UDF vs native SQL, graft and merge committers), Scaling (graft,
 * 1M–20M rows, time exponent), P2 (CPU-bound UDF, concurrency 2 vs 1), P3 (async UDF against a local
 * HTTP server), P4 (expanding UDF vs the disk's sequential write speed), P5 (peak RSS for 1 KB
 * outputs), P6 (rows recomputed after a kill -9 at 50 %), P8 (planning time for 10,000 fragments).
 *
 *   node bench/suite.ts                    # everything, full size (~15 min on a 2-core VM)
 *   node bench/suite.ts --only P1,P3       # some benchmarks (names: P1 SCALING P2 P3 P4 P5 P6 P8)
 *   node bench/suite.ts --quick            # smoke run: small sizes, one repetition
 *   node bench/suite.ts --only P5 --p5-rows 2500000,5000000
 *   node bench/suite.ts --only P2 --p2-rows 800000
 *
 * Every benchmark prints a Markdown section and, last, a one-line JSON result (`{"bench":"P1",…}`) to
 * stdout; progress notes go to stderr. Everything runs in one `fs.mkdtempSync` directory under
 * `os.tmpdir()`, removed at the end. Side-by-side comparisons run on fresh copies of the same base
 * table within one repetition, in an order that rotates between repetitions.
 */
import { buildXTable } from "./tables.ts";
import { spawn, spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { availableParallelism, cpus, totalmem, tmpdir } from "node:os";
import * as path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { arrow, lancedb } from "../src/arrow.ts";
import { addColumns, backfill, listJobs, type BackfillOptions, type JobMetrics, type JobRecord } from "../src/index.ts";

// ---- arguments ----------------------------------------------------------------------------------
const { values: args } = parseArgs({
  options: {
    only: { type: "string" },
    quick: { type: "boolean", default: false },
    "p5-rows": { type: "string" },
    "p2-rows": { type: "string" },
  },
});
const QUICK = args.quick === true;
const ALL = ["P1", "SCALING", "P2", "P3", "P4", "P5", "P6", "P8"] as const;
type BenchName = (typeof ALL)[number];
const ONLY: Set<BenchName> = (() => {
  if (args.only === undefined) return new Set(ALL);
  const picked = new Set<BenchName>();
  for (const raw of args.only.split(",")) {
    const n = raw.trim().toUpperCase().replace(/^SCALE$/, "SCALING");
    if (n === "") continue;
    if (!(ALL as readonly string[]).includes(n)) throw new Error(`--only: unknown benchmark ${JSON.stringify(raw)}; known: ${ALL.join(", ")}`);
    picked.add(n as BenchName);
  }
  return picked;
})();

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "..");
const BIN = path.join(REPO, "bin", "lancet.mjs");
const UDF_DOUBLE = `${path.join(HERE, "udfs.ts")}#double`;
const UDF_THUMB = `${path.join(HERE, "udfs-expand.ts")}#thumbnail`;
const SUITE_UDFS = path.join(HERE, "udfs-suite.ts");
const UDF_BURN = `${SUITE_UDFS}#cpuBurn`;
const UDF_HTTP = `${SUITE_UDFS}#httpLookup`;
const UDF_KB = `${SUITE_UDFS}#kilobyte`;
const TABLE = "t";
const CORES = availableParallelism();

// ---- small helpers ------------------------------------------------------------------------------
const suiteStart = performance.now();
const note = (s: string): void => void process.stderr.write(`[${((performance.now() - suiteStart) / 1000).toFixed(0).padStart(4)} s] ${s}\n`);
const say = (s = ""): void => void process.stdout.write(s + "\n");
function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
const fmt = (n: number, digits = 0): string =>
  Number.isFinite(n) ? n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits }) : String(n);
const r1 = (n: number): number => Math.round(n * 10) / 10;
const r3 = (n: number): number => Math.round(n * 1000) / 1000;
const mib = (kb: number): number => kb / 1024;
const rowsLabel = (n: number): string => (n >= 1e6 && n % 1e5 === 0 ? `${n / 1e6}M` : n >= 1e3 && n % 100 === 0 ? `${n / 1e3}k` : String(n));
const goal = (met: boolean): string => (met ? "**met**" : "**not met**");
function dirBytes(dir: string): number {
  let total = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += dirBytes(p);
    else if (e.isFile()) total += statSync(p).size;
  }
  return total;
}
function withEnv<T>(vars: Record<string, string>, f: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  Object.assign(process.env, vars);
  return f().finally(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });
}

const ROOT = mkdtempSync(path.join(tmpdir(), "lancet-suite-"));
let dirSeq = 0;
const freshDir = (label: string): string => path.join(ROOT, `${label}-${++dirSeq}`);

// ---- process memory: /proc ----------------------------------------------------------------------
interface ProcMem {
  rssKb: number;
  hwmKb: number;
}
function readMem(pid: number): ProcMem | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/status`, "utf8");
    const rss = /VmRSS:\s+(\d+)/.exec(s);
    const hwm = /VmHWM:\s+(\d+)/.exec(s);
    return rss && hwm ? { rssKb: Number(rss[1]), hwmKb: Number(hwm[1]) } : undefined;
  } catch {
    return undefined;
  }
}
/** Resets this process's VmHWM (peak RSS) to its current RSS (Linux: `echo 5 > /proc/self/clear_refs`). */
function resetPeakRss(): boolean {
  try {
    writeFileSync("/proc/self/clear_refs", "5");
    return true;
  } catch {
    return false;
  }
}
function descendants(root: number): number[] {
  const parent = new Map<number, number>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      parent.set(Number(name), ppid);
    } catch {
      // gone
    }
  }
  const out: number[] = [];
  const frontier = [root];
  while (frontier.length > 0) {
    const p = frontier.pop()!;
    for (const [pid, pp] of parent) {
      if (pp === p) {
        out.push(pid);
        frontier.push(pid);
      }
    }
  }
  return out;
}
/** CPU time of this process's waited-for children (cutime + cstime from /proc/self/stat), ms. */
function childrenCpuMs(): number {
  try {
    const st = readFileSync("/proc/self/stat", "utf8");
    const f = st.slice(st.lastIndexOf(")") + 2).split(" ");
    return (Number(f[13]) + Number(f[14])) * 10; // clock ticks of 10 ms (CLK_TCK = 100)
  } catch {
    return NaN;
  }
}
function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ");
  } catch {
    return "";
  }
}

/** Samples the peak RSS (VmHWM, and VmRSS) of a process and of its worker processes every `intervalMs`. */
class TreeSampler {
  readonly root: number;
  rootHwmKb = 0;
  /** Largest VmHWM of any worker process (cmdline contains worker-entry). */
  workerHwmKb = 0;
  /** Largest sum of VmRSS over the root and its workers in one sample. */
  treeRssKb = 0;
  workerPids = new Set<number>();
  samples = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly cmds = new Map<number, string>();

  constructor(root: number) {
    this.root = root;
  }

  sample(): void {
    this.samples++;
    const own = readMem(this.root);
    if (!own) return;
    this.rootHwmKb = Math.max(this.rootHwmKb, own.hwmKb);
    let sum = own.rssKb;
    for (const pid of descendants(this.root)) {
      let cmd = this.cmds.get(pid);
      if (cmd === undefined) this.cmds.set(pid, (cmd = cmdline(pid)));
      if (!cmd.includes("worker-entry")) continue;
      const m = readMem(pid);
      if (!m) continue;
      this.workerPids.add(pid);
      this.workerHwmKb = Math.max(this.workerHwmKb, m.hwmKb);
      sum += m.rssKb;
    }
    this.treeRssKb = Math.max(this.treeRssKb, sum);
  }

  start(intervalMs = 200): this {
    this.sample();
    this.timer = setInterval(() => this.sample(), intervalMs);
    return this;
  }

  stop(): this {
    if (this.timer) clearInterval(this.timer);
    this.sample();
    return this;
  }
}

// ---- tables -------------------------------------------------------------------------------------
/** Builds table `t` (`id` int64, `x` float64) with `rows` rows in fragments of `fragRows` rows (one `add` each). */
function buildTable(dir: string, rows: number, fragRows: number): Promise<void> {
  return buildXTable(dir, TABLE, rows, fragRows);
}

const bases = new Map<string, string>();
/** A base table, built once per suite run and shared (never written to): copy it with {@link copyOf}. */
async function baseTable(rows: number, fragRows: number): Promise<string> {
  const key = `${rows}/${fragRows}`;
  let dir = bases.get(key);
  if (dir === undefined) {
    dir = freshDir(`base-${rowsLabel(rows)}-${rowsLabel(fragRows)}`);
    const t0 = performance.now();
    await buildTable(dir, rows, fragRows);
    note(`built base table ${fmt(rows)} rows in ${Math.ceil(rows / fragRows)} fragments (${fmt((performance.now() - t0) / 1000, 1)} s)`);
    bases.set(key, dir);
  }
  return dir;
}
function copyOf(base: string, label: string): string {
  const dir = freshDir(label);
  cpSync(base, dir, { recursive: true });
  return dir;
}
function dropBase(rows: number, fragRows: number): void {
  const key = `${rows}/${fragRows}`;
  const dir = bases.get(key);
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  bases.delete(key);
}

async function countWhere(dir: string, filter: string): Promise<number> {
  const db = await lancedb.connect(dir);
  const table = await db.openTable(TABLE);
  const n = await table.countRows(filter);
  table.close();
  db.close();
  return n;
}

// ---- running Lancet in this process -------------------------------------------------------------
interface Timeline {
  /** ms from the backfill call: plan ready (first progress report). */
  planMs: number;
  /** First checkpointed batch (pool started, first read + UDF + checkpoint done). */
  firstCkpMs: number;
  /** Every planned row checkpointed. */
  allCkpMs: number;
}
interface LancetRun {
  bindMs: number;
  backfillMs: number;
  totalMs: number;
  record: JobRecord;
  timeline: Timeline;
  /** Peak RSS of this process (the coordinator) during the backfill, KiB; 0 when not sampled. */
  coordHwmKb: number;
  workerHwmKb: number;
  /** CPU time of this process (coordinator, plus anything else it runs, e.g. P3's server) during the backfill, ms. */
  coordCpuMs: number;
  /** CPU time of the worker processes that exited during the backfill (all of them: the pool closes at the end), ms. */
  workersCpuMs: number;
}

async function runLancet(dir: string, column: string, udf: string, options: BackfillOptions = {}, sampleMemory = false): Promise<LancetRun> {
  const ref = { db: dir, table: TABLE };
  const t0 = performance.now();
  await addColumns(ref, { [column]: udf });
  const t1 = performance.now();
  const tl: Timeline = { planMs: -1, firstCkpMs: -1, allCkpMs: -1 };
  let sampler: TreeSampler | undefined;
  if (sampleMemory) {
    resetPeakRss();
    sampler = new TreeSampler(process.pid).start(200);
  }
  let record: JobRecord;
  const cpu0 = process.cpuUsage();
  const kids0 = childrenCpuMs();
  try {
    record = await backfill(ref, column, {
      ...options,
      onProgress: (p) => {
        const now = performance.now() - t1;
        if (tl.planMs < 0) tl.planMs = now;
        if (tl.firstCkpMs < 0 && p.rowsCheckpointed > 0) tl.firstCkpMs = now;
        if (tl.allCkpMs < 0 && p.rowsPlanned > 0 && p.rowsCheckpointed >= p.rowsPlanned) tl.allCkpMs = now;
      },
    });
  } finally {
    sampler?.stop();
  }
  const t2 = performance.now();
  const cpu = process.cpuUsage(cpu0);
  return { bindMs: t1 - t0, backfillMs: t2 - t1, totalMs: t2 - t0, record, timeline: tl, coordHwmKb: sampler?.rootHwmKb ?? 0, workerHwmKb: sampler?.workerHwmKb ?? 0, coordCpuMs: (cpu.user + cpu.system) / 1000, workersCpuMs: childrenCpuMs() - kids0 };
}

function expectRows(run: LancetRun, rows: number, what: string): void {
  const m = run.record.metrics;
  if (m.rowsComputed !== rows || m.rowsCommitted !== rows) throw new Error(`${what}: computed ${m.rowsComputed} and committed ${m.rowsCommitted} rows; expected ${rows}`);
}

/** `setup → first checkpoint → all checkpointed → end` as one compact string (seconds). */
function timelineText(run: LancetRun): string {
  const t = run.timeline;
  const s = (ms: number): string => (ms / 1000).toFixed(2);
  return `plan ${s(t.planMs)} · 1st ckp ${s(t.firstCkpMs)} · all ckp ${s(t.allCkpMs)} · end ${s(run.backfillMs)}`;
}

/** Stage breakdown of a job: summed worker/writer times and the coordinator's commit time, ms. */
function breakdown(m: JobMetrics): { udf: number; udfCpu: number; read: number; checkpoint: number; write: number; commit: number; commits: number } {
  return { udf: Math.round(m.udfMs), udfCpu: Math.round(m.udfCpuMs), read: Math.round(m.readMs), checkpoint: Math.round(m.checkpointMs), write: Math.round(m.writeMs), commit: Math.round(m.commitMs), commits: m.commits };
}

// ---- machine facts ------------------------------------------------------------------------------
function machineFacts(): Record<string, unknown> {
  const pkg = (p: string): string => {
    try {
      return (JSON.parse(readFileSync(path.join(REPO, "node_modules", p, "package.json"), "utf8")) as { version: string }).version;
    } catch {
      return "?";
    }
  };
  const df = spawnSync("df", ["-h", ROOT], { encoding: "utf8" }).stdout.trim().split("\n").at(-1) ?? "";
  return {
    date: new Date().toISOString(),
    cpus: CORES,
    cpuModel: cpus()[0]?.model.trim() ?? "unknown",
    memGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    lancedb: pkg("@lancedb/lancedb"),
    apacheArrow: pkg("apache-arrow"),
    tmp: ROOT,
    df,
    quick: QUICK,
  };
}

// =================================================================================================
// P1: y = x * 2, native SQL vs Lancet graft vs Lancet merge
// =================================================================================================
async function benchP1(): Promise<void> {
  const sizes = QUICK ? [200_000] : [1_000_000, 10_000_000];
  const REPS = QUICK ? 1 : 3;
  const FRAG = 100_000;
  /** merge at 10M takes over a minute per run: one repetition there. */
  const mergeReps = (rows: number): number => (rows >= 5_000_000 ? 1 : REPS);
  say("## P1: `y = x * 2` — LanceDB native SQL vs Lancet (graft, merge)");
  say();
  say(`Table: \`id\` int64, \`x\` float64 in ${fmt(FRAG)}-row fragments. Per repetition, fresh copies of the same base table: native \`addColumns([{ name: "y", valueSql: "x * 2" }])\`; Lancet \`addColumns({ y: "bench/udfs.ts#double" })\` (batched, Float64Array out) + \`backfill(ref, "y", { commitMode })\` with otherwise default options, for \`graft\` and \`merge\`. The order rotates between repetitions. Every result is verified (\`countRows("y = x * 2")\` = rows). Lancet time = bind + backfill. Timeline: seconds from the backfill call to plan ready · first checkpoint (pool start-up + first batch) · all rows checkpointed · end. CPU: native = this process's CPU time during \`addColumns\` (LanceDB's threads included); Lancet = coordinator (this process) + worker processes (their rusage, read from /proc/self/stat once they exit).`);
  say();
  const result: Record<string, unknown>[] = [];
  for (const rows of sizes) {
    const base = await baseTable(rows, FRAG);
    interface Rep {
      rep: number;
      order: string;
      nativeMs: number;
      nativeCpuMs: number;
      graft: LancetRun;
      merge: LancetRun | undefined;
    }
    const reps: Rep[] = [];
    const orders: ("native" | "graft" | "merge")[][] = [["native", "graft", "merge"], ["graft", "merge", "native"], ["merge", "native", "graft"]];
    for (let r = 0; r < REPS; r++) {
      const order = orders[r % orders.length]!.filter((w) => w !== "merge" || r < mergeReps(rows));
      let nativeMs = NaN;
      let nativeCpuMs = NaN;
      const runs: Partial<Record<"graft" | "merge", LancetRun>> = {};
      for (const who of order) {
        const dir = copyOf(base, `p1-${who}`);
        if (who === "native") {
          const db = await lancedb.connect(dir);
          const table = await db.openTable(TABLE);
          const c0 = process.cpuUsage();
          const t0 = performance.now();
          await table.addColumns([{ name: "y", valueSql: "x * 2" }]);
          nativeMs = performance.now() - t0;
          const c = process.cpuUsage(c0);
          nativeCpuMs = (c.user + c.system) / 1000;
          table.close();
          db.close();
        } else {
          const run = await runLancet(dir, "y", UDF_DOUBLE, { commitMode: who });
          expectRows(run, rows, `P1 ${who} ${rows}`);
          runs[who] = run;
        }
        const ok = await countWhere(dir, "y = x * 2");
        if (ok !== rows) throw new Error(`P1 ${who} ${rows}: ${ok} of ${rows} rows have y = x * 2`);
        rmSync(dir, { recursive: true, force: true });
      }
      const g = runs.graft!;
      const m = runs.merge;
      note(`P1 ${rowsLabel(rows)} rep ${r + 1}/${REPS} (${order.join(", ")}): native ${fmt(nativeMs, 1)} ms, graft ${fmt(g.totalMs)} ms${m ? `, merge ${fmt(m.totalMs)} ms` : ""}`);
      reps.push({ rep: r + 1, order: order.join(", "), nativeMs, nativeCpuMs, graft: g, merge: m });
    }
    if (rows !== sizes.at(-1)) dropBase(rows, FRAG);
    const merges = reps.flatMap((x) => (x.merge ? [x.merge] : []));
    const med = {
      native: median(reps.map((x) => x.nativeMs)),
      nativeCpu: median(reps.map((x) => x.nativeCpuMs)),
      graft: median(reps.map((x) => x.graft.totalMs)),
      merge: median(merges.map((x) => x.totalMs)),
      graftBackfill: median(reps.map((x) => x.graft.backfillMs)),
      mergeBackfill: median(merges.map((x) => x.backfillMs)),
    };
    const ratioGraft = med.native / med.graft;
    const ratioMerge = med.native / med.merge;
    const cpuS = (x: LancetRun): string => `${fmt(x.coordCpuMs / 1000, 2)} + ${fmt(x.workersCpuMs / 1000, 2)}`;
    say(`### ${fmt(rows)} rows (${rows / FRAG} fragments), ${REPS} repetition(s)${mergeReps(rows) < REPS ? `; merge in ${mergeReps(rows)} repetition only (${fmt(merges[0]!.totalMs / 1000, 0)} s a run)` : ""}`);
    say();
    say("| rep | order | native (ms) | native CPU (s) | graft total (ms) | graft CPU coord + workers (s) | graft timeline (s) | merge total (ms) | merge CPU coord + workers (s) | merge timeline (s) |");
    say("|---:|---|---:|---:|---:|---:|---|---:|---:|---|");
    for (const x of reps) {
      say(`| ${x.rep} | ${x.order} | ${fmt(x.nativeMs, 1)} | ${fmt(x.nativeCpuMs / 1000, 2)} | ${fmt(x.graft.totalMs)} | ${cpuS(x.graft)} | ${timelineText(x.graft)} | ${x.merge ? fmt(x.merge.totalMs) : "—"} | ${x.merge ? cpuS(x.merge) : "—"} | ${x.merge ? timelineText(x.merge) : "—"} |`);
    }
    say(`| **median** | | **${fmt(med.native, 1)}** | ${fmt(med.nativeCpu / 1000, 2)} | **${fmt(med.graft)}** | ${fmt(median(reps.map((x) => x.graft.coordCpuMs)) / 1000, 2)} + ${fmt(median(reps.map((x) => x.graft.workersCpuMs)) / 1000, 2)} | | **${fmt(med.merge)}** | ${fmt(median(merges.map((x) => x.coordCpuMs)) / 1000, 2)} + ${fmt(median(merges.map((x) => x.workersCpuMs)) / 1000, 2)} | |`);
    say();
    say("Stage breakdown (median over repetitions; udf/read/checkpoint summed over worker processes, write over writers, commit = coordinator bookkeeping):");
    say();
    say("| committer | bind | backfill | udf | read | checkpoint | write | commit (ms) | commits | task size | tasks | commit granularity | diagnosis (rep 1) |");
    say("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for (const [who, runs] of [["graft", reps.map((x) => x.graft)], ["merge", merges]] as const) {
      const b = runs.map((x) => breakdown(x.record.metrics));
      const mb = (k: keyof ReturnType<typeof breakdown>): string => fmt(median(b.map((x) => x[k])));
      const p = runs[0]!.record.plan!;
      say(`| ${who} | ${fmt(median(runs.map((x) => x.bindMs)))} | ${fmt(median(runs.map((x) => x.backfillMs)))} | ${mb("udf")} | ${mb("read")} | ${mb("checkpoint")} | ${mb("write")} | ${mb("commit")} | ${mb("commits")} | ${fmt(p.taskSize)} | ${p.tasks} | ${p.commitGranularity} | ${runs[0]!.record.diagnosis?.summary ?? ""} |`);
    }
    say();
    say(`Ratio native_time / lancet_time (medians): **graft ${ratioGraft.toFixed(3)}**, merge ${ratioMerge.toFixed(3)}; per repetition graft ${reps.map((x) => (x.nativeMs / x.graft.totalMs).toFixed(3)).join(", ")}, merge ${reps.flatMap((x) => (x.merge ? [(x.nativeMs / x.merge.totalMs).toFixed(3)] : [])).join(", ")}. Graft is ${(med.merge / med.graft).toFixed(1)}× faster than merge. Goal (graft ≥ 0.35): ${goal(ratioGraft >= 0.35)}.`);
    say();
    result.push({
      rows,
      fragments: rows / FRAG,
      reps: REPS,
      mergeReps: merges.length,
      nativeMedianMs: r1(med.native),
      nativeCpuMedianMs: r1(med.nativeCpu),
      graftMedianMs: r1(med.graft),
      mergeMedianMs: r1(med.merge),
      graftBackfillMedianMs: r1(med.graftBackfill),
      mergeBackfillMedianMs: r1(med.mergeBackfill),
      graftCpuMedianMs: { coordinator: Math.round(median(reps.map((x) => x.graft.coordCpuMs))), workers: Math.round(median(reps.map((x) => x.graft.workersCpuMs))) },
      ratioGraft: r3(ratioGraft),
      ratioMerge: r3(ratioMerge),
      goalMet: ratioGraft >= 0.35,
      nativeMs: reps.map((x) => r1(x.nativeMs)),
      graftMs: reps.map((x) => r1(x.graft.totalMs)),
      mergeMs: merges.map((x) => r1(x.totalMs)),
      graftBreakdown: breakdown(reps[0]!.graft.record.metrics),
      mergeBreakdown: breakdown(merges[0]!.record.metrics),
    });
  }
  // Fixed cost of a job: a backfill of a 1-row table measures start-up and finish (pool, jobs table).
  const tiny = freshDir("p1-tiny");
  await buildTable(tiny, 1, 1);
  const fixed: number[] = [];
  for (let i = 0; i < (QUICK ? 1 : 3); i++) {
    const run = await runLancet(tiny, `y${i}`, UDF_DOUBLE, { commitMode: "graft" });
    fixed.push(run.totalMs);
  }
  rmSync(tiny, { recursive: true, force: true });
  say(`Fixed cost of a job (bind + backfill of a 1-row, 1-fragment table with graft, median of ${fixed.length}): ${fmt(median(fixed))} ms (${fixed.map((x) => fmt(x)).join(", ")}).`);
  say();
  say("```json");
  say(JSON.stringify({ bench: "P1", sizes: result, fixedJobMs: r1(median(fixed)) }));
  say("```");
  say();
}

// =================================================================================================
// Scaling: graft at 1M … 20M rows
// =================================================================================================
interface CliBackfill {
  /** The job's own elapsedMs (from --json): excludes the CLI's process start-up. */
  jobMs: number;
  wallMs: number;
  json: Record<string, unknown>;
  coordHwmKb: number;
  workerHwmKb: number;
  /** CPU time of the CLI process and its workers, ms. */
  cpuMs: number;
}
/** Binds `udf` to `column` here, then backfills it with the CLI in a child process, sampling memory. */
async function cliBackfill(dir: string, column: string, udf: string, flags: string[], rows: number): Promise<CliBackfill> {
  await addColumns({ db: dir, table: TABLE }, { [column]: udf });
  const kids0 = childrenCpuMs();
  const run = await runCli(["backfill", "--db", dir, "--table", TABLE, "--column", column, ...flags, "--json"]);
  const cpuMs = childrenCpuMs() - kids0;
  const metrics = run.json?.metrics as { rowsComputed?: number; rowsCommitted?: number; elapsedMs?: number } | undefined;
  if (run.code !== 0 || run.json === undefined || metrics?.rowsComputed !== rows || metrics.rowsCommitted !== rows) {
    throw new Error(`CLI backfill of ${rows} rows exited ${run.code} (${run.signal}); last JSON ${JSON.stringify(run.json)?.slice(0, 500)}; stderr: ${run.stderrTail}`);
  }
  return { jobMs: Number(metrics.elapsedMs), wallMs: run.wallMs, json: run.json, coordHwmKb: run.sampler.rootHwmKb, workerHwmKb: run.sampler.workerHwmKb, cpuMs };
}

/** Least-squares slope of ln t on ln n. */
function exponent(pts: readonly { n: number; t: number }[]): number {
  const xs = pts.map((p) => Math.log(p.n));
  const ys = pts.map((p) => Math.log(p.t));
  const mx = xs.reduce((a, x) => a + x, 0) / xs.length;
  const my = ys.reduce((a, y) => a + y, 0) / ys.length;
  return xs.reduce((a, x, i) => a + (x - mx) * (ys[i]! - my), 0) / xs.reduce((a, x) => a + (x - mx) ** 2, 0);
}

async function benchScaling(): Promise<void> {
  const sizes = QUICK ? [100_000, 200_000, 400_000] : [1_000_000, 2_000_000, 5_000_000, 10_000_000, 20_000_000];
  const REPS = QUICK ? 1 : 3;
  const FRAG = QUICK ? 20_000 : 100_000;
  say("## Scaling: graft backfill time vs table size");
  say();
  say(`\`y = x * 2\` (bench/udfs.ts#double) bound in the suite process, then \`node bin/lancet.mjs backfill --commit-mode graft --json\` in a child process (otherwise default options), ${fmt(FRAG)}-row fragments, ${REPS} repetition(s) per size; the sizes run in a rotating order within each repetition. Time = the job's \`elapsedMs\` from the CLI's JSON (the CLI's own start-up, ~0.3 s, excluded; its wall time is shown too). Peak RSS: VmHWM of the CLI process (the coordinator) and of its largest worker process, sampled every 200 ms from /proc. CPU: the CLI process and its workers (rusage of waited-for children).`);
  say();
  const runs = new Map<number, CliBackfill[]>(sizes.map((n) => [n, []]));
  for (const n of sizes) await baseTable(n, FRAG);
  for (let r = 0; r < REPS; r++) {
    const order = r % 2 === 0 ? sizes : [...sizes].reverse();
    for (const n of order) {
      const dir = copyOf(await baseTable(n, FRAG), "scale");
      const run = await cliBackfill(dir, "y", UDF_DOUBLE, ["--commit-mode", "graft"], n);
      const ok = await countWhere(dir, "y = x * 2");
      if (ok !== n) throw new Error(`Scaling ${n}: ${ok} rows have y = x * 2`);
      rmSync(dir, { recursive: true, force: true });
      runs.get(n)!.push(run);
      note(`Scaling ${rowsLabel(n)} rep ${r + 1}/${REPS}: job ${fmt(run.jobMs)} ms (CLI ${fmt(run.wallMs)} ms), coordinator peak ${fmt(mib(run.coordHwmKb))} MiB, worker peak ${fmt(mib(run.workerHwmKb))} MiB`);
    }
  }
  for (const n of sizes) if (!(n === 10_000_000 && ONLY.has("P5"))) dropBase(n, FRAG);
  say("| rows | fragments | median job time (ms) | runs (ms) | CLI wall median (ms) | µs/row | CPU (s) | udf | read | checkpoint | write | commit (ms) | commits | coordinator peak RSS (MiB) | worker peak RSS (MiB) |");
  say("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
  const pts: { n: number; t: number }[] = [];
  const ptsWall: { n: number; t: number }[] = [];
  for (const n of sizes) {
    const rs = runs.get(n)!;
    const t = median(rs.map((x) => x.jobMs));
    pts.push({ n, t });
    ptsWall.push({ n, t: median(rs.map((x) => x.wallMs)) });
    const mj = (k: string): string => fmt(median(rs.map((x) => Number((x.json.metrics as Record<string, unknown>)[k]))));
    say(`| ${fmt(n)} | ${n / FRAG} | **${fmt(t)}** | ${rs.map((x) => fmt(x.jobMs)).join(", ")} | ${fmt(median(rs.map((x) => x.wallMs)))} | ${((t * 1000) / n).toFixed(3)} | ${fmt(median(rs.map((x) => x.cpuMs)) / 1000, 1)} | ${mj("udfMs")} | ${mj("readMs")} | ${mj("checkpointMs")} | ${mj("writeMs")} | ${mj("commitMs")} | ${mj("commits")} | ${fmt(median(rs.map((x) => mib(x.coordHwmKb))))} | ${fmt(median(rs.map((x) => mib(x.workerHwmKb))))} |`);
  }
  const b = exponent(pts);
  const bWall = exponent(ptsWall);
  const last = pts.at(-1)!;
  const prev = pts.at(-2)!;
  const bTail = Math.log(last.t / prev.t) / Math.log(last.n / prev.n);
  say();
  say(`Fitted exponent (least squares of ln t on ln N over ${pts.length} sizes, job time): **b = ${b.toFixed(3)}** (on the CLI's wall time: ${bWall.toFixed(3)}); slope between the two largest sizes: ${bTail.toFixed(3)}. Goal (b ≤ 1.1): ${goal(b <= 1.1)}.`);
  say();
  say("```json");
  say(JSON.stringify({
    bench: "Scaling",
    fragmentRows: FRAG,
    reps: REPS,
    points: sizes.map((n) => {
      const rs = runs.get(n)!;
      return { rows: n, medianJobMs: r1(median(rs.map((x) => x.jobMs))), jobMs: rs.map((x) => r1(x.jobMs)), medianCliWallMs: r1(median(rs.map((x) => x.wallMs))), cpuMs: Math.round(median(rs.map((x) => x.cpuMs))), coordinatorPeakRssMiB: r1(median(rs.map((x) => mib(x.coordHwmKb)))), workerPeakRssMiB: r1(median(rs.map((x) => mib(x.workerHwmKb)))) };
    }),
    exponent: r3(b),
    exponentCliWall: r3(bWall),
    exponentLargestPair: r3(bTail),
    goalMet: b <= 1.1,
  }));
  say("```");
  say();
}

// =================================================================================================
// P2: CPU-bound scalar UDF, concurrency 2 vs 1
// =================================================================================================
async function benchP2(): Promise<void> {
  const ROWS = args["p2-rows"] !== undefined ? Number(args["p2-rows"]) : QUICK ? 20_000 : 200_000;
  if (!Number.isInteger(ROWS) || ROWS < 8) throw new Error(`--p2-rows: bad size ${args["p2-rows"]}`);
  const FRAGS = 8;
  const REPS = QUICK ? 1 : 3;
  const ROUNDS = "25000";
  say("## P2: CPU-bound UDF — concurrency 2 vs 1");
  say();
  say(`${fmt(ROWS)} rows in ${FRAGS} fragments; scalar UDF \`bench/udfs-suite.ts#cpuBurn\` (${ROUNDS} xorshift rounds per row, ~50 µs of integer math), default options except \`concurrency\`; ${REPS} repetition(s), each backfilling two fresh copies (concurrency 1 and 2, order alternating). Wall = backfill call (bind excluded); ideal = total udfCpuMs / ${CORES} cores.`);
  say();
  const base = await baseTable(ROWS, Math.ceil(ROWS / FRAGS));
  interface Rep {
    c1: LancetRun;
    c2: LancetRun;
  }
  const reps: Rep[] = [];
  await withEnv({ LANCET_BENCH_BURN_ROUNDS: ROUNDS }, async () => {
    for (let r = 0; r < REPS; r++) {
      const got: Partial<Record<1 | 2, LancetRun>> = {};
      for (const c of r % 2 === 0 ? ([1, 2] as const) : ([2, 1] as const)) {
        const dir = copyOf(base, `p2-c${c}`);
        const run = await runLancet(dir, "y", UDF_BURN, { concurrency: c });
        expectRows(run, ROWS, `P2 c${c}`);
        rmSync(dir, { recursive: true, force: true });
        got[c] = run;
      }
      reps.push({ c1: got[1]!, c2: got[2]! });
      note(`P2 rep ${r + 1}/${REPS}: c1 ${fmt(got[1]!.backfillMs)} ms, c2 ${fmt(got[2]!.backfillMs)} ms (udfCpu ${fmt(got[2]!.record.metrics.udfCpuMs)} ms)`);
    }
  });
  dropBase(ROWS, Math.ceil(ROWS / FRAGS));
  say("| rep | c | wall (ms) | udf | udfCpu | read | checkpoint | write | commit (ms) | coordinator CPU (ms) | µs CPU/row | wall ÷ (udfCpu/2) | timeline (s) | diagnosis |");
  say("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|");
  reps.forEach((x, i) => {
    for (const [c, run] of [[1, x.c1], [2, x.c2]] as const) {
      const b = breakdown(run.record.metrics);
      say(`| ${i + 1} | ${c} | ${fmt(run.backfillMs)} | ${fmt(b.udf)} | ${fmt(b.udfCpu)} | ${fmt(b.read)} | ${fmt(b.checkpoint)} | ${fmt(b.write)} | ${fmt(b.commit)} | ${fmt(run.coordCpuMs)} | ${((b.udfCpu * 1000) / ROWS).toFixed(1)} | ${(run.backfillMs / (b.udfCpu / CORES)).toFixed(3)} | ${timelineText(run)} | ${run.record.diagnosis?.summary ?? ""} |`);
    }
  });
  const t1 = median(reps.map((x) => x.c1.backfillMs));
  const t2 = median(reps.map((x) => x.c2.backfillMs));
  const speedup = t1 / t2;
  const eff = median(reps.map((x) => x.c2.backfillMs / (x.c2.record.metrics.udfCpuMs / CORES)));
  const cpuPerRow = median(reps.map((x) => (x.c2.record.metrics.udfCpuMs * 1000) / ROWS));
  say();
  say(`Median wall: concurrency 1 **${fmt(t1)} ms**, concurrency 2 **${fmt(t2)} ms**; speed-up **${speedup.toFixed(2)}×** (per repetition ${reps.map((x) => (x.c1.backfillMs / x.c2.backfillMs).toFixed(2)).join(", ")}). Goal (≥ 1.8×): ${goal(speedup >= 1.8)}.`);
  say(`Concurrency 2: wall ÷ (udfCpuMs / ${CORES} cores) = **${eff.toFixed(3)}** (median of per-repetition ratios; UDF CPU ${cpuPerRow.toFixed(1)} µs/row). Goal (≤ 1.15): ${goal(eff <= 1.15)}.`);
  say();
  say("```json");
  say(JSON.stringify({
    bench: "P2",
    rows: ROWS,
    fragments: FRAGS,
    reps: REPS,
    c1MedianMs: r1(t1),
    c2MedianMs: r1(t2),
    speedup: r3(speedup),
    wallOverIdeal: r3(eff),
    udfCpuUsPerRow: r1(cpuPerRow),
    c1Ms: reps.map((x) => r1(x.c1.backfillMs)),
    c2Ms: reps.map((x) => r1(x.c2.backfillMs)),
    c2UdfCpuMs: reps.map((x) => Math.round(x.c2.record.metrics.udfCpuMs)),
    goalSpeedupMet: speedup >= 1.8,
    goalEfficiencyMet: eff <= 1.15,
  }));
  say("```");
  say();
}

// =================================================================================================
// P3: async UDF against a local HTTP server (20 ms per request)
// =================================================================================================
/**
 * P3's baseline without Lancet: `procs` plain Node processes, each keeping `inflight` fetches to the
 * server going until `perProc` requests are done. Resolves with the slowest process's own wall time
 * (start-up excluded) and the processes' CPU time.
 */
const FETCH_LOOP = `
const url = process.env.LANCET_BENCH_URL;
const n = Number(process.env.LANCET_BENCH_N);
const inflight = Number(process.env.LANCET_BENCH_INFLIGHT);
let next = 0;
const t0 = performance.now();
const lane = async () => {
  while (next < n) {
    const i = next++;
    const r = await fetch(url + "/?id=" + i);
    await r.text();
    if (r.status !== 200) throw new Error("HTTP " + r.status);
  }
};
await Promise.all(Array.from({ length: inflight }, lane));
const cpu = process.cpuUsage();
process.stdout.write(JSON.stringify({ ms: performance.now() - t0, cpuMs: (cpu.user + cpu.system) / 1000 }) + "\\n");
`;
async function rawFetchBaseline(url: string, procs: number, perProc: number, inflight: number): Promise<{ ms: number; cpuMs: number }> {
  const one = (): Promise<{ ms: number; cpuMs: number }> =>
    new Promise((resolve, reject) => {
      const child = spawn(process.execPath, ["--input-type=module", "-e", FETCH_LOOP], {
        stdio: ["ignore", "pipe", "inherit"],
        env: { ...process.env, LANCET_BENCH_URL: url, LANCET_BENCH_N: String(perProc), LANCET_BENCH_INFLIGHT: String(inflight) },
      });
      let out = "";
      child.stdout.on("data", (d: Buffer) => (out += d.toString()));
      child.on("error", reject);
      child.on("close", (code) => {
        if (code !== 0) reject(new Error(`raw fetch baseline exited ${code}`));
        else resolve(JSON.parse(out.trim()) as { ms: number; cpuMs: number });
      });
    });
  const rs = await Promise.all(Array.from({ length: procs }, one));
  return { ms: Math.max(...rs.map((r) => r.ms)), cpuMs: rs.reduce((a, r) => a + r.cpuMs, 0) };
}

async function benchP3(): Promise<void> {
  const ROWS = QUICK ? 4_000 : 20_000;
  const FRAGS = 4;
  const REPS = QUICK ? 1 : 3;
  const DELAY_MS = 20;
  const CONC = 2;
  const INTRA = 64;
  const IDEAL = (CONC * INTRA) / (DELAY_MS / 1000);
  const configs: { name: string; options: BackfillOptions }[] = [
    { name: "defaults", options: { concurrency: CONC, intraApplierConcurrency: INTRA } },
    { name: "tuned", options: { concurrency: CONC, intraApplierConcurrency: INTRA, taskSize: ROWS / FRAGS / 2, checkpointSize: INTRA * 8, maxCheckpointSize: 65536 } },
  ];
  // The request loop is bounded: at most MAX_REQUESTS answered with 200, then 429 (the UDF fails).
  const MAX_REQUESTS = ROWS * REPS * (configs.length + 1) + 10_000;
  let served = 0;
  let refused = 0;
  let latencySum = 0;
  const server = createServer((req, res) => {
    const t0 = performance.now();
    if (served >= MAX_REQUESTS) {
      refused++;
      res.writeHead(429).end("request cap reached");
      return;
    }
    served++;
    const id = Number(new URL(req.url ?? "/", "http://x").searchParams.get("id") ?? "0");
    setTimeout(() => {
      res.writeHead(200, { "content-type": "text/plain" }).end(String(id % 1000));
      latencySum += performance.now() - t0;
    }, DELAY_MS);
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  say(`## P3: async UDF calling a local HTTP server (${DELAY_MS} ms per request)`);
  say();
  say(`A \`node:http\` server in the suite process on ${url.replace(/:\d+$/, ":<port 0>")} answers each request after ${DELAY_MS} ms (at most ${fmt(MAX_REQUESTS)} requests, then 429). UDF \`bench/udfs-suite.ts#httpLookup\`: \`fetch(LANCET_BENCH_URL + "?id=…")\` per row (the workers inherit the variable). ${fmt(ROWS)} rows in ${FRAGS} fragments, concurrency ${CONC}, intraApplierConcurrency ${INTRA}: ideal ${CONC} × ${INTRA} / ${DELAY_MS / 1000} s = **${fmt(IDEAL)} rows/s**. Rows/s = rows ÷ backfill wall time (bind excluded); "compute phase" = rows ÷ (last checkpoint − first checkpoint start), which leaves out pool start-up and the final commits. Two configurations: *defaults* (only concurrency and intraApplierConcurrency set: task size = rows ÷ (concurrency × intra × 2)) and *tuned* (taskSize ${fmt(ROWS / FRAGS / 2)}, checkpointSize ${INTRA * 8} growing adaptively up to 65,536). ${REPS} repetition(s) of each, alternating.`);
  say();
  const runs = new Map<string, LancetRun[]>(configs.map((c) => [c.name, []]));
  const raw: { ms: number; cpuMs: number; suiteCpuMs: number }[] = [];
  const base = await baseTable(ROWS, ROWS / FRAGS);
  try {
    await withEnv({ LANCET_BENCH_URL: url }, async () => {
      for (let r = 0; r < REPS; r++) {
        const c0 = process.cpuUsage();
        const b = await rawFetchBaseline(url, CONC, ROWS / CONC, INTRA);
        const c1 = process.cpuUsage(c0);
        raw.push({ ...b, suiteCpuMs: (c1.user + c1.system) / 1000 });
        note(`P3 raw fetch rep ${r + 1}/${REPS}: ${fmt(b.ms)} ms = ${fmt((ROWS * 1000) / b.ms)} rows/s`);
        for (const c of r % 2 === 0 ? configs : [...configs].reverse()) {
          const dir = copyOf(base, `p3-${c.name}`);
          const run = await runLancet(dir, "y", UDF_HTTP, c.options);
          expectRows(run, ROWS, `P3 ${c.name}`);
          rmSync(dir, { recursive: true, force: true });
          runs.get(c.name)!.push(run);
          note(`P3 ${c.name} rep ${r + 1}/${REPS}: ${fmt(run.backfillMs)} ms = ${fmt((ROWS * 1000) / run.backfillMs)} rows/s`);
        }
      }
    });
  } finally {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
  dropBase(ROWS, ROWS / FRAGS);
  const meanLatency = served > 0 ? latencySum / served : 0;
  say("| config | rep | wall (ms) | rows/s | % of ideal | compute-phase rows/s | task size | tasks | udf | udfCpu | read | checkpoint | write | commit (ms) | suite-process CPU (ms) | timeline (s) |");
  say("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
  const summary: Record<string, unknown>[] = [];
  for (const c of configs) {
    const rs = runs.get(c.name)!;
    rs.forEach((run, i) => {
      const b = breakdown(run.record.metrics);
      const rate = (ROWS * 1000) / run.backfillMs;
      const phase = run.timeline.allCkpMs > run.timeline.planMs ? (ROWS * 1000) / (run.timeline.allCkpMs - run.timeline.planMs) : NaN;
      say(`| ${c.name} | ${i + 1} | ${fmt(run.backfillMs)} | ${fmt(rate)} | ${((rate / IDEAL) * 100).toFixed(1)} % | ${fmt(phase)} | ${fmt(run.record.plan!.taskSize)} | ${run.record.plan!.tasks} | ${fmt(b.udf)} | ${fmt(b.udfCpu)} | ${fmt(b.read)} | ${fmt(b.checkpoint)} | ${fmt(b.write)} | ${fmt(b.commit)} | ${fmt(run.coordCpuMs)} | ${timelineText(run)} |`);
    });
    const t = median(rs.map((x) => x.backfillMs));
    const rate = (ROWS * 1000) / t;
    summary.push({ config: c.name, medianMs: r1(t), rowsPerSec: Math.round(rate), fractionOfIdeal: r3(rate / IDEAL), goalMet: rate >= 0.8 * IDEAL, runsMs: rs.map((x) => r1(x.backfillMs)), taskSize: rs[0]!.record.plan!.taskSize, tasks: rs[0]!.record.plan!.tasks });
  }
  say();
  for (const s of summary) {
    say(`- *${String(s.config)}*: median ${fmt(Number(s.medianMs))} ms → **${fmt(Number(s.rowsPerSec))} rows/s = ${(Number(s.fractionOfIdeal) * 100).toFixed(1)} % of ideal**. Goal (≥ 80 %): ${goal(s.goalMet === true)}.`);
  }
  const rawMs = median(raw.map((x) => x.ms));
  say(`- Baseline without Lancet (same server, ${CONC} plain Node processes each keeping ${INTRA} \`fetch\`es in flight for ${fmt(ROWS / CONC)} requests): median ${fmt(rawMs)} ms → **${fmt((ROWS * 1000) / rawMs)} rows/s = ${(((ROWS * 1000) / rawMs / IDEAL) * 100).toFixed(1)} % of ideal** (runs ${raw.map((x) => fmt(x.ms)).join(", ")} ms; client CPU ${raw.map((x) => fmt(x.cpuMs)).join(", ")} ms, server-process CPU ${raw.map((x) => fmt(x.suiteCpuMs)).join(", ")} ms). What the same client loop achieves on this machine without Lancet: each \`fetch\` costs ~${fmt((median(raw.map((x) => x.cpuMs)) * 1000) / ROWS)} µs of client CPU, so the ${INTRA} answers that arrive together every ~${DELAY_MS} ms take milliseconds to drain on one event loop, and that queueing adds to every request's ${DELAY_MS} ms.`);
  say(`- Server: ${fmt(served)} requests answered, ${refused} refused; mean time in the server ${meanLatency.toFixed(1)} ms per request (the ideal assumes exactly ${DELAY_MS} ms).`);
  say();
  say("```json");
  say(JSON.stringify({ bench: "P3", rows: ROWS, fragments: FRAGS, reps: REPS, concurrency: CONC, intraApplierConcurrency: INTRA, delayMs: DELAY_MS, idealRowsPerSec: IDEAL, rawFetchMedianMs: r1(rawMs), rawFetchRowsPerSec: Math.round((ROWS * 1000) / rawMs), rawFetchFractionOfIdeal: r3((ROWS * 1000) / rawMs / IDEAL), serverMeanMs: r1(meanLatency), requests: served, refused, configs: summary }));
  say("```");
  say();
}

// =================================================================================================
// P4: expanding UDF (4 KB per row) vs the disk's sequential write speed
// =================================================================================================
interface DdResult {
  mode: string;
  mbPerSec: number;
}
function ddWrite(mode: "direct" | "fdatasync"): DdResult {
  const file = path.join(ROOT, `dd-${mode}.bin`);
  const flag = mode === "direct" ? "oflag=direct" : "conv=fdatasync";
  const r = spawnSync("dd", ["if=/dev/zero", `of=${file}`, "bs=1M", "count=512", flag], { encoding: "utf8" });
  rmSync(file, { force: true });
  // "536870912 bytes (537 MB, 512 MiB) copied, 1.40888 s, 381 MB/s"
  const m = /(\d+) bytes .* copied, ([\d.]+) s/.exec(r.stderr);
  if (!m) throw new Error(`could not parse dd output: ${r.stderr}`);
  return { mode, mbPerSec: Number(m[1]) / 1e6 / Number(m[2]) };
}

async function benchP4(): Promise<void> {
  const ROWS = QUICK ? 10_000 : 100_000;
  const REPS = QUICK ? 1 : 3;
  const BYTES = 4096;
  const outMB = (ROWS * BYTES) / 1e6;
  say("## P4: expanding UDF (4 KB per row) — output write speed vs the disk");
  say();
  say(`\`bench/udfs-expand.ts#thumbnail\` with \`LANCET_BENCH_UDF_ROUNDS=1\` (one xorshift pass over 4 KB per row: cheap, and the bytes are pseudo-random so nothing compresses them; with 0 rounds the output would be all zeros), ${fmt(ROWS)} rows → ${fmt(outMB)} MB of output, default options (auto → graft). Layouts: 1 fragment and 8 fragments (built directly with 8 \`add\`s), on fresh copies. Output MB/s = rows × 4,096 B ÷ backfill wall time. Each repetition also measures the disk with \`dd if=/dev/zero of=<file in the suite's directory> bs=1M count=512\`, once with \`oflag=direct\` and once with \`conv=fdatasync\`. ${REPS} repetition(s); layout order alternates.`);
  say();
  const base1 = await baseTable(ROWS, ROWS);
  const base8 = await baseTable(ROWS, ROWS / 8);
  interface Rep {
    ddDirect: number;
    ddSync: number;
    one: LancetRun;
    eight: LancetRun;
    bytesOne: number;
    bytesEight: number;
  }
  const reps: Rep[] = [];
  await withEnv({ LANCET_BENCH_UDF_ROUNDS: "1" }, async () => {
    for (let r = 0; r < REPS; r++) {
      const ddDirect = ddWrite("direct").mbPerSec;
      const ddSync = ddWrite("fdatasync").mbPerSec;
      const got: Partial<Record<1 | 8, { run: LancetRun; bytes: number }>> = {};
      for (const f of r % 2 === 0 ? ([1, 8] as const) : ([8, 1] as const)) {
        const dir = copyOf(f === 1 ? base1 : base8, `p4-${f}`);
        const before = dirBytes(path.join(dir, `${TABLE}.lance`));
        const run = await runLancet(dir, "thumb", UDF_THUMB, {});
        expectRows(run, ROWS, `P4 ${f}`);
        const bytes = dirBytes(path.join(dir, `${TABLE}.lance`)) - before;
        rmSync(dir, { recursive: true, force: true });
        got[f] = { run, bytes };
      }
      reps.push({ ddDirect, ddSync, one: got[1]!.run, eight: got[8]!.run, bytesOne: got[1]!.bytes, bytesEight: got[8]!.bytes });
      note(`P4 rep ${r + 1}/${REPS}: dd direct ${fmt(ddDirect)} MB/s, fdatasync ${fmt(ddSync)} MB/s; 1 fragment ${fmt(got[1]!.run.backfillMs)} ms, 8 fragments ${fmt(got[8]!.run.backfillMs)} ms`);
    }
  });
  dropBase(ROWS, ROWS);
  dropBase(ROWS, ROWS / 8);
  const rate = (run: LancetRun): number => outMB / (run.backfillMs / 1000);
  say("| rep | dd direct (MB/s) | dd fdatasync (MB/s) | layout | wall (ms) | output MB/s | table grew (MB) | udf | checkpoint | write | commit (ms) | timeline (s) | diagnosis |");
  say("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|");
  reps.forEach((x, i) => {
    for (const [label, run, bytes] of [["1 fragment", x.one, x.bytesOne], ["8 fragments", x.eight, x.bytesEight]] as const) {
      const b = breakdown(run.record.metrics);
      say(`| ${i + 1} | ${fmt(x.ddDirect)} | ${fmt(x.ddSync)} | ${label} | ${fmt(run.backfillMs)} | ${fmt(rate(run))} | ${fmt(bytes / 1e6)} | ${fmt(b.udf)} | ${fmt(b.checkpoint)} | ${fmt(b.write)} | ${fmt(b.commit)} | ${timelineText(run)} | ${run.record.diagnosis?.summary ?? ""} |`);
    }
  });
  const ddD = median(reps.map((x) => x.ddDirect));
  const ddS = median(reps.map((x) => x.ddSync));
  const one = median(reps.map((x) => rate(x.one)));
  const eight = median(reps.map((x) => rate(x.eight)));
  say();
  say(`Median disk: ${fmt(ddD)} MB/s (\`oflag=direct\`), ${fmt(ddS)} MB/s (\`conv=fdatasync\`). Median output: **1 fragment ${fmt(one)} MB/s** (${((one / ddS) * 100).toFixed(0)} % of fdatasync dd, ${((one / ddD) * 100).toFixed(0)} % of direct dd); **8 fragments ${fmt(eight)} MB/s** (${((eight / ddS) * 100).toFixed(0)} % of fdatasync dd, ${((eight / ddD) * 100).toFixed(0)} % of direct dd). Every output byte is written twice (checkpoint file, then the table's column file) and read back once in between.`);
  say();
  say("```json");
  say(JSON.stringify({
    bench: "P4",
    rows: ROWS,
    outputMB: r1(outMB),
    reps: REPS,
    ddDirectMBps: r1(ddD),
    ddFdatasyncMBps: r1(ddS),
    oneFragmentMBps: r1(one),
    eightFragmentsMBps: r1(eight),
    oneFragmentMs: reps.map((x) => r1(x.one.backfillMs)),
    eightFragmentsMs: reps.map((x) => r1(x.eight.backfillMs)),
    fractionOfFdatasync: { one: r3(one / ddS), eight: r3(eight / ddS) },
    fractionOfDirect: { one: r3(one / ddD), eight: r3(eight / ddD) },
  }));
  say("```");
  say();
}

// =================================================================================================
// P5: peak RSS for 1 KB outputs, CLI in a child process
// =================================================================================================
interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  wallMs: number;
  json: Record<string, unknown> | undefined;
  stderrTail: string;
  sampler: TreeSampler;
}
function runCli(argv: string[], opts: { detached?: boolean; env?: Record<string, string>; onStart?: (pid: number) => void } = {}): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [BIN, ...argv], { stdio: ["ignore", "pipe", "pipe"], detached: opts.detached === true, env: { ...process.env, ...opts.env } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-8192)));
    const sampler = new TreeSampler(child.pid!).start(200);
    opts.onStart?.(child.pid!);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      sampler.stop();
      const lastLine = stdout.trim().split("\n").at(-1) ?? "";
      let json: Record<string, unknown> | undefined;
      try {
        json = JSON.parse(lastLine) as Record<string, unknown>;
      } catch {
        json = undefined;
      }
      resolve({ code, signal, wallMs: performance.now() - t0, json, stderrTail: stderr.slice(-2000), sampler });
    });
  });
}

async function benchP5(): Promise<void> {
  const FRAG = QUICK ? 20_000 : 100_000;
  const sizes = args["p5-rows"] !== undefined ? args["p5-rows"].split(",").map((s) => Number(s.trim())) : QUICK ? [100_000, 300_000] : [2_500_000, 10_000_000];
  for (const n of sizes) if (!Number.isInteger(n) || n < 1) throw new Error(`--p5-rows: bad size ${n}`);
  const defaultGranularity = (rows: number): number => Math.min(64, Math.max(1, Math.ceil(Math.ceil(rows / FRAG) / 20)));
  say("## P5: peak RSS for 1 KB outputs (graft, CLI)");
  say();
  say(`\`bench/udfs-suite.ts#kilobyte\` (batched, 1 KB of pseudo-random bytes per row) on \`id\`, ${fmt(FRAG)}-row fragments, run as \`node bin/lancet.mjs backfill --db DIR --table t --column blob --commit-mode graft --json\` in a child process (otherwise default options). Every 200 ms the suite reads VmHWM/VmRSS from \`/proc/<pid>/status\` of the CLI process (the coordinator) and of its worker processes (descendants running \`worker-entry.ts\`). One run per size at default options; then, as a control, the largest size again with \`--commit-granularity\` fixed at the smallest size's default (${defaultGranularity(sizes[0]!)}), to separate table size from commit-group size.`);
  say();
  const df = spawnSync("df", ["-B1", "--output=avail", ROOT], { encoding: "utf8" }).stdout.trim().split("\n").at(-1) ?? "0";
  const availGB = Number(df) / 1e9;
  interface P5Run {
    label: string;
    rows: number;
    fragments: number;
    wallMs: number;
    outputGB: number;
    coordMiB: number;
    workerMiB: number;
    treeMiB: number;
    workers: number;
    commitGranularity: number;
    bytesWrittenGB: number;
  }
  const results: P5Run[] = [];
  const runOne = async (rows: number, granularity: number | undefined): Promise<P5Run | undefined> => {
    const needGB = (rows * 1024 * 2.2) / 1e9 + 1;
    if (needGB > availGB * 0.9) {
      say(`- ${fmt(rows)} rows: **skipped**, needs ~${fmt(needGB)} GB (output + checkpoints) and ${fmt(availGB)} GB are free.`);
      return undefined;
    }
    const dir = copyOf(await baseTable(rows, FRAG), `p5-${rowsLabel(rows)}`);
    note(`P5: backfilling ${fmt((rows * 1024) / 1e9, 2)} GB (${fmt(rows)} rows${granularity !== undefined ? `, commit granularity ${granularity}` : ""}) through the CLI`);
    await addColumns({ db: dir, table: TABLE }, { blob: UDF_KB });
    const before = dirBytes(path.join(dir, `${TABLE}.lance`));
    const extra = granularity !== undefined ? ["--commit-granularity", String(granularity)] : [];
    const run = await runCli(["backfill", "--db", dir, "--table", TABLE, "--column", "blob", "--commit-mode", "graft", ...extra, "--json"]);
    if (run.code !== 0 || run.json === undefined || (run.json.metrics as { rowsComputed?: number } | undefined)?.rowsComputed !== rows) {
      throw new Error(`P5 ${rows}: CLI exited ${run.code} (${run.signal}); last JSON ${JSON.stringify(run.json)}; stderr: ${run.stderrTail}`);
    }
    const grown = dirBytes(path.join(dir, `${TABLE}.lance`)) - before;
    rmSync(dir, { recursive: true, force: true });
    const plan = run.json.plan as { commitGranularity?: number } | undefined;
    const r: P5Run = {
      label: granularity !== undefined ? "control (granularity fixed)" : "default options",
      rows,
      fragments: Math.ceil(rows / FRAG),
      wallMs: run.wallMs,
      outputGB: (rows * 1024) / 1e9,
      coordMiB: mib(run.sampler.rootHwmKb),
      workerMiB: mib(run.sampler.workerHwmKb),
      treeMiB: mib(run.sampler.treeRssKb),
      workers: run.sampler.workerPids.size,
      commitGranularity: plan?.commitGranularity ?? granularity ?? defaultGranularity(rows),
      bytesWrittenGB: grown / 1e9,
    };
    note(`P5 ${rowsLabel(rows)} (${r.label}): ${fmt(run.wallMs / 1000, 1)} s; coordinator peak ${fmt(r.coordMiB)} MiB, worker peak ${fmt(r.workerMiB)} MiB`);
    return r;
  };
  for (const rows of sizes) {
    const r = await runOne(rows, undefined);
    if (r) results.push(r);
    if (rows !== sizes.at(-1)) dropBase(rows, FRAG);
  }
  const main = [...results];
  let control: P5Run | undefined;
  if (sizes.length >= 2 && defaultGranularity(sizes.at(-1)!) !== defaultGranularity(sizes[0]!)) {
    control = await runOne(sizes.at(-1)!, defaultGranularity(sizes[0]!));
    if (control) results.push(control);
  }
  dropBase(sizes.at(-1)!, FRAG);
  say("| run | rows | fragments | output (GB) | table grew (GB) | wall (s) | output MB/s | commit granularity | coordinator peak RSS (MiB) | largest worker peak RSS (MiB) | peak tree RSS, summed (MiB) | worker processes |");
  say("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
  for (const r of results) {
    say(`| ${r.label} | ${fmt(r.rows)} | ${r.fragments} | ${r.outputGB.toFixed(2)} | ${r.bytesWrittenGB.toFixed(2)} | ${fmt(r.wallMs / 1000, 1)} | ${fmt((r.outputGB * 1000) / (r.wallMs / 1000))} | ${r.commitGranularity} | **${fmt(r.coordMiB)}** | **${fmt(r.workerMiB)}** | ${fmt(r.treeMiB)} | ${r.workers} |`);
  }
  const peak = Math.max(...main.map((r) => Math.max(r.coordMiB, r.workerMiB)));
  const flat = main.length >= 2 ? main.at(-1)!.coordMiB / main[0]!.coordMiB : NaN;
  const flatControl = control && main.length >= 1 ? control.coordMiB / main[0]!.coordMiB : NaN;
  const underGB = peak <= 1024;
  const met = underGB && flat <= 1.25;
  say();
  say(`Default options: largest per-process peak ${fmt(peak)} MiB; coordinator peak at the largest size ÷ at the smallest: **${flat.toFixed(2)}** (flat ≈ 1).${control ? ` Control at ${fmt(control.rows)} rows with commit granularity ${control.commitGranularity}: coordinator ${fmt(control.coordMiB)} MiB, ${flatControl.toFixed(2)}× the smallest size's.` : ""} Goal (≤ 1 GB per process and flat in table size): ${goal(met)}.`);
  say();
  say("```json");
  say(JSON.stringify({ bench: "P5", fragmentRows: FRAG, runs: results.map((r) => ({ run: r.label, rows: r.rows, wallS: r1(r.wallMs / 1000), coordinatorPeakMiB: r1(r.coordMiB), workerPeakMiB: r1(r.workerMiB), treePeakMiB: r1(r.treeMiB), commitGranularity: r.commitGranularity })), peakMiB: r1(peak), flatRatio: r3(flat), controlFlatRatio: Number.isFinite(flatControl) ? r3(flatControl) : null, goalMet: met }));
  say("```");
  say();
}

// =================================================================================================
// P6: rows recomputed after kill -9 at 50 %
// =================================================================================================
/**
 * Rows a kill left on disk, per fragment: a fragment with a done marker counts its committed rows;
 * any other fragment counts the rows of its checkpoint batch files. (A kill between a fragment's
 * marker and the deletion of its batches leaves both: counted once.)
 */
function checkpointedOnDisk(dir: string, column: string): { batchRows: number; committedRows: number } {
  const ckp = path.join(dir, "_lancet", TABLE, "ckp");
  const batches = new Map<number, number>();
  const committed = new Map<number, number>();
  const batchRoot = path.join(ckp, "batches", column);
  if (existsSync(batchRoot)) {
    for (const d of readdirSync(batchRoot)) {
      const frag = Number(/^(\d+)-/.exec(d)?.[1] ?? NaN);
      for (const f of readdirSync(path.join(batchRoot, d))) {
        const m = /^(\d+)-(\d+)\.arrow$/.exec(f);
        if (m) batches.set(frag, (batches.get(frag) ?? 0) + Number(m[2]) - Number(m[1]));
      }
    }
  }
  const walkMarkers = (d: string): void => {
    if (!existsSync(d)) return;
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walkMarkers(p);
      else if (e.name.endsWith(".json")) {
        try {
          const v = JSON.parse(readFileSync(p, "utf8")) as { fragmentId?: number; rowsWritten?: number };
          if (typeof v.fragmentId === "number") committed.set(v.fragmentId, v.rowsWritten ?? 0);
        } catch {
          // a marker being written
        }
      }
    }
  };
  walkMarkers(path.join(ckp, "markers", column));
  let batchRows = 0;
  for (const [frag, n] of batches) if (!committed.has(frag)) batchRows += n;
  let committedRows = 0;
  for (const n of committed.values()) committedRows += n;
  return { batchRows, committedRows };
}

async function benchP6(): Promise<void> {
  const ROWS = QUICK ? 40_000 : 400_000;
  const FRAGS = 8;
  const REPS = QUICK ? 1 : 3;
  const CKP = 1000;
  const CONC = 2;
  const ROUNDS = "10000";
  const allowance = CONC * CKP;
  say("## P6: rows recomputed after `kill -9` at 50 %");
  say();
  say(`${fmt(ROWS)} rows in ${FRAGS} fragments; scalar UDF \`bench/udfs-suite.ts#cpuBurn\` with ${ROUNDS} rounds (~20 µs per row). The CLI runs \`backfill --concurrency ${CONC} --checkpoint-size ${CKP} --status-interval-ms 200 --json\` in its own process group; the suite polls \`listJobs\` every 100 ms and, once the running job's \`metrics.rowsCheckpointed\` reaches 50 % of \`rowsPlanned\`, sends SIGKILL to the whole group (coordinator and workers). It then counts what is on disk (checkpoint batch files + committed fragments' markers), re-runs the backfill in-process with the same options and checks every row is filled. In-flight allowance = concurrency × checkpoint size = ${fmt(allowance)} rows. ${REPS} repetition(s).`);
  say();
  const base = await baseTable(ROWS, ROWS / FRAGS);
  interface Rep {
    seenAtKill: number;
    onDisk: number;
    committed: number;
    /** Rows the killed run's UDF computed (call counters of its workers). */
    firstRunComputed: number;
    recomputed: number;
    rerunPlanned: number;
    rerunMs: number;
    killAfterMs: number;
  }
  const reps: Rep[] = [];
  await withEnv({ LANCET_BENCH_BURN_ROUNDS: ROUNDS }, async () => {
    for (let r = 0; r < REPS; r++) {
      const dir = copyOf(base, "p6");
      const countDir = freshDir("p6-counts");
      mkdirSync(countDir);
      await addColumns({ db: dir, table: TABLE }, { y: UDF_BURN });
      let killed = false;
      let seenAtKill = 0;
      let killAfterMs = 0;
      const t0 = performance.now();
      let pollTimer: NodeJS.Timeout | undefined;
      let boundTimer: NodeJS.Timeout | undefined;
      const cli = runCli(["backfill", "--db", dir, "--table", TABLE, "--column", "y", "--concurrency", String(CONC), "--checkpoint-size", String(CKP), "--status-interval-ms", "200", "--json"], {
        detached: true,
        env: { LANCET_BENCH_COUNT_DIR: countDir },
        onStart: (pid) => {
          let busy = false;
          pollTimer = setInterval(() => {
            if (busy || killed) return;
            busy = true;
            listJobs(dir, { table: TABLE })
              .then((jobs) => {
                const j = jobs.find((x) => x.status === "running");
                if (!killed && j && j.metrics.rowsPlanned > 0 && j.metrics.rowsCheckpointed >= j.metrics.rowsPlanned / 2) {
                  killed = true;
                  seenAtKill = j.metrics.rowsCheckpointed;
                  killAfterMs = performance.now() - t0;
                  process.kill(-pid, "SIGKILL");
                }
              })
              .catch(() => {})
              .finally(() => {
                busy = false;
              });
          }, 100);
          // Bound: never let a run go on for more than 5 minutes.
          boundTimer = setTimeout(() => {
            if (!killed) {
              killed = true;
              try {
                process.kill(-pid, "SIGKILL");
              } catch {
                // already gone
              }
            }
          }, 300_000);
        },
      });
      const res = await cli;
      clearInterval(pollTimer);
      clearTimeout(boundTimer);
      if (res.signal !== "SIGKILL") throw new Error(`P6: the CLI was not killed (exit ${res.code}, ${res.signal}); it finished before 50 % was seen; stderr: ${res.stderrTail}`);
      // Wait until every process of the group is gone before counting.
      for (let i = 0; i < 50 && res.sampler.workerPids.size > 0 && [...res.sampler.workerPids].some((p) => existsSync(`/proc/${p}`)); i++) await new Promise((x) => setTimeout(x, 100));
      const disk = checkpointedOnDisk(dir, "y");
      let firstRunComputed = 0;
      for (const f of readdirSync(countDir)) firstRunComputed += Number(readFileSync(path.join(countDir, f), "utf8").trim() || "0");
      rmSync(countDir, { recursive: true, force: true });
      const t1 = performance.now();
      const rec = await backfill({ db: dir, table: TABLE }, "y", { concurrency: CONC, checkpointSize: CKP });
      const rerunMs = performance.now() - t1;
      const nulls = await countWhere(dir, "y IS NULL");
      if (nulls !== 0) throw new Error(`P6: ${nulls} rows still null after the re-run`);
      rmSync(dir, { recursive: true, force: true });
      const rep: Rep = { seenAtKill, onDisk: disk.batchRows + disk.committedRows, committed: disk.committedRows, firstRunComputed, recomputed: rec.metrics.rowsComputed, rerunPlanned: rec.metrics.rowsPlanned, rerunMs, killAfterMs };
      reps.push(rep);
      note(`P6 rep ${r + 1}/${REPS}: killed at ${fmt(killAfterMs)} ms with ${fmt(seenAtKill)} rows checkpointed per the job record, ${fmt(rep.onDisk)} on disk, ${fmt(firstRunComputed)} computed; re-run computed ${fmt(rep.recomputed)}`);
    }
  });
  dropBase(ROWS, ROWS / FRAGS);
  say("| rep | killed after (ms) | rowsCheckpointed in the job record at kill | rows the killed run computed | rows on disk after the kill | of which committed | **computed twice** (killed run − on disk) | ÷ allowance | re-run computed | re-run ÷ rows | re-run computed − (rows − on disk) | re-run (ms) |");
  say("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
  const twice = (x: Rep): number => x.firstRunComputed - x.onDisk;
  reps.forEach((x, i) => {
    say(`| ${i + 1} | ${fmt(x.killAfterMs)} | ${fmt(x.seenAtKill)} | ${fmt(x.firstRunComputed)} | ${fmt(x.onDisk)} | ${fmt(x.committed)} | **${fmt(twice(x))}** | ${(twice(x) / allowance).toFixed(2)} | ${fmt(x.recomputed)} | ${((x.recomputed / ROWS) * 100).toFixed(1)} % | ${fmt(x.recomputed - (ROWS - x.onDisk))} | ${fmt(x.rerunMs)} |`);
  });
  const wastedMed = median(reps.map(twice));
  const excessMed = median(reps.map((x) => x.recomputed - (ROWS - x.onDisk)));
  const worst = Math.max(...reps.map(twice));
  say();
  say(`Rows computed twice (by the killed run, lost, and again by the re-run): median **${fmt(wastedMed)}** (max ${fmt(worst)}) of ${fmt(ROWS)} rows = ${((wastedMed / ROWS) * 100).toFixed(2)} %, against an in-flight allowance of ${fmt(allowance)} (${CONC} workers × one ${fmt(CKP)}-row batch): ${goal(worst <= allowance)} (within the allowance). The re-run computed ${reps.map((x) => fmt(x.recomputed)).join(", ")} rows (median ${((median(reps.map((x) => x.recomputed)) / ROWS) * 100).toFixed(1)} % of the table: the half never reached plus the lost in-flight batches), exactly the rows not on disk (median difference ${fmt(excessMed)}); every checkpointed batch and committed fragment was kept. "Killed run computed" counts UDF calls in its workers (a call counter each worker rewrites in place).`);
  say();
  say("```json");
  say(JSON.stringify({ bench: "P6", rows: ROWS, fragments: FRAGS, checkpointSize: CKP, concurrency: CONC, allowance, reps: reps.map((x) => ({ killAfterMs: Math.round(x.killAfterMs), checkpointedPerRecord: x.seenAtKill, firstRunComputed: x.firstRunComputed, onDisk: x.onDisk, committed: x.committed, computedTwice: twice(x), rerunComputed: x.recomputed, rerunExcessOverMissing: x.recomputed - (ROWS - x.onDisk) })), medianComputedTwice: wastedMed, maxComputedTwice: worst, medianRerunComputed: median(reps.map((x) => x.recomputed)), goalMet: worst <= allowance }));
  say("```");
  say();
}

// =================================================================================================
// P8: planning time for 10,000 fragments
// =================================================================================================
async function benchP8(): Promise<void> {
  const TARGET = QUICK ? 500 : 10_000;
  const POINTS = QUICK ? [100, 500] : [1_000, 10_000];
  const ROWS_PER = 10;
  const REPS = 5;
  say("## P8: planning time for many fragments");
  say();
  say(`A table built with one \`table.add\` of ${ROWS_PER} rows per fragment (\`id\`, \`x\`), up to ${fmt(TARGET)} fragments (so also ${fmt(TARGET)} versions). At ${POINTS.map((p) => fmt(p)).join(" and ")} fragments the suite binds \`bench/udfs.ts#double\` (on a copy for the smaller point) and times \`backfill(ref, "y", { planOnly: true })\` ${REPS} times: the whole call (check the column and its binding, open the table, read the manifest, list markers and checkpoints per fragment, plan).`);
  say();
  const dir = freshDir("p8");
  const db = await lancedb.connect(dir);
  let table: Awaited<ReturnType<typeof db.createTable>> | undefined;
  const t0 = performance.now();
  const addMs: { at: number; msPerAdd: number }[] = [];
  let lap = performance.now();
  const points: { fragments: number; bindMs: number; planMs: number[]; tasks: number; buildS: number }[] = [];
  const measure = async (fragments: number, where: string): Promise<void> => {
    const ref = { db: where, table: TABLE };
    const b0 = performance.now();
    await addColumns(ref, { y: UDF_DOUBLE });
    const bindMs = performance.now() - b0;
    const planMs: number[] = [];
    let tasks = 0;
    for (let i = 0; i < REPS; i++) {
      const p0 = performance.now();
      const r = await backfill(ref, "y", { planOnly: true });
      planMs.push(performance.now() - p0);
      tasks = r.plan!.tasks;
      if (r.plan!.fragmentsToWrite !== fragments) throw new Error(`P8: planned ${r.plan!.fragmentsToWrite} fragments, expected ${fragments}`);
    }
    points.push({ fragments, bindMs, planMs, tasks, buildS: (performance.now() - t0) / 1000 });
    note(`P8 ${fmt(fragments)} fragments: plan ${planMs.map((x) => fmt(x)).join(", ")} ms`);
  };
  for (let f = 0; f < TARGET; f++) {
    const ids = new BigInt64Array(ROWS_PER);
    const xs = new Float64Array(ROWS_PER);
    for (let i = 0; i < ROWS_PER; i++) {
      ids[i] = BigInt(f * ROWS_PER + i);
      xs[i] = f + i * 0.5;
    }
    const data = new arrow.Table({ id: arrow.makeVector(ids), x: arrow.makeVector(xs) });
    if (table === undefined) table = await db.createTable(TABLE, data);
    else await table.add(data);
    const done = f + 1;
    if (done % (QUICK ? 100 : 1000) === 0) {
      const now = performance.now();
      addMs.push({ at: done, msPerAdd: (now - lap) / (QUICK ? 100 : 1000) });
      note(`P8: ${fmt(done)} fragments (${fmt((now - t0) / 1000, 1)} s; last adds ${((now - lap) / (QUICK ? 100 : 1000)).toFixed(1)} ms each)`);
      lap = now;
    }
    if (POINTS.includes(done) && done !== TARGET) {
      const copy = freshDir(`p8-${done}`);
      cpSync(dir, copy, { recursive: true });
      await measure(done, copy);
      rmSync(copy, { recursive: true, force: true });
      lap = performance.now();
    }
  }
  const buildS = (performance.now() - t0) / 1000;
  table!.close();
  db.close();
  await measure(TARGET, dir);
  rmSync(dir, { recursive: true, force: true });
  say(`Building ${fmt(TARGET)} fragments took ${fmt(buildS, 0)} s (one \`add\` each; the adds slow down as the manifest grows: ${addMs.map((x) => `${x.msPerAdd.toFixed(1)} ms at ${fmt(x.at)}`).join(", ")}).`);
  say();
  say("| fragments | bind (ms) | planOnly runs (ms) | median (ms) | ms per fragment | tasks |");
  say("|---:|---:|---|---:|---:|---:|");
  for (const p of points) {
    const m = median(p.planMs);
    say(`| ${fmt(p.fragments)} | ${fmt(p.bindMs)} | ${p.planMs.map((x) => fmt(x)).join(", ")} | **${fmt(m)}** | ${(m / p.fragments).toFixed(3)} | ${fmt(p.tasks)} |`);
  }
  say();
  const big = points.at(-1)!;
  say(`Planning ${fmt(big.fragments)} fragments: median **${fmt(median(big.planMs))} ms = ${(median(big.planMs) / big.fragments).toFixed(3)} ms per fragment**.`);
  say();
  say("```json");
  say(JSON.stringify({ bench: "P8", rowsPerFragment: ROWS_PER, buildS: r1(buildS), points: points.map((p) => ({ fragments: p.fragments, bindMs: r1(p.bindMs), planMedianMs: r1(median(p.planMs)), planMs: p.planMs.map(r1), msPerFragment: r3(median(p.planMs) / p.fragments) })) }));
  say("```");
  say();
}

// =================================================================================================
const facts = machineFacts();
say(`# Lancet benchmark suite${QUICK ? " (--quick)" : ""}`);
say();
say(`- Date: ${String(facts.date)}; ${CORES} cores (${String(facts.cpuModel)}), ${String(facts.memGiB)} GiB RAM; Node ${process.version}; @lancedb/lancedb ${String(facts.lancedb)}, apache-arrow ${String(facts.apacheArrow)}`);
say(`- Working directory: ${ROOT} (\`df\`: ${String(facts.df)})`);
say(`- Benchmarks: ${[...ONLY].join(", ")}`);
say();
const timings: Record<string, number> = {};
const runners: Record<BenchName, () => Promise<void>> = { P1: benchP1, SCALING: benchScaling, P2: benchP2, P3: benchP3, P4: benchP4, P5: benchP5, P6: benchP6, P8: benchP8 };
try {
  for (const name of ALL) {
    if (!ONLY.has(name)) continue;
    const t0 = performance.now();
    note(`${name}: start`);
    await runners[name]();
    timings[name] = Math.round((performance.now() - t0) / 1000);
    note(`${name}: done in ${timings[name]} s`);
  }
} finally {
  rmSync(ROOT, { recursive: true, force: true });
}
const totalS = Math.round((performance.now() - suiteStart) / 1000);
say(`Suite wall time: ${totalS} s (${Object.entries(timings).map(([k, v]) => `${k} ${v} s`).join(", ")}).`);
say();
say(JSON.stringify({ bench: "suite", ...facts, wallS: totalS, perBenchS: timings }));
