/**
 * P3: an async UDF calling a local HTTP server (20 ms per request), against the ideal rate and a
 * plain-Node fetch loop without Lancet. Goal: ≥ 80 % of the ideal rate.
 * Part of the benchmark suite (bench/suite.ts); helpers in ./harness.ts.
 */
import { spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { performance } from "node:perf_hooks";
import type { BackfillOptions } from "../../src/index.ts";
import { breakdown, expectRows, fmt, goal, median, r1, r3, runLancet, say, timelineText, UDF_HTTP, withEnv, type LancetRun, type Suite } from "./harness.ts";

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

export async function benchP3(suite: Suite): Promise<void> {
  const ROWS = suite.quick ? 4_000 : 20_000;
  const FRAGS = 4;
  const REPS = suite.quick ? 1 : 3;
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
  const base = await suite.baseTable(ROWS, ROWS / FRAGS);
  try {
    await withEnv({ LANCET_BENCH_URL: url }, async () => {
      for (let r = 0; r < REPS; r++) {
        const c0 = process.cpuUsage();
        const b = await rawFetchBaseline(url, CONC, ROWS / CONC, INTRA);
        const c1 = process.cpuUsage(c0);
        raw.push({ ...b, suiteCpuMs: (c1.user + c1.system) / 1000 });
        suite.note(`P3 raw fetch rep ${r + 1}/${REPS}: ${fmt(b.ms)} ms = ${fmt((ROWS * 1000) / b.ms)} rows/s`);
        for (const c of r % 2 === 0 ? configs : [...configs].reverse()) {
          const dir = suite.copyOf(base, `p3-${c.name}`);
          const run = await runLancet(dir, "y", UDF_HTTP, c.options);
          expectRows(run, ROWS, `P3 ${c.name}`);
          rmSync(dir, { recursive: true, force: true });
          runs.get(c.name)!.push(run);
          suite.note(`P3 ${c.name} rep ${r + 1}/${REPS}: ${fmt(run.backfillMs)} ms = ${fmt((ROWS * 1000) / run.backfillMs)} rows/s`);
        }
      }
    });
  } finally {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
  suite.dropBase(ROWS, ROWS / FRAGS);
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

