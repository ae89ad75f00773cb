/**
 * What the benchmark suite's modules share (bench/suite.ts runs them): option parsing, the suite's
 * working directory and base tables ({@link Suite}), printing and number formatting, medians,
 * /proc sampling of peak RSS and CPU time ({@link TreeSampler}), running a backfill in this process
 * ({@link runLancet}) or the CLI in a child process ({@link runCli}), and the stage breakdown and
 * timeline text the tables show. Importing this module has no side effects.
 */
import { buildXTable } from "../tables.ts";
import { spawn, spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { availableParallelism, cpus, totalmem, tmpdir } from "node:os";
import * as path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { lancedb } from "../../src/arrow.ts";
import { addColumns, backfill, type BackfillOptions, type JobMetrics, type JobRecord } from "../../src/index.ts";

// ---- arguments ----------------------------------------------------------------------------------
export const ALL = ["P1", "SCALING", "P2", "P3", "P4", "P5", "P6", "P8"] as const;
export type BenchName = (typeof ALL)[number];
export interface SuiteOptions {
  quick: boolean;
  only: Set<BenchName>;
  /** `--p2-rows`, as given (P2 checks it). */
  p2Rows: string | undefined;
  /** `--p5-rows`, as given (P5 checks it). */
  p5Rows: string | undefined;
}
/** Parses the suite's command line (`--only`, `--quick`, `--p5-rows`, `--p2-rows`) from process.argv. */
export function parseSuiteOptions(): SuiteOptions {
  const { values: args } = parseArgs({
    options: {
      only: { type: "string" },
      quick: { type: "boolean", default: false },
      "p5-rows": { type: "string" },
      "p2-rows": { type: "string" },
    },
  });
  const only: Set<BenchName> = (() => {
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
  return { quick: args.quick === true, only, p2Rows: args["p2-rows"], p5Rows: args["p5-rows"] };
}

// ---- paths and constants ------------------------------------------------------------------------
/** The bench/ directory. */
const BENCH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const REPO = path.resolve(BENCH, "..");
const BIN = path.join(REPO, "bin", "lancet.mjs");
export const UDF_DOUBLE = `${path.join(BENCH, "udfs.ts")}#double`;
export const UDF_THUMB = `${path.join(BENCH, "udfs-expand.ts")}#thumbnail`;
const SUITE_UDFS = path.join(BENCH, "udfs-suite.ts");
export const UDF_BURN = `${SUITE_UDFS}#cpuBurn`;
export const UDF_HTTP = `${SUITE_UDFS}#httpLookup`;
export const UDF_KB = `${SUITE_UDFS}#kilobyte`;
export const TABLE = "t";
export const CORES = availableParallelism();

// ---- small helpers ------------------------------------------------------------------------------
export const say = (s = ""): void => void process.stdout.write(s + "\n");
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
export const fmt = (n: number, digits = 0): string =>
  Number.isFinite(n) ? n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits }) : String(n);
export const r1 = (n: number): number => Math.round(n * 10) / 10;
export const r3 = (n: number): number => Math.round(n * 1000) / 1000;
export const mib = (kb: number): number => kb / 1024;
export const rowsLabel = (n: number): string => (n >= 1e6 && n % 1e5 === 0 ? `${n / 1e6}M` : n >= 1e3 && n % 100 === 0 ? `${n / 1e3}k` : String(n));
export const goal = (met: boolean): string => (met ? "**met**" : "**not met**");
export function dirBytes(dir: string): number {
  let total = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += dirBytes(p);
    else if (e.isFile()) total += statSync(p).size;
  }
  return total;
}
export function withEnv<T>(vars: Record<string, string>, f: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  Object.assign(process.env, vars);
  return f().finally(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });
}

// ---- process memory: /proc ----------------------------------------------------------------------
export interface ProcMem {
  rssKb: number;
  hwmKb: number;
}
export function readMem(pid: number): ProcMem | undefined {
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
export function resetPeakRss(): boolean {
  try {
    writeFileSync("/proc/self/clear_refs", "5");
    return true;
  } catch {
    return false;
  }
}
export function descendants(root: number): number[] {
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
export function childrenCpuMs(): number {
  try {
    const st = readFileSync("/proc/self/stat", "utf8");
    const f = st.slice(st.lastIndexOf(")") + 2).split(" ");
    return (Number(f[13]) + Number(f[14])) * 10; // clock ticks of 10 ms (CLK_TCK = 100)
  } catch {
    return NaN;
  }
}
export function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ");
  } catch {
    return "";
  }
}

/** Samples the peak RSS (VmHWM, and VmRSS) of a process and of its worker processes every `intervalMs`. */
export class TreeSampler {
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

// ---- the suite: working directory, base tables, progress notes ----------------------------------
/** Builds table `t` (`id` int64, `x` float64) with `rows` rows in fragments of `fragRows` rows (one `add` each). */
export function buildTable(dir: string, rows: number, fragRows: number): Promise<void> {
  return buildXTable(dir, TABLE, rows, fragRows);
}

/**
 * One run of the suite: its options, its `fs.mkdtempSync` directory under `os.tmpdir()` (made here,
 * removed by {@link close}), the base tables built so far, and the clock progress notes count from.
 */
export class Suite {
  readonly options: SuiteOptions;
  readonly quick: boolean;
  readonly only: Set<BenchName>;
  readonly root: string;
  readonly start = performance.now();
  private dirSeq = 0;
  private readonly bases = new Map<string, string>();

  constructor(options: SuiteOptions) {
    this.options = options;
    this.quick = options.quick;
    this.only = options.only;
    this.root = mkdtempSync(path.join(tmpdir(), "lancet-suite-"));
  }

  /** A progress note on stderr, stamped with the seconds since the suite started. */
  note(s: string): void {
    process.stderr.write(`[${((performance.now() - this.start) / 1000).toFixed(0).padStart(4)} s] ${s}\n`);
  }

  freshDir(label: string): string {
    return path.join(this.root, `${label}-${++this.dirSeq}`);
  }

  /** A base table, built once per suite run and shared (never written to): copy it with {@link copyOf}. */
  async baseTable(rows: number, fragRows: number): Promise<string> {
    const key = `${rows}/${fragRows}`;
    let dir = this.bases.get(key);
    if (dir === undefined) {
      dir = this.freshDir(`base-${rowsLabel(rows)}-${rowsLabel(fragRows)}`);
      const t0 = performance.now();
      await buildTable(dir, rows, fragRows);
      this.note(`built base table ${fmt(rows)} rows in ${Math.ceil(rows / fragRows)} fragments (${fmt((performance.now() - t0) / 1000, 1)} s)`);
      this.bases.set(key, dir);
    }
    return dir;
  }

  copyOf(base: string, label: string): string {
    const dir = this.freshDir(label);
    cpSync(base, dir, { recursive: true });
    return dir;
  }

  dropBase(rows: number, fragRows: number): void {
    const key = `${rows}/${fragRows}`;
    const dir = this.bases.get(key);
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    this.bases.delete(key);
  }

  /** Removes the suite's directory. */
  close(): void {
    rmSync(this.root, { recursive: true, force: true });
  }

  machineFacts(): Record<string, unknown> {
    const pkg = (p: string): string => {
      try {
        return (JSON.parse(readFileSync(path.join(REPO, "node_modules", p, "package.json"), "utf8")) as { version: string }).version;
      } catch {
        return "?";
      }
    };
    const df = spawnSync("df", ["-h", this.root], { encoding: "utf8" }).stdout.trim().split("\n").at(-1) ?? "";
    return {
      date: new Date().toISOString(),
      cpus: CORES,
      cpuModel: cpus()[0]?.model.trim() ?? "unknown",
      memGiB: Math.round(totalmem() / 2 ** 30),
      node: process.version,
      lancedb: pkg("@lancedb/lancedb"),
      apacheArrow: pkg("apache-arrow"),
      tmp: this.root,
      df,
      quick: this.quick,
    };
  }
}

export async function countWhere(dir: string, filter: string): Promise<number> {
  const db = await lancedb.connect(dir);
  const table = await db.openTable(TABLE);
  const n = await table.countRows(filter);
  table.close();
  db.close();
  return n;
}

// ---- running Lancet in this process -------------------------------------------------------------
export interface Timeline {
  /** ms from the backfill call: plan ready (first progress report). */
  planMs: number;
  /** First checkpointed batch (pool started, first read + UDF + checkpoint done). */
  firstCkpMs: number;
  /** Every planned row checkpointed. */
  allCkpMs: number;
}
export interface LancetRun {
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

export async function runLancet(dir: string, column: string, udf: string, options: BackfillOptions = {}, sampleMemory = false): Promise<LancetRun> {
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

export function expectRows(run: LancetRun, rows: number, what: string): void {
  const m = run.record.metrics;
  if (m.rowsComputed !== rows || m.rowsCommitted !== rows) throw new Error(`${what}: computed ${m.rowsComputed} and committed ${m.rowsCommitted} rows; expected ${rows}`);
}

/** `setup → first checkpoint → all checkpointed → end` as one compact string (seconds). */
export function timelineText(run: LancetRun): string {
  const t = run.timeline;
  const s = (ms: number): string => (ms / 1000).toFixed(2);
  return `plan ${s(t.planMs)} · 1st ckp ${s(t.firstCkpMs)} · all ckp ${s(t.allCkpMs)} · end ${s(run.backfillMs)}`;
}

/** Stage breakdown of a job: summed worker/writer times and the coordinator's commit time, ms. */
export function breakdown(m: JobMetrics): { udf: number; udfCpu: number; read: number; checkpoint: number; write: number; commit: number; commits: number } {
  return { udf: Math.round(m.udfMs), udfCpu: Math.round(m.udfCpuMs), read: Math.round(m.readMs), checkpoint: Math.round(m.checkpointMs), write: Math.round(m.writeMs), commit: Math.round(m.commitMs), commits: m.commits };
}

// ---- running the CLI in a child process ---------------------------------------------------------
export interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  wallMs: number;
  json: Record<string, unknown> | undefined;
  stderrTail: string;
  sampler: TreeSampler;
}
/** Runs `node bin/lancet.mjs …argv`, sampling its memory and its workers' every 200 ms; its last stdout line is parsed as JSON. */
export function runCli(argv: string[], opts: { detached?: boolean; env?: Record<string, string>; onStart?: (pid: number) => void } = {}): Promise<CliRun> {
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
