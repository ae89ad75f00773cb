/**
 * Scaling: graft backfill time vs table size (1M … 20M rows), the CLI in a child process; fits
 * the exponent b of t ∝ N^b. Goal: b ≤ 1.1.
 * Part of the benchmark suite (bench/suite.ts); helpers in ./harness.ts.
 */
import { rmSync } from "node:fs";
import { addColumns } from "../../src/index.ts";
import { childrenCpuMs, countWhere, fmt, goal, median, mib, r1, r3, rowsLabel, runCli, say, TABLE, UDF_DOUBLE, type Suite } from "./harness.ts";

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

export async function benchScaling(suite: Suite): Promise<void> {
  const sizes = suite.quick ? [100_000, 200_000, 400_000] : [1_000_000, 2_000_000, 5_000_000, 10_000_000, 20_000_000];
  const REPS = suite.quick ? 1 : 3;
  const FRAG = suite.quick ? 20_000 : 100_000;
  say("## Scaling: graft backfill time vs table size");
  say();
  say(`\`y = x * 2\` (bench/udfs.ts#double) bound in the suite process, then \`node bin/lancet.mjs backfill --commit-mode graft --json\` in a child process (otherwise default options), ${fmt(FRAG)}-row fragments, ${REPS} repetition(s) per size; the sizes run in a rotating order within each repetition. Time = the job's \`elapsedMs\` from the CLI's JSON (the CLI's own start-up, ~0.3 s, excluded; its wall time is shown too). Peak RSS: VmHWM of the CLI process (the coordinator) and of its largest worker process, sampled every 200 ms from /proc. CPU: the CLI process and its workers (rusage of waited-for children).`);
  say();
  const runs = new Map<number, CliBackfill[]>(sizes.map((n) => [n, []]));
  for (const n of sizes) await suite.baseTable(n, FRAG);
  for (let r = 0; r < REPS; r++) {
    const order = r % 2 === 0 ? sizes : [...sizes].reverse();
    for (const n of order) {
      const dir = suite.copyOf(await suite.baseTable(n, FRAG), "scale");
      const run = await cliBackfill(dir, "y", UDF_DOUBLE, ["--commit-mode", "graft"], n);
      const ok = await countWhere(dir, "y = x * 2");
      if (ok !== n) throw new Error(`Scaling ${n}: ${ok} rows have y = x * 2`);
      rmSync(dir, { recursive: true, force: true });
      runs.get(n)!.push(run);
      suite.note(`Scaling ${rowsLabel(n)} rep ${r + 1}/${REPS}: job ${fmt(run.jobMs)} ms (CLI ${fmt(run.wallMs)} ms), coordinator peak ${fmt(mib(run.coordHwmKb))} MiB, worker peak ${fmt(mib(run.workerHwmKb))} MiB`);
    }
  }
  for (const n of sizes) if (!(n === 10_000_000 && suite.only.has("P5"))) suite.dropBase(n, FRAG);
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

