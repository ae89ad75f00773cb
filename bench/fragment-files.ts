/**
 * Fragment files vs batch checkpoints, side by side in one run: `y = x * 2` (P1's workload, graft
 * committer) on 1M and 10M rows in 100,000-row fragments, with workers writing the column files
 * (the default) and with `LANCET_FRAGMENT_FILES=0` (an Arrow IPC checkpoint per batch, assembled by
 * the coordinator), alternating per repetition. Prints a Markdown table and a JSON line.
 *
 *   node bench/fragment-files.ts [--reps 3] [--rows 1000000,10000000]
 */
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { breakdown, buildTable, countWhere, fmt, median, runLancet, UDF_DOUBLE } from "./suite/harness.ts";

const { values } = parseArgs({ options: { reps: { type: "string", default: "3" }, rows: { type: "string", default: "1000000,10000000" } } });
const REPS = Number(values.reps);
const SIZES = values.rows!.split(",").map(Number);
const root = mkdtempSync(path.join(tmpdir(), "lancet-ff-"));
const out: Record<string, unknown>[] = [];
console.log(`# ${new Date().toISOString()} — ${cpus()[0]?.model.trim()} × ${cpus().length}, Node ${process.version}; ${REPS} repetitions, medians`);
console.log();
console.log("| rows | checkpoints | rep times (ms) | median (ms) | read | udf | checkpoint | write | commit (ms, summed) | coordinator CPU (ms) |");
console.log("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|");
try {
  for (const rows of SIZES) {
    const base = path.join(root, `base-${rows}`);
    await buildTable(base, rows, 100_000);
    const runs: Record<"files" | "batches", Awaited<ReturnType<typeof runLancet>>[]> = { files: [], batches: [] };
    for (let r = 0; r < REPS; r++) {
      for (const mode of r % 2 === 0 ? (["files", "batches"] as const) : (["batches", "files"] as const)) {
        process.env.LANCET_FRAGMENT_FILES = mode === "files" ? "1" : "0";
        const dir = path.join(root, `run-${rows}-${r}-${mode}`);
        cpSync(base, dir, { recursive: true });
        const run = await runLancet(dir, "y", UDF_DOUBLE, { commitMode: "graft" });
        const ok = await countWhere(dir, "y = x * 2");
        if (ok !== rows) throw new Error(`${mode} ${rows}: ${ok} of ${rows} rows have y = x * 2`);
        runs[mode].push(run);
        rmSync(dir, { recursive: true, force: true });
      }
    }
    delete process.env.LANCET_FRAGMENT_FILES;
    rmSync(base, { recursive: true, force: true });
    const row: Record<string, unknown> = { rows };
    for (const mode of ["files", "batches"] as const) {
      const xs = runs[mode];
      const b = xs.map((x) => breakdown(x.record.metrics));
      const mb = (k: keyof ReturnType<typeof breakdown>): number => median(b.map((x) => x[k]));
      const med = median(xs.map((x) => x.totalMs));
      console.log(`| ${fmt(rows)} | ${mode === "files" ? "fragment files" : "batch checkpoints"} | ${xs.map((x) => fmt(x.totalMs)).join(", ")} | **${fmt(med)}** | ${fmt(mb("read"))} | ${fmt(mb("udf"))} | ${fmt(mb("checkpoint"))} | ${fmt(mb("write"))} | ${fmt(mb("commit"))} | ${fmt(median(xs.map((x) => x.coordCpuMs)))} |`);
      row[mode] = { medianMs: Math.round(med), runsMs: xs.map((x) => Math.round(x.totalMs)), coordinatorCpuMs: Math.round(median(xs.map((x) => x.coordCpuMs))) };
    }
    row.ratio = Math.round((1000 * (row.files as { medianMs: number }).medianMs) / (row.batches as { medianMs: number }).medianMs) / 1000;
    out.push(row);
  }
} finally {
  rmSync(root, { recursive: true, force: true });
}
console.log();
for (const r of out) console.log(`${fmt(r.rows as number)} rows: fragment files take **${r.ratio}×** the time of batch checkpoints.`);
console.log();
console.log(JSON.stringify({ bench: "fragment-files", reps: REPS, sizes: out }));
