/**
 * P4: an expanding UDF (4 KB per row): output write speed vs the disk's sequential write speed (dd).
 * Part of the benchmark suite (bench/suite.ts); helpers in ./harness.ts.
 */
import { spawnSync } from "node:child_process";
import { rmSync } from "node:fs";
import * as path from "node:path";
import { breakdown, dirBytes, expectRows, fmt, median, r1, r3, runLancet, say, TABLE, timelineText, UDF_THUMB, withEnv, type LancetRun, type Suite } from "./harness.ts";

interface DdResult {
  mode: string;
  mbPerSec: number;
}
/** Writes 512 MiB of zeros with `dd` into `dir` and reads its speed. */
function ddWrite(dir: string, mode: "direct" | "fdatasync"): DdResult {
  const file = path.join(dir, `dd-${mode}.bin`);
  const flag = mode === "direct" ? "oflag=direct" : "conv=fdatasync";
  const r = spawnSync("dd", ["if=/dev/zero", `of=${file}`, "bs=1M", "count=512", flag], { encoding: "utf8" });
  rmSync(file, { force: true });
  // "536870912 bytes (537 MB, 512 MiB) copied, 1.40888 s, 381 MB/s"
  const m = /(\d+) bytes .* copied, ([\d.]+) s/.exec(r.stderr);
  if (!m) throw new Error(`could not parse dd output: ${r.stderr}`);
  return { mode, mbPerSec: Number(m[1]) / 1e6 / Number(m[2]) };
}

export async function benchP4(suite: Suite): Promise<void> {
  const ROWS = suite.quick ? 10_000 : 100_000;
  const REPS = suite.quick ? 1 : 3;
  const BYTES = 4096;
  const outMB = (ROWS * BYTES) / 1e6;
  say("## P4: expanding UDF (4 KB per row) — output write speed vs the disk");
  say();
  say(`\`bench/udfs-expand.ts#thumbnail\` with \`LANCET_BENCH_UDF_ROUNDS=1\` (one xorshift pass over 4 KB per row: cheap, and the bytes are pseudo-random so nothing compresses them; with 0 rounds the output would be all zeros), ${fmt(ROWS)} rows → ${fmt(outMB)} MB of output, default options (auto → graft). Layouts: 1 fragment and 8 fragments (built directly with 8 \`add\`s), on fresh copies. Output MB/s = rows × 4,096 B ÷ backfill wall time. Each repetition also measures the disk with \`dd if=/dev/zero of=<file in the suite's directory> bs=1M count=512\`, once with \`oflag=direct\` and once with \`conv=fdatasync\`. ${REPS} repetition(s); layout order alternates.`);
  say();
  const base1 = await suite.baseTable(ROWS, ROWS);
  const base8 = await suite.baseTable(ROWS, ROWS / 8);
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
      const ddDirect = ddWrite(suite.root, "direct").mbPerSec;
      const ddSync = ddWrite(suite.root, "fdatasync").mbPerSec;
      const got: Partial<Record<1 | 8, { run: LancetRun; bytes: number }>> = {};
      for (const f of r % 2 === 0 ? ([1, 8] as const) : ([8, 1] as const)) {
        const dir = suite.copyOf(f === 1 ? base1 : base8, `p4-${f}`);
        const before = dirBytes(path.join(dir, `${TABLE}.lance`));
        const run = await runLancet(dir, "thumb", UDF_THUMB, {});
        expectRows(run, ROWS, `P4 ${f}`);
        const bytes = dirBytes(path.join(dir, `${TABLE}.lance`)) - before;
        rmSync(dir, { recursive: true, force: true });
        got[f] = { run, bytes };
      }
      reps.push({ ddDirect, ddSync, one: got[1]!.run, eight: got[8]!.run, bytesOne: got[1]!.bytes, bytesEight: got[8]!.bytes });
      suite.note(`P4 rep ${r + 1}/${REPS}: dd direct ${fmt(ddDirect)} MB/s, fdatasync ${fmt(ddSync)} MB/s; 1 fragment ${fmt(got[1]!.run.backfillMs)} ms, 8 fragments ${fmt(got[8]!.run.backfillMs)} ms`);
    }
  });
  suite.dropBase(ROWS, ROWS);
  suite.dropBase(ROWS, ROWS / 8);
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
  say(`Median disk: ${fmt(ddD)} MB/s (\`oflag=direct\`), ${fmt(ddS)} MB/s (\`conv=fdatasync\`). Median output: **1 fragment ${fmt(one)} MB/s** (${((one / ddS) * 100).toFixed(0)} % of fdatasync dd, ${((one / ddD) * 100).toFixed(0)} % of direct dd); **8 fragments ${fmt(eight)} MB/s** (${((eight / ddS) * 100).toFixed(0)} % of fdatasync dd, ${((eight / ddD) * 100).toFixed(0)} % of direct dd). With 1 fragment the tasks are smaller than the fragment: every output byte is written twice (an Arrow IPC checkpoint, then the table's column file) and read back once in between. With 8 fragments each task covers a whole fragment and writes its fragment file; it appends every 16 MiB, so a fragment of several appends is compacted once (written twice, by LanceDB in the worker), and the graft links the result into the table.`);
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

