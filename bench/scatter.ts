/**
 * The coordinator's event loop while a fragment with deleted rows is aligned to its physical rows
 * before the graft writes it: 100k rows of 384-dim float32 vectors, every 10th row deleted. Side by
 * side in one run: the former JS-value path (convert to JS values and back, one blocking call) and
 * `scatterRows` (Arrow buffers copied run by run, a window at a time). Prints medians of the wall time
 * and of the longest event-loop block (a 1 ms ticker runs throughout). Then a whole backfill of such a
 * fragment (a batched 384-dim UDF, default commit mode) with the coordinator's event loop watched the
 * same way, from start to finish.
 *
 *   node bench/scatter.ts [--rows 100000] [--dim 384] [--reps 5]
 */
import { monitorEventLoopDelay } from "node:perf_hooks";
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { arrow, lancedb } from "../src/arrow.ts";
import { addColumns, backfill } from "../src/index.ts";
import type { ArrowNs } from "../src/arrow.ts";
import { scatterRows } from "../src/commit/scatter.ts";
import { valuesToVector, vectorToValues } from "../src/udf/values.ts";

const { values: args } = parseArgs({ options: { rows: { type: "string" }, dim: { type: "string" }, reps: { type: "string" } } });
const N = Number(args.rows ?? 100_000);
const D = Number(args.dim ?? 384);
const REPS = Number(args.reps ?? 5);
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const type = new arrow.FixedSizeList(D, new arrow.Field("item", new arrow.Float32(), true));
const positions: number[] = [];
for (let i = 0; i < N; i++) if (i % 10 !== 3) positions.push(i);
const flat = new Float32Array(positions.length * D).map((_, i) => i % 97);
const live = arrow.makeVector(arrow.makeData({ type, length: positions.length, nullCount: 0, child: arrow.makeData({ type: new arrow.Float32(), length: flat.length, data: flat }) })) as ArrowNs.Vector;

async function measure(run: () => Promise<unknown>): Promise<{ ms: number; blockMs: number }> {
  const h = monitorEventLoopDelay({ resolution: 1 });
  const ticker = setInterval(() => {}, 1);
  h.enable();
  await new Promise((r) => setTimeout(r, 10)); // the monitor's timer runs from the next loop turn
  const t0 = performance.now();
  await run();
  const ms = performance.now() - t0;
  await new Promise((r) => setTimeout(r, 5));
  h.disable();
  clearInterval(ticker);
  return { ms, blockMs: h.max / 1e6 };
}

const jsPath = async (): Promise<unknown> => {
  const vals = vectorToValues(live);
  const out = new Array<unknown>(N).fill(null);
  positions.forEach((p, i) => (out[p] = vals[i]));
  return valuesToVector(out, type);
};
const scatter = (): Promise<unknown> => scatterRows(live, (i) => positions[i]!, N, type);

const js: { ms: number; blockMs: number }[] = [];
const sc: { ms: number; blockMs: number }[] = [];
for (let r = 0; r < REPS; r++) {
  js.push(await measure(jsPath));
  sc.push(await measure(scatter));
}
console.log(`# ${new Date().toISOString()} — ${cpus()[0]?.model ?? "?"} × ${cpus().length}, Node ${process.version}`);
console.log(`${N} rows × ${D}-dim float32, every 10th row deleted, ${REPS} repetitions (medians)`);
console.log(`JS values path : ${median(js.map((x) => x.ms)).toFixed(0)} ms, longest event-loop block ${median(js.map((x) => x.blockMs)).toFixed(0)} ms`);
console.log(`scatterRows    : ${median(sc.map((x) => x.ms)).toFixed(0)} ms, longest event-loop block ${median(sc.map((x) => x.blockMs)).toFixed(0)} ms`);
console.log(`speed-up ${(median(js.map((x) => x.ms)) / median(sc.map((x) => x.ms))).toFixed(1)}×`);

// A whole backfill: one fragment of N rows, every 10th deleted, a 384-dim output; the coordinator's loop watched.
const dir = mkdtempSync(path.join(tmpdir(), "lancet-bench-scatter-"));
try {
  const db = await lancedb.connect(dir);
  await db.createTable("t", new arrow.Table({ id: arrow.vectorFromArray(BigInt64Array.from({ length: N }, (_, i) => BigInt(i))) }) as never);
  const table = await db.openTable("t");
  await table.delete("id % 10 = 3");
  const udf = `${fileURLToPath(new URL("./udfs-embed.ts", import.meta.url))}#embed384`;
  const blocks: number[] = [];
  const walls: number[] = [];
  for (let r = 0; r < Math.min(REPS, 3); r++) {
    const column = `e${r}`;
    await addColumns({ db: dir, table: "t" }, { [column]: udf });
    let rec: Awaited<ReturnType<typeof backfill>> | undefined;
    const m = await measure(async () => (rec = await backfill({ db: dir, table: "t" }, column)));
    if (rec?.events.some((e) => e.type === "commit-fallback")) throw new Error("the graft fell back");
    blocks.push(m.blockMs);
    walls.push(m.ms);
  }
  console.log(`backfill of ${N} rows (${N / 10} deleted) × ${D}-dim, default commit mode: ${median(walls).toFixed(0)} ms, longest coordinator event-loop block ${median(blocks).toFixed(0)} ms (runs: ${blocks.map((b) => b.toFixed(0)).join(", ")})`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
