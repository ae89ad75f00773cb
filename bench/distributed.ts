/**
 * Benchmark: distributed mode (BullMQ on Redis, `lancet worker` processes) against the embedded
 * executor, side by side in one run on this machine.
 *
 *   node bench/distributed.ts                  # 3 repetitions (~2 min on 2 cores); also run by `npm run bench`
 *   node bench/distributed.ts --reps 1 --scale-rows 8000 --ovh-rows 1000   # a quick smoke run
 *
 * Defaults: overhead 4,000 rows in 2 fragments, taskSize 16, checkpointSize 16 (250 tasks),
 * concurrency 2; round trip 500 no-op tasks; scaling 64,000 rows in 8 fragments
 * (Lancet's default task size: 8,000 = one task per fragment, 8 tasks; `--scale-task-size N` sets
 * one), 150,000 rounds per row, coordinator concurrency 2. Needs redis-server on the PATH (the
 * benchmark says so and exits 0 without it, like the distributed tests).
 *
 * Starts its own redis-server (test/redis.ts: a free loopback port, no persistence, stopped by PID)
 * and its own `node bin/lancet.mjs worker` processes, each on its own base queue so the
 * configurations never share a worker:
 *   - `bench-ovh`: one worker with `--concurrency` = the embedded run's concurrency (2);
 *   - `bench-w1`:  one worker, `--concurrency 1`;
 *   - `bench-w2`:  two workers, `--concurrency 1` each.
 * Workers are started once, before the measurements (their start-up is not timed), and stopped with
 * SIGTERM at the end. A worker starts its pool of UDF processes for a table on that table's first
 * task, so each backfill below pays one pool start-up in either mode.
 *
 * Measurements, in every repetition (configurations interleaved, order rotating between repetitions),
 * each on a fresh copy of a base table built once:
 *   1. Per-task overhead: `y = x * 2` (bench/udfs.ts#double, batched) on a small table cut into many
 *      small tasks (fixed taskSize and checkpointSize: one batch per task), embedded vs queue, same
 *      concurrency. Overhead per task = (queue wall − embedded wall) / tasks.
 *   2. Raw round trip: no-op tasks (a TaskSpec with no row ranges) sent one at a time through the
 *      embedded pool (`LocalPool.runTask`, an IPC round trip to a child process) and through the
 *      queue (`QueueExecutor.runTask`: enqueue, a worker takes it, completes it, the coordinator hears
 *      the completion), after a warm-up that starts the pools.
 *   3. Scaling: a CPU-bound scalar UDF (bench/udfs-distributed.ts#spin, ~250 µs of integer math per
 *      row) through the queue on 1 worker and on 2 workers (coordinator concurrency 2 in both), plus
 *      the embedded executor at concurrency 2 for reference.
 *      `--no-local-ref` leaves the embedded reference out.
 * Every result is checked (rows computed and committed = rows; `countRows` of the filled column).
 * CPU, from /proc, sampled before and after each measurement (10 ms resolution): the coordinator's
 * process tree (this process; in embedded runs also its pool's processes; never the workers), each
 * worker's process tree and, in brackets, the `lancet worker` process alone; redis-server; and
 * "others'": the machine's busy time (/proc/stat) minus all of the above, i.e. what other processes
 * on this (shared) machine took meanwhile. Redis commands: `total_commands_processed` from INFO (it
 * counts the commands run inside BullMQ's Lua scripts too) and the Lua script calls (INFO commandstats).
 * Prints Markdown tables and, last, a one-line JSON summary to stdout; progress notes go to stderr.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { availableParallelism, cpus, tmpdir } from "node:os";
import * as path from "node:path";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Redis } from "ioredis";
import { lancedb } from "../src/arrow.ts";
import { addColumns, backfill, type BackfillOptions, type JobRecord } from "../src/index.ts";
import { QueueExecutor } from "../src/exec/bullmq/executor.ts";
import { LocalPool } from "../src/exec/pool.ts";
import type { Executor, TaskSpec, WorkerConfig } from "../src/exec/protocol.ts";
import { RedisServer, redisAvailable } from "../test/redis.ts";
import { buildXTable } from "./tables.ts";

const { values: args } = parseArgs({
  options: {
    reps: { type: "string", default: "3" },
    "ovh-rows": { type: "string", default: "4000" },
    "ovh-fragments": { type: "string", default: "2" },
    "ovh-task-size": { type: "string", default: "16" },
    "ovh-checkpoint-size": { type: "string", default: "16" },
    "ovh-concurrency": { type: "string", default: "2" },
    "rt-tasks": { type: "string", default: "500" },
    "scale-rows": { type: "string", default: "64000" },
    "scale-fragments": { type: "string", default: "8" },
    "scale-task-size": { type: "string", default: "auto" },
    "scale-concurrency": { type: "string", default: "2" },
    "spin-rounds": { type: "string", default: "150000" },
    "no-local-ref": { type: "boolean", default: false },
  },
});
function intArg(name: keyof typeof args, min: number): number {
  const v = args[name];
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min} (got ${String(v)})`);
  return n;
}
const REPS = intArg("reps", 1);
const OVH_ROWS = intArg("ovh-rows", 1);
const OVH_FRAGS = Math.min(OVH_ROWS, intArg("ovh-fragments", 1));
const OVH_TASK = intArg("ovh-task-size", 1);
const OVH_CKP = intArg("ovh-checkpoint-size", 1);
const OVH_C = intArg("ovh-concurrency", 1);
const RT_TASKS = intArg("rt-tasks", 1);
const SCALE_ROWS = intArg("scale-rows", 1);
const SCALE_FRAGS = Math.min(SCALE_ROWS, intArg("scale-fragments", 1));
/** undefined: Lancet's default (rows ÷ (concurrency × 2), at most a fragment). */
const SCALE_TASK = args["scale-task-size"] === "auto" ? undefined : intArg("scale-task-size", 1);
const SCALE_C = intArg("scale-concurrency", 2);
const SPIN_ROUNDS = intArg("spin-rounds", 1);
const LOCAL_REF = !args["no-local-ref"];
const CORES = availableParallelism();

const REPO = fileURLToPath(new URL("..", import.meta.url));
const LANCET = path.join(REPO, "bin/lancet.mjs");
const DOUBLE = `${fileURLToPath(new URL("./udfs.ts", import.meta.url))}#double`;
const SPIN = `${fileURLToPath(new URL("./udfs-distributed.ts", import.meta.url))}#spin`;
const TABLE = "t";
const Q_OVH = "bench-ovh";
const Q_W1 = "bench-w1";
const Q_W2 = "bench-w2";

const note = (s: string): void => void process.stderr.write(s + "\n");
const say = (s = ""): void => void process.stdout.write(s + "\n");
function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length === 0 ? NaN : s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
function quantile(xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
}
const fmt = (n: number, digits = 0): string => (Number.isFinite(n) ? n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits }) : "—");
const r1 = (n: number): number => Math.round(n * 10) / 10;
const r3 = (n: number): number => Math.round(n * 1000) / 1000;

// ---- CPU of process trees, from /proc ---------------------------------------------------------
const TICK_MS = 10; // USER_HZ = 100 on Linux
interface ProcStat {
  ppid: number;
  /** utime + stime, ms. */
  selfMs: number;
  /** utime + stime + cutime + cstime, ms. */
  cpuMs: number;
}
/** Busy (user + nice + system + irq + softirq) and steal time of the whole machine, ms, from /proc/stat. */
function machineCpu(): { busyMs: number; stealMs: number } {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  return { busyMs: (f[0]! + f[1]! + f[2]! + f[5]! + f[6]!) * TICK_MS, stealMs: (f[7] ?? 0) * TICK_MS };
}
interface Snapshot {
  procs: Map<number, ProcStat>;
  machine: { busyMs: number; stealMs: number };
}
function snapshot(): Snapshot {
  return { procs: procTable(), machine: machineCpu() };
}
function procTable(): Map<number, ProcStat> {
  const out = new Map<number, ProcStat>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const s = readFileSync(`/proc/${name}/stat`, "utf8");
      const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
      // f[0] = state (field 3); ppid = field 4; utime..cstime = fields 14..17.
      const self = (Number(f[11]) + Number(f[12])) * TICK_MS;
      out.set(Number(name), { ppid: Number(f[1]), selfMs: self, cpuMs: self + (Number(f[13]) + Number(f[14])) * TICK_MS });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}
/**
 * CPU of `pid` and its live descendants (children that exited were reaped into their parent's
 * cutime), leaving out the subtrees of `exclude` (this process's children that are `lancet worker`s).
 */
function treeCpuMs(table: Map<number, ProcStat>, pid: number, exclude: ReadonlySet<number> = new Set()): number {
  if (exclude.has(pid)) return 0;
  let sum = table.get(pid)?.cpuMs ?? 0;
  for (const [p, s] of table) if (s.ppid === pid) sum += treeCpuMs(table, p, exclude);
  return sum;
}
/** CPU of the coordinator: this process and its descendants other than the worker processes. */
function coordCpuMs(table: Map<number, ProcStat>): number {
  return treeCpuMs(table, process.pid, new Set(workers.map((w) => w.pid)));
}

// ---- worker processes ---------------------------------------------------------------------------
interface WorkerProc {
  readonly name: string;
  readonly pid: number;
  readonly child: ChildProcess;
  output(): string;
  stop(): Promise<{ ms: number; how: string }>;
}
const workers: WorkerProc[] = [];

async function startWorker(name: string, url: string, queue: string, concurrency: number): Promise<WorkerProc> {
  const child = spawn(process.execPath, [LANCET, "worker", "--redis", url, "--queue", queue, "--concurrency", String(concurrency)], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  const keep = (d: Buffer): void => void (out = (out + d.toString()).slice(-20_000));
  child.stdout!.on("data", keep);
  child.stderr!.on("data", keep);
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const deadline = Date.now() + 30_000;
  while (!out.includes("taking tasks from")) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`worker ${name} did not start: ${out}`);
    await sleep(50);
  }
  const w: WorkerProc = {
    name,
    pid: child.pid!,
    child,
    output: () => out,
    stop: async () => {
      const t0 = performance.now();
      if (child.exitCode !== null || child.signalCode !== null) return { ms: 0, how: "already exited" };
      child.kill("SIGTERM");
      const timer = new AbortController();
      const done = await Promise.race([exited.then(() => true), sleep(30_000, false, { signal: timer.signal }).catch(() => false)]);
      timer.abort();
      if (done) return { ms: performance.now() - t0, how: `exited (code ${child.exitCode}, signal ${child.signalCode})` };
      child.kill("SIGKILL");
      await exited;
      return { ms: performance.now() - t0, how: "did not exit within 30 s of SIGTERM; killed" };
    },
  };
  workers.push(w);
  return w;
}

if (!redisAvailable()) {
  note("bench/distributed.ts: skipped: redis-server is not installed (apt-get install -y redis-server)");
  say(JSON.stringify({ bench: "distributed", skipped: "redis-server is not installed" }));
  process.exit(0);
}

// ---- setup --------------------------------------------------------------------------------------
const tStart = performance.now();
const root = mkdtempSync(path.join(tmpdir(), "lancet-bench-dist-"));
let redisServer: RedisServer | undefined;
let redis: Redis | undefined;
let cleaned = false;
const stops: { name: string; ms: number; how: string }[] = [];
async function cleanup(): Promise<void> {
  if (cleaned) return;
  cleaned = true;
  for (const r of await Promise.all(workers.map(async (w) => ({ name: w.name, ...(await w.stop()) })))) {
    stops.push(r);
    note(`stopped worker ${r.name} with SIGTERM: ${r.how} after ${fmt(r.ms)} ms`);
  }
  redis?.disconnect();
  await redisServer?.stop();
  rmSync(root, { recursive: true, force: true });
}
process.once("SIGINT", () => void cleanup().finally(() => process.exit(130)));

function redisPid(s: RedisServer): number {
  return Number(readFileSync(path.join(s.dir, "redis.pid"), "utf8").trim());
}
/** Commands Redis processed so far (INFO stats; commands run inside Lua scripts count too). */
async function redisCommands(): Promise<number> {
  const info = await redis!.info("stats");
  return Number(/total_commands_processed:(\d+)/.exec(info)?.[1] ?? NaN);
}
/** Lua script calls (EVALSHA + EVAL) Redis answered so far (INFO commandstats). */
async function redisScriptCalls(): Promise<number> {
  const info = await redis!.info("commandstats");
  let n = 0;
  for (const m of info.matchAll(/^cmdstat_(?:evalsha|eval):calls=(\d+)/gm)) n += Number(m[1]);
  return n;
}

// ---- one backfill -------------------------------------------------------------------------------
interface Run {
  config: string;
  rep: number;
  wallMs: number;
  bindMs: number;
  record: JobRecord;
  firstCkpMs: number;
  allCkpMs: number;
  coordCpuMs: number;
  /** CPU of each worker's process tree (queue runs), in the order of `workerNames`. */
  workerCpuMs: number[];
  /** Of which the `lancet worker` process itself (queue client, lock renewal, cancel polls), not its pool of UDF processes. */
  workerMainCpuMs: number[];
  workerNames: string[];
  redisCpuMs: number;
  redisCommands: number;
  /** CPU the rest of the machine used meanwhile (machine busy time − this benchmark's processes and redis-server). */
  othersCpuMs: number;
  /** Time the hypervisor ran something else on this VM's vCPUs. */
  stealMs: number;
}

interface CpuDelta {
  coordCpuMs: number;
  workerCpuMs: number[];
  workerMainCpuMs: number[];
  redisCpuMs: number;
  othersCpuMs: number;
  stealMs: number;
}
function cpuDelta(a: Snapshot, b: Snapshot, ws: readonly WorkerProc[]): CpuDelta {
  const rpid = redisPid(redisServer!);
  const redisCpuMs = (b.procs.get(rpid)?.cpuMs ?? 0) - (a.procs.get(rpid)?.cpuMs ?? 0);
  const ours = treeCpuMs(b.procs, process.pid) - treeCpuMs(a.procs, process.pid) + redisCpuMs;
  return {
    coordCpuMs: coordCpuMs(b.procs) - coordCpuMs(a.procs),
    workerCpuMs: ws.map((w) => treeCpuMs(b.procs, w.pid) - treeCpuMs(a.procs, w.pid)),
    workerMainCpuMs: ws.map((w) => (b.procs.get(w.pid)?.selfMs ?? 0) - (a.procs.get(w.pid)?.selfMs ?? 0)),
    redisCpuMs,
    othersCpuMs: Math.max(0, b.machine.busyMs - a.machine.busyMs - ours),
    stealMs: b.machine.stealMs - a.machine.stealMs,
  };
}

async function runBackfill(config: string, rep: number, base: string, column: string, udf: string, options: BackfillOptions, ws: readonly WorkerProc[], rows: number, check: string): Promise<Run> {
  const dir = path.join(root, `${config}-rep${rep}`);
  cpSync(base, dir, { recursive: true });
  const ref = { db: dir, table: TABLE };
  const tb = performance.now();
  await addColumns(ref, { [column]: udf });
  const bindMs = performance.now() - tb;
  let firstCkpMs = -1;
  let allCkpMs = -1;
  const cmd0 = await redisCommands();
  const s0 = snapshot();
  const t0 = performance.now();
  const record = await backfill(ref, column, {
    ...options,
    onProgress: (p) => {
      const now = performance.now() - t0;
      if (firstCkpMs < 0 && p.rowsCheckpointed > 0) firstCkpMs = now;
      if (allCkpMs < 0 && p.rowsPlanned > 0 && p.rowsCheckpointed >= p.rowsPlanned) allCkpMs = now;
    },
  });
  const wallMs = performance.now() - t0;
  const s1 = snapshot();
  const cmd1 = await redisCommands();
  const m = record.metrics;
  if (record.status !== "finished" || m.rowsComputed !== rows || m.rowsCommitted !== rows) {
    throw new Error(`${config} rep ${rep}: status ${record.status}, computed ${m.rowsComputed}, committed ${m.rowsCommitted}; expected ${rows}`);
  }
  const db = await lancedb.connect(dir);
  const t = await db.openTable(TABLE);
  const n = await t.countRows(check);
  t.close();
  db.close();
  if (n !== rows) throw new Error(`${config} rep ${rep}: verification failed: ${n} of ${rows} rows satisfy ${check}`);
  rmSync(dir, { recursive: true, force: true });
  return {
    config,
    rep,
    wallMs,
    bindMs,
    record,
    firstCkpMs,
    allCkpMs,
    ...cpuDelta(s0, s1, ws),
    workerNames: ws.map((w) => w.name),
    redisCommands: cmd1 - cmd0,
  };
}

// ---- raw round trip of no-op tasks --------------------------------------------------------------
interface RoundTrip {
  rep: number;
  localMs: number[];
  queueMs: number[];
  queueRedisCommands: number;
  queueRedisScripts: number;
  queueCoordCpuMs: number;
  queueWorkerCpuMs: number;
  queueRedisCpuMs: number;
  othersCpuMs: number;
}

/** A table with `y` bound, used only for its bundle and paths: no-op tasks never read it. */
async function roundTripConfig(base: string, rep: number): Promise<WorkerConfig> {
  const dir = path.join(root, `rt-rep${rep}`);
  cpSync(base, dir, { recursive: true });
  const [bound] = await addColumns({ db: dir, table: TABLE }, { y: DOUBLE });
  const b = bound!.binding;
  const store = path.join(dir, "_lancet", TABLE);
  return {
    bundlePath: path.join(store, "udfs", `${b.bundle}.mjs`),
    exportName: b.exportName,
    label: `${b.module}#${b.exportName}`,
    dbDir: dir,
    table: TABLE,
    column: "y",
    dataType: b.dataType,
    inputs: b.inputs,
    checkpointRoot: path.join(store, "ckp"),
    intraApplierConcurrency: 1,
  };
}

const noop = (key: string): TaskSpec => ({ taskId: key, fragmentId: 0, version: 1, globalOffset: 0, gaps: [], selection: "", batchKey: key, checkpointSize: 16, maxCheckpointSize: 16 });

async function timeNoops(ex: Executor, prefix: string, n: number, warm: number): Promise<number[]> {
  for (let i = 0; i < warm; i++) await ex.runTask(noop(`${prefix}-warm-${i}`), () => {});
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await ex.runTask(noop(`${prefix}-${i}`), () => {});
    out.push(performance.now() - t0);
  }
  return out;
}

async function roundTrip(base: string, rep: number, w: WorkerProc): Promise<RoundTrip> {
  const config = await roundTripConfig(base, rep);
  const pool = await LocalPool.create({ size: 1, config, taskTimeoutMs: 60_000 });
  let localMs: number[];
  try {
    localMs = await timeNoops(pool, `rt${rep}-local`, RT_TASKS, 10);
  } finally {
    await pool.close();
  }
  const q = await QueueExecutor.create({ redis: redisServer!.url, queue: Q_OVH, jobId: `bench-rt-${rep}`, config, pool: { taskTimeoutMs: 60_000, env: {} }, needs: {} });
  let queueMs: number[];
  let cmd = 0;
  let lua = 0;
  let cpu: CpuDelta;
  try {
    await timeNoops(q, `rt${rep}-queue-w`, 0, 10); // warm-up: the worker starts its pool for this table
    const lua0 = await redisScriptCalls();
    const cmd0 = await redisCommands();
    const s0 = snapshot();
    queueMs = await timeNoops(q, `rt${rep}-queue`, RT_TASKS, 0);
    cpu = cpuDelta(s0, snapshot(), [w]);
    cmd = (await redisCommands()) - cmd0;
    lua = (await redisScriptCalls()) - lua0;
  } finally {
    await q.close();
  }
  rmSync(config.dbDir, { recursive: true, force: true });
  return { rep, localMs, queueMs, queueRedisCommands: cmd, queueRedisScripts: lua, queueCoordCpuMs: cpu.coordCpuMs, queueWorkerCpuMs: cpu.workerCpuMs[0]!, queueRedisCpuMs: cpu.redisCpuMs, othersCpuMs: cpu.othersCpuMs };
}

// ---- main ---------------------------------------------------------------------------------------
const ovhRuns: Run[] = [];
const scaleRuns: Run[] = [];
const rts: RoundTrip[] = [];
let wOvh: WorkerProc;
let w1: WorkerProc;
let w2: WorkerProc[];
try {
  redisServer = await RedisServer.start();
  redis = new Redis({ host: "127.0.0.1", port: redisServer.port, maxRetriesPerRequest: 1 });
  redis.on("error", () => {});
  note(`redis-server on ${redisServer.url} (pid ${redisPid(redisServer)})`);

  const ovhBase = path.join(root, "base-ovh");
  const scaleBase = path.join(root, "base-scale");
  const tb = performance.now();
  await buildXTable(ovhBase, TABLE, OVH_ROWS, Math.ceil(OVH_ROWS / OVH_FRAGS));
  await buildXTable(scaleBase, TABLE, SCALE_ROWS, Math.ceil(SCALE_ROWS / SCALE_FRAGS));
  note(`built base tables: ${fmt(OVH_ROWS)} rows / ${OVH_FRAGS} fragments and ${fmt(SCALE_ROWS)} rows / ${SCALE_FRAGS} fragments (${fmt((performance.now() - tb) / 1000, 1)} s)`);

  [wOvh, w1, ...w2] = await Promise.all([
    startWorker("ovh", redisServer.url, Q_OVH, OVH_C),
    startWorker("w1", redisServer.url, Q_W1, 1),
    startWorker("w2a", redisServer.url, Q_W2, 1),
    startWorker("w2b", redisServer.url, Q_W2, 1),
  ]);
  note(`started ${workers.length} lancet worker processes: ${workers.map((w) => `${w.name} (pid ${w.pid})`).join(", ")}`);

  const url = redisServer.url;
  const ovhOpts: BackfillOptions = { concurrency: OVH_C, taskSize: OVH_TASK, checkpointSize: OVH_CKP };
  const scaleOpts: BackfillOptions = { concurrency: SCALE_C, ...(SCALE_TASK !== undefined ? { taskSize: SCALE_TASK } : {}), env: { LANCET_BENCH_SPIN_ROUNDS: String(SPIN_ROUNDS) } };
  type Step = { name: string; run: (rep: number) => Promise<void> };
  const steps: Step[] = [
    { name: "ovh-local", run: async (rep) => void ovhRuns.push(await runBackfill("embedded", rep, ovhBase, "y", DOUBLE, ovhOpts, [], OVH_ROWS, "y = x * 2")) },
    { name: "ovh-queue", run: async (rep) => void ovhRuns.push(await runBackfill("queue", rep, ovhBase, "y", DOUBLE, { ...ovhOpts, executor: { redis: url, queue: Q_OVH } }, [wOvh], OVH_ROWS, "y = x * 2")) },
    { name: "round-trip", run: async (rep) => void rts.push(await roundTrip(ovhBase, rep, wOvh)) },
    { name: "scale-1w", run: async (rep) => void scaleRuns.push(await runBackfill("1 worker", rep, scaleBase, "s", SPIN, { ...scaleOpts, executor: { redis: url, queue: Q_W1 } }, [w1], SCALE_ROWS, "s IS NOT NULL")) },
    { name: "scale-2w", run: async (rep) => void scaleRuns.push(await runBackfill("2 workers", rep, scaleBase, "s", SPIN, { ...scaleOpts, executor: { redis: url, queue: Q_W2 } }, w2, SCALE_ROWS, "s IS NOT NULL")) },
    ...(LOCAL_REF ? [{ name: "scale-embedded", run: async (rep: number) => void scaleRuns.push(await runBackfill("embedded", rep, scaleBase, "s", SPIN, scaleOpts, [], SCALE_ROWS, "s IS NOT NULL")) }] : []),
  ];
  for (let rep = 1; rep <= REPS; rep++) {
    const k = (rep - 1) % steps.length;
    const order = [...steps.slice(k), ...steps.slice(0, k)];
    note(`rep ${rep}/${REPS}: ${order.map((s) => s.name).join(", ")}`);
    for (const s of order) {
      const t0 = performance.now();
      await s.run(rep);
      note(`  ${s.name}: ${fmt((performance.now() - t0) / 1000, 1)} s`);
    }
  }
} catch (e) {
  for (const w of workers) note(`--- output of worker ${w.name} (pid ${w.pid}), last 2,000 characters:\n${w.output().slice(-2000)}`);
  throw e;
} finally {
  await cleanup();
}
const totalS = (performance.now() - tStart) / 1000;

// ---- report -------------------------------------------------------------------------------------
const sum = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0);
const timeline = (r: Run): string => `1st ckp ${(r.firstCkpMs / 1000).toFixed(2)} · all ckp ${(r.allCkpMs / 1000).toFixed(2)} · end ${(r.wallMs / 1000).toFixed(2)}`;
const wcpu = (r: Run): string => (r.workerCpuMs.length === 0 ? "—" : r.workerCpuMs.map((c, i) => `${fmt(c)} (${fmt(r.workerMainCpuMs[i]!)})`).join(" + "));
const by = (runs: readonly Run[], config: string): Run[] => runs.filter((r) => r.config === config);
const medWall = (runs: readonly Run[]): number => median(runs.map((r) => r.wallMs));

say(`Machine: ${CORES} cores (${cpus()[0]?.model ?? "unknown"}), Node ${process.version}; ${REPS} repetition(s), configurations interleaved (order rotating); whole run ${fmt(totalS, 0)} s.`);
say("");

// 1. per-task overhead
const ovhLocal = by(ovhRuns, "embedded");
const ovhQueue = by(ovhRuns, "queue");
const tasks = ovhRuns[0]!.record.plan!.tasks;
say(`### Per-task overhead: ${fmt(OVH_ROWS)} rows in ${OVH_FRAGS} fragments, \`bench/udfs.ts#double\`, taskSize ${OVH_TASK}, checkpointSize ${OVH_CKP} → ${tasks} tasks, concurrency ${OVH_C} (queue: 1 \`lancet worker --concurrency ${OVH_C}\`)`);
say("");
say("| config | rep | wall (ms) | tasks | udf | read | checkpoint | write | commit (ms) | coordinator CPU (ms) | worker CPU: tree (worker process) (ms) | redis CPU (ms) | others' CPU (ms) | redis commands | timeline (s) |");
say("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
for (const r of [...ovhLocal, ...ovhQueue]) {
  const m = r.record.metrics;
  say(`| ${r.config} | ${r.rep} | ${fmt(r.wallMs)} | ${r.record.plan!.tasks} | ${fmt(m.udfMs)} | ${fmt(m.readMs)} | ${fmt(m.checkpointMs)} | ${fmt(m.writeMs)} | ${fmt(m.commitMs)} | ${fmt(r.coordCpuMs)} | ${wcpu(r)} | ${fmt(r.redisCpuMs)} | ${fmt(r.othersCpuMs)} | ${fmt(r.redisCommands)} | ${timeline(r)} |`);
}
const ovhLocalMs = medWall(ovhLocal);
const ovhQueueMs = medWall(ovhQueue);
const perTaskMs = (ovhQueueMs - ovhLocalMs) / tasks;
const perTaskReps = ovhQueue.map((q) => (q.wallMs - ovhLocal.find((l) => l.rep === q.rep)!.wallMs) / tasks);
const cmdsPerTask = median(ovhQueue.map((r) => r.redisCommands / tasks));
say("");
say(`Median wall: embedded **${fmt(ovhLocalMs)} ms**, queue **${fmt(ovhQueueMs)} ms** (${(ovhQueueMs / ovhLocalMs).toFixed(2)}×). Per-task overhead (queue − embedded) / ${tasks} tasks = **${perTaskMs.toFixed(2)} ms** (per repetition ${perTaskReps.map((x) => x.toFixed(2)).join(", ")}); with ${OVH_C} tasks in flight each task's own latency grows by about ${OVH_C}× that. Redis commands per task (queue): ${cmdsPerTask.toFixed(1)}.`);
say("");

// 2. raw round trip
const rtLocal = rts.flatMap((r) => r.localMs);
const rtQueue = rts.flatMap((r) => r.queueMs);
const rtLocalMed = median(rts.map((r) => median(r.localMs)));
const rtQueueMed = median(rts.map((r) => median(r.queueMs)));
say(`### Raw round trip: ${RT_TASKS} no-op tasks (no row ranges) one at a time, per repetition, after 10 warm-up tasks`);
say("");
say("| rep | embedded pool, median (ms) | p90 | queue, median (ms) | p90 | max | queue: redis commands per task | of which Lua script calls | coordinator CPU per task (ms) | worker CPU per task (ms) | redis CPU per task (ms) | others' CPU (ms) |");
say("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
for (const r of rts) {
  say(`| ${r.rep} | ${median(r.localMs).toFixed(3)} | ${quantile(r.localMs, 0.9).toFixed(3)} | ${median(r.queueMs).toFixed(2)} | ${quantile(r.queueMs, 0.9).toFixed(2)} | ${Math.max(...r.queueMs).toFixed(1)} | ${(r.queueRedisCommands / RT_TASKS).toFixed(1)} | ${(r.queueRedisScripts / RT_TASKS).toFixed(1)} | ${(r.queueCoordCpuMs / RT_TASKS).toFixed(2)} | ${(r.queueWorkerCpuMs / RT_TASKS).toFixed(2)} | ${(r.queueRedisCpuMs / RT_TASKS).toFixed(2)} | ${fmt(r.othersCpuMs)} |`);
}
say("");
say(`Median of the per-repetition medians: embedded **${rtLocalMed.toFixed(3)} ms**, queue **${rtQueueMed.toFixed(2)} ms** per no-op task (all ${rtQueue.length} queue round trips: p50 ${quantile(rtQueue, 0.5).toFixed(2)}, p90 ${quantile(rtQueue, 0.9).toFixed(2)}, p99 ${quantile(rtQueue, 0.99).toFixed(2)} ms; embedded p99 ${quantile(rtLocal, 0.99).toFixed(3)} ms).`);
say("");

// 3. scaling
const s1 = by(scaleRuns, "1 worker");
const s2 = by(scaleRuns, "2 workers");
const sl = by(scaleRuns, "embedded");
const sPlan = scaleRuns[0]!.record.plan!;
say(`### Scaling: ${fmt(SCALE_ROWS)} rows in ${SCALE_FRAGS} fragments, \`bench/udfs-distributed.ts#spin\` (scalar, ${fmt(SPIN_ROUNDS)} xorshift rounds per row), taskSize ${fmt(sPlan.taskSize)}${SCALE_TASK === undefined ? " (Lancet's default: rows ÷ (concurrency × 2), at most a fragment)" : ""} → ${sPlan.tasks} tasks, checkpointSize default (100, growing), coordinator concurrency ${SCALE_C}; workers \`--concurrency 1\``);
say("");
say("| config | rep | wall (ms) | udf | udfCpu | read | checkpoint | write | commit (ms) | µs CPU/row | wall ÷ (udfCpu / workers) | coordinator CPU (ms) | worker CPU: tree (worker process) (ms) | redis CPU (ms) | non-UDF CPU (ms) | others' CPU (ms) | steal (ms) | timeline (s) |");
say("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
const lanes = (r: Run): number => (r.config === "1 worker" ? 1 : 2);
/** CPU of this benchmark's processes and redis-server other than the UDF's own (udfCpuMs). */
const ourCpu = (r: Run): number => r.coordCpuMs + sum(r.workerCpuMs) + r.redisCpuMs;
const nonUdf = (r: Run): number => Math.round(ourCpu(r) - r.record.metrics.udfCpuMs);
for (const r of [...s1, ...s2, ...sl]) {
  const m = r.record.metrics;
  say(`| ${r.config} | ${r.rep} | ${fmt(r.wallMs)} | ${fmt(m.udfMs)} | ${fmt(m.udfCpuMs)} | ${fmt(m.readMs)} | ${fmt(m.checkpointMs)} | ${fmt(m.writeMs)} | ${fmt(m.commitMs)} | ${((m.udfCpuMs * 1000) / SCALE_ROWS).toFixed(0)} | ${(r.wallMs / (m.udfCpuMs / lanes(r))).toFixed(3)} | ${fmt(r.coordCpuMs)} | ${wcpu(r)} | ${fmt(r.redisCpuMs)} | ${fmt(nonUdf(r))} | ${fmt(r.othersCpuMs)} | ${fmt(r.stealMs)} | ${timeline(r)} |`);
}
const s1Ms = medWall(s1);
const s2Ms = medWall(s2);
const slMs = sl.length > 0 ? medWall(sl) : NaN;
const speedup = s1Ms / s2Ms;
const speedupReps = s2.map((r) => s1.find((x) => x.rep === r.rep)!.wallMs / r.wallMs);
const eff2 = median(s2.map((r) => r.wallMs / (r.record.metrics.udfCpuMs / 2)));
const eff1 = median(s1.map((r) => r.wallMs / r.record.metrics.udfCpuMs));
say("");
say(`Median wall: 1 worker **${fmt(s1Ms)} ms**, 2 workers **${fmt(s2Ms)} ms** → speed-up **${speedup.toFixed(2)}×** (per repetition ${speedupReps.map((x) => x.toFixed(2)).join(", ")}); goal ≥ 1.8×: **${speedup >= 1.8 ? "met" : "not met"}**.` + (sl.length > 0 ? ` Embedded, concurrency ${SCALE_C}: ${fmt(slMs)} ms (2 workers ÷ embedded = ${(s2Ms / slMs).toFixed(3)}).` : ""));
const floor2 = median(s2.map((r) => r.wallMs / (ourCpu(r) / CORES)));
say(`wall ÷ ideal (udfCpu ÷ workers): 1 worker ${eff1.toFixed(3)}, 2 workers ${eff2.toFixed(3)}. 2 workers: wall ÷ (all of this benchmark's CPU ÷ ${CORES} cores) = ${floor2.toFixed(3)}.`);
say(`CPU per run, medians (2 workers / 1 worker): coordinator ${fmt(median(s2.map((r) => r.coordCpuMs)))} / ${fmt(median(s1.map((r) => r.coordCpuMs)))} ms; \`lancet worker\` processes themselves ${fmt(median(s2.map((r) => sum(r.workerMainCpuMs))))} / ${fmt(median(s1.map((r) => sum(r.workerMainCpuMs))))} ms; redis-server ${fmt(median(s2.map((r) => r.redisCpuMs)))} / ${fmt(median(s1.map((r) => r.redisCpuMs)))} ms; all non-UDF CPU ${fmt(median(s2.map(nonUdf)))} / ${fmt(median(s1.map(nonUdf)))} ms; other processes on the machine ${fmt(median(s2.map((r) => r.othersCpuMs)))} / ${fmt(median(s1.map((r) => r.othersCpuMs)))} ms.`);
say("");

const summary = {
  bench: "distributed",
  cpus: CORES,
  cpuModel: cpus()[0]?.model ?? "unknown",
  node: process.version,
  reps: REPS,
  totalS: Math.round(totalS),
  overhead: {
    rows: OVH_ROWS,
    fragments: OVH_FRAGS,
    taskSize: OVH_TASK,
    checkpointSize: OVH_CKP,
    concurrency: OVH_C,
    tasks,
    embeddedMedianMs: r1(ovhLocalMs),
    queueMedianMs: r1(ovhQueueMs),
    perTaskOverheadMs: r3(perTaskMs),
    redisCommandsPerTask: r1(cmdsPerTask),
    embeddedMs: ovhLocal.map((r) => r1(r.wallMs)),
    queueMs: ovhQueue.map((r) => r1(r.wallMs)),
  },
  roundTrip: {
    tasksPerRep: RT_TASKS,
    embeddedMedianMs: r3(rtLocalMed),
    queueMedianMs: r3(rtQueueMed),
    queueP90Ms: r3(quantile(rtQueue, 0.9)),
    queueP99Ms: r3(quantile(rtQueue, 0.99)),
    redisCommandsPerTask: r1(median(rts.map((r) => r.queueRedisCommands / RT_TASKS))),
    redisScriptCallsPerTask: r1(median(rts.map((r) => r.queueRedisScripts / RT_TASKS))),
    cpuPerTaskMs: {
      coordinator: r3(median(rts.map((r) => r.queueCoordCpuMs / RT_TASKS))),
      worker: r3(median(rts.map((r) => r.queueWorkerCpuMs / RT_TASKS))),
      redis: r3(median(rts.map((r) => r.queueRedisCpuMs / RT_TASKS))),
    },
  },
  scaling: {
    rows: SCALE_ROWS,
    fragments: SCALE_FRAGS,
    spinRounds: SPIN_ROUNDS,
    taskSize: sPlan.taskSize,
    tasks: sPlan.tasks,
    coordinatorConcurrency: SCALE_C,
    oneWorkerMedianMs: r1(s1Ms),
    twoWorkersMedianMs: r1(s2Ms),
    embeddedMedianMs: sl.length > 0 ? r1(slMs) : null,
    speedup: r3(speedup),
    goalMet: speedup >= 1.8,
    wallOverIdeal: { oneWorker: r3(eff1), twoWorkers: r3(eff2) },
    twoWorkersWallOverCpuFloor: r3(floor2),
    udfCpuMedianMs: { oneWorker: Math.round(median(s1.map((r) => r.record.metrics.udfCpuMs))), twoWorkers: Math.round(median(s2.map((r) => r.record.metrics.udfCpuMs))) },
    firstCheckpointMedianMs: { oneWorker: Math.round(median(s1.map((r) => r.firstCkpMs))), twoWorkers: Math.round(median(s2.map((r) => r.firstCkpMs))) },
    medianCpuMs: {
      oneWorker: { coordinator: median(s1.map((r) => r.coordCpuMs)), workerProcesses: median(s1.map((r) => sum(r.workerMainCpuMs))), redis: median(s1.map((r) => r.redisCpuMs)), nonUdf: median(s1.map(nonUdf)), others: median(s1.map((r) => r.othersCpuMs)) },
      twoWorkers: { coordinator: median(s2.map((r) => r.coordCpuMs)), workerProcesses: median(s2.map((r) => sum(r.workerMainCpuMs))), redis: median(s2.map((r) => r.redisCpuMs)), nonUdf: median(s2.map(nonUdf)), others: median(s2.map((r) => r.othersCpuMs)) },
    },
    udfCpuUsPerRow: r1(median(scaleRuns.map((r) => (r.record.metrics.udfCpuMs * 1000) / SCALE_ROWS))),
    oneWorkerMs: s1.map((r) => r1(r.wallMs)),
    twoWorkersMs: s2.map((r) => r1(r.wallMs)),
    embeddedMs: sl.map((r) => r1(r.wallMs)),
    othersCpuMs: { oneWorker: s1.map((r) => r.othersCpuMs), twoWorkers: s2.map((r) => r.othersCpuMs) },
  },
  verified: true,
};
say(`Workers stopped with SIGTERM at the end: ${stops.map((s) => `${s.name} ${s.how} after ${fmt(s.ms)} ms`).join("; ")}.`);
say("");
say(JSON.stringify(summary));
