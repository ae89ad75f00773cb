/**
 * P1: `y = x * 2` — LanceDB native SQL (`addColumns` with `valueSql`) vs Lancet with the graft
 * and merge committers, at 1M and 10M rows, plus the fixed cost of a job (a 1-row table). Goal: native
 * time ÷ Lancet graft time ≥ 0.35.
 * Part of the benchmark suite (bench/suite.ts); helpers in ./harness.ts.
 */
import { rmSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { lancedb } from "../../src/arrow.ts";
import { breakdown, buildTable, countWhere, expectRows, fmt, goal, median, r1, r3, rowsLabel, runLancet, say, TABLE, timelineText, UDF_DOUBLE, type LancetRun, type Suite } from "./harness.ts";

export async function benchP1(suite: Suite): Promise<void> {
  const sizes = suite.quick ? [200_000] : [1_000_000, 10_000_000];
  const REPS = suite.quick ? 1 : 3;
  const FRAG = 100_000;
  /** merge at 10M takes over a minute per run: one repetition there. */
  const mergeReps = (rows: number): number => (rows >= 5_000_000 ? 1 : REPS);
  say("## P1: `y = x * 2` — LanceDB native SQL vs Lancet (graft, merge)");
  say();
  say(`Table: \`id\` int64, \`x\` float64 in ${fmt(FRAG)}-row fragments. Per repetition, fresh copies of the same base table: native \`addColumns([{ name: "y", valueSql: "x * 2" }])\`; Lancet \`addColumns({ y: "bench/udfs.ts#double" })\` (batched, Float64Array out) + \`backfill(ref, "y", { commitMode })\` with otherwise default options, for \`graft\` and \`merge\`. The order rotates between repetitions. Every result is verified (\`countRows("y = x * 2")\` = rows). Lancet time = bind + backfill. Timeline: seconds from the backfill call to plan ready · first checkpoint (pool start-up + first batch) · all rows checkpointed · end. CPU: native = this process's CPU time during \`addColumns\` (LanceDB's threads included); Lancet = coordinator (this process) + worker processes (their rusage, read from /proc/self/stat once they exit).`);
  say();
  const result: Record<string, unknown>[] = [];
  for (const rows of sizes) {
    const base = await suite.baseTable(rows, FRAG);
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
        const dir = suite.copyOf(base, `p1-${who}`);
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
      suite.note(`P1 ${rowsLabel(rows)} rep ${r + 1}/${REPS} (${order.join(", ")}): native ${fmt(nativeMs, 1)} ms, graft ${fmt(g.totalMs)} ms${m ? `, merge ${fmt(m.totalMs)} ms` : ""}`);
      reps.push({ rep: r + 1, order: order.join(", "), nativeMs, nativeCpuMs, graft: g, merge: m });
    }
    if (rows !== sizes.at(-1)) suite.dropBase(rows, FRAG);
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
  const tiny = suite.freshDir("p1-tiny");
  await buildTable(tiny, 1, 1);
  const fixed: number[] = [];
  for (let i = 0; i < (suite.quick ? 1 : 3); i++) {
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

