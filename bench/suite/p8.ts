/**
 * P8: planning time (`backfill(…, { planOnly: true })`) for a table of 10,000 one-add fragments.
 * Part of the benchmark suite (bench/suite.ts); helpers in ./harness.ts.
 */
import { cpSync, rmSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { arrow, lancedb } from "../../src/arrow.ts";
import { addColumns, backfill } from "../../src/index.ts";
import { fmt, median, r1, r3, say, TABLE, UDF_DOUBLE, type Suite } from "./harness.ts";

export async function benchP8(suite: Suite): Promise<void> {
  const TARGET = suite.quick ? 500 : 10_000;
  const POINTS = suite.quick ? [100, 500] : [1_000, 10_000];
  const ROWS_PER = 10;
  const REPS = 5;
  say("## P8: planning time for many fragments");
  say();
  say(`A table built with one \`table.add\` of ${ROWS_PER} rows per fragment (\`id\`, \`x\`), up to ${fmt(TARGET)} fragments (so also ${fmt(TARGET)} versions). At ${POINTS.map((p) => fmt(p)).join(" and ")} fragments the suite binds \`bench/udfs.ts#double\` (on a copy for the smaller point) and times \`backfill(ref, "y", { planOnly: true })\` ${REPS} times: the whole call (check the column and its binding, open the table, read the manifest, list markers and checkpoints per fragment, plan).`);
  say();
  const dir = suite.freshDir("p8");
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
    suite.note(`P8 ${fmt(fragments)} fragments: plan ${planMs.map((x) => fmt(x)).join(", ")} ms`);
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
    if (done % (suite.quick ? 100 : 1000) === 0) {
      const now = performance.now();
      addMs.push({ at: done, msPerAdd: (now - lap) / (suite.quick ? 100 : 1000) });
      suite.note(`P8: ${fmt(done)} fragments (${fmt((now - t0) / 1000, 1)} s; last adds ${((now - lap) / (suite.quick ? 100 : 1000)).toFixed(1)} ms each)`);
      lap = now;
    }
    if (POINTS.includes(done) && done !== TARGET) {
      const copy = suite.freshDir(`p8-${done}`);
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

