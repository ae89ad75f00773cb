/**
 * P2: a CPU-bound scalar UDF at concurrency 2 vs 1. Goals: speed-up ≥ 1.8×, and wall ÷ (udfCpuMs /
 * cores) ≤ 1.15 at concurrency 2.
 * Part of the benchmark suite (bench/suite.ts); helpers in ./harness.ts.
 */
import { rmSync } from "node:fs";
import { breakdown, CORES, expectRows, fmt, goal, median, r1, r3, runLancet, say, timelineText, UDF_BURN, withEnv, type LancetRun, type Suite } from "./harness.ts";

export async function benchP2(suite: Suite): Promise<void> {
  const ROWS = suite.options.p2Rows !== undefined ? Number(suite.options.p2Rows) : suite.quick ? 20_000 : 200_000;
  if (!Number.isInteger(ROWS) || ROWS < 8) throw new Error(`--p2-rows: bad size ${suite.options.p2Rows}`);
  const FRAGS = 8;
  const REPS = suite.quick ? 1 : 3;
  const ROUNDS = "25000";
  say("## P2: CPU-bound UDF — concurrency 2 vs 1");
  say();
  say(`${fmt(ROWS)} rows in ${FRAGS} fragments; scalar UDF \`bench/udfs-suite.ts#cpuBurn\` (${ROUNDS} xorshift rounds per row, ~50 µs of integer math), default options except \`concurrency\`; ${REPS} repetition(s), each backfilling two fresh copies (concurrency 1 and 2, order alternating). Wall = backfill call (bind excluded); ideal = total udfCpuMs / ${CORES} cores.`);
  say();
  const base = await suite.baseTable(ROWS, Math.ceil(ROWS / FRAGS));
  interface Rep {
    c1: LancetRun;
    c2: LancetRun;
  }
  const reps: Rep[] = [];
  await withEnv({ LANCET_BENCH_BURN_ROUNDS: ROUNDS }, async () => {
    for (let r = 0; r < REPS; r++) {
      const got: Partial<Record<1 | 2, LancetRun>> = {};
      for (const c of r % 2 === 0 ? ([1, 2] as const) : ([2, 1] as const)) {
        const dir = suite.copyOf(base, `p2-c${c}`);
        const run = await runLancet(dir, "y", UDF_BURN, { concurrency: c });
        expectRows(run, ROWS, `P2 c${c}`);
        rmSync(dir, { recursive: true, force: true });
        got[c] = run;
      }
      reps.push({ c1: got[1]!, c2: got[2]! });
      suite.note(`P2 rep ${r + 1}/${REPS}: c1 ${fmt(got[1]!.backfillMs)} ms, c2 ${fmt(got[2]!.backfillMs)} ms (udfCpu ${fmt(got[2]!.record.metrics.udfCpuMs)} ms)`);
    }
  });
  suite.dropBase(ROWS, Math.ceil(ROWS / FRAGS));
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

