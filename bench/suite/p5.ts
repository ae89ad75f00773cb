/**
 * P5: peak RSS for 1 KB outputs (graft, the CLI in a child process, sampled from /proc). Goal: ≤ 1 GB
 * per process and flat in table size.
 * Part of the benchmark suite (bench/suite.ts); helpers in ./harness.ts.
 */
import { spawnSync } from "node:child_process";
import { rmSync } from "node:fs";
import * as path from "node:path";
import { addColumns } from "../../src/index.ts";
import { dirBytes, fmt, goal, mib, r1, r3, rowsLabel, runCli, say, TABLE, UDF_KB, type Suite } from "./harness.ts";

export async function benchP5(suite: Suite): Promise<void> {
  const FRAG = suite.quick ? 20_000 : 100_000;
  const sizes = suite.options.p5Rows !== undefined ? suite.options.p5Rows.split(",").map((s) => Number(s.trim())) : suite.quick ? [100_000, 300_000] : [2_500_000, 10_000_000];
  for (const n of sizes) if (!Number.isInteger(n) || n < 1) throw new Error(`--p5-rows: bad size ${n}`);
  const defaultGranularity = (rows: number): number => Math.min(64, Math.max(1, Math.ceil(Math.ceil(rows / FRAG) / 20)));
  say("## P5: peak RSS for 1 KB outputs (graft, CLI)");
  say();
  say(`\`bench/udfs-suite.ts#kilobyte\` (batched, 1 KB of pseudo-random bytes per row) on \`id\`, ${fmt(FRAG)}-row fragments, run as \`node bin/lancet.mjs backfill --db DIR --table t --column blob --commit-mode graft --json\` in a child process (otherwise default options). Every 200 ms the suite reads VmHWM/VmRSS from \`/proc/<pid>/status\` of the CLI process (the coordinator) and of its worker processes (descendants running \`worker-entry.ts\`). One run per size at default options; then, as a control, the largest size again with \`--commit-granularity\` fixed at the smallest size's default (${defaultGranularity(sizes[0]!)}), to separate table size from commit-group size.`);
  say();
  const df = spawnSync("df", ["-B1", "--output=avail", suite.root], { encoding: "utf8" }).stdout.trim().split("\n").at(-1) ?? "0";
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
    const dir = suite.copyOf(await suite.baseTable(rows, FRAG), `p5-${rowsLabel(rows)}`);
    suite.note(`P5: backfilling ${fmt((rows * 1024) / 1e9, 2)} GB (${fmt(rows)} rows${granularity !== undefined ? `, commit granularity ${granularity}` : ""}) through the CLI`);
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
    suite.note(`P5 ${rowsLabel(rows)} (${r.label}): ${fmt(run.wallMs / 1000, 1)} s; coordinator peak ${fmt(r.coordMiB)} MiB, worker peak ${fmt(r.workerMiB)} MiB`);
    return r;
  };
  for (const rows of sizes) {
    const r = await runOne(rows, undefined);
    if (r) results.push(r);
    if (rows !== sizes.at(-1)) suite.dropBase(rows, FRAG);
  }
  const main = [...results];
  let control: P5Run | undefined;
  if (sizes.length >= 2 && defaultGranularity(sizes.at(-1)!) !== defaultGranularity(sizes[0]!)) {
    control = await runOne(sizes.at(-1)!, defaultGranularity(sizes[0]!));
    if (control) results.push(control);
  }
  suite.dropBase(sizes.at(-1)!, FRAG);
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

