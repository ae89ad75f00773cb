/**
 * Distributed-mode demo on one machine: starts a redis-server on a free loopback port, two
 * `lancet worker` processes (with Prometheus metrics), builds a 120,000-row table in
 * ./demo-data-distributed, backfills two UDF columns through the queue, and shows which worker ran
 * what, a few worker metrics and the values. Everything it started is stopped at the end.
 *
 *   npm run demo:distributed        (needs redis-server: apt-get install -y redis-server)
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdirSync, rmSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { arrow, lancedb } from "../src/arrow.ts";
import { addColumns, backfill } from "../src/index.ts";
import { ProgressView } from "../src/cli/progress.ts";
import { freePort, RedisServer, redisAvailable } from "../test/redis.ts";

const DB_DIR = fileURLToPath(new URL("../demo-data-distributed", import.meta.url));
const UDFS = fileURLToPath(new URL("./udfs.ts", import.meta.url));
const LANCET = fileURLToPath(new URL("../bin/lancet.mjs", import.meta.url));
const out = (s = ""): void => void process.stdout.write(s + "\n");

if (!redisAvailable()) {
  process.stderr.write("demo:distributed needs redis-server on PATH (Debian/Ubuntu: apt-get install -y redis-server)\n");
  process.exit(1);
}

// ---- the table: 6 fragments × 20,000 rows ----------------------------------------------------
rmSync(DB_DIR, { recursive: true, force: true });
mkdirSync(DB_DIR, { recursive: true });
const words = "lance arrow column table fragment vector query index batch commit worker queue redis".split(" ");
const db = await lancedb.connect(DB_DIR);
let table: Awaited<ReturnType<typeof db.createTable>> | undefined;
for (let f = 0; f < 6; f++) {
  const n = 20_000;
  const ids = Array.from({ length: n }, (_, i) => BigInt(f * n + i));
  const text = ids.map((id) => Array.from({ length: 1 + Number(id % 9n) }, (_, k) => words[(Number(id) + k) % words.length]).join(" "));
  const batch = new arrow.Table({
    id: arrow.vectorFromArray(ids, new arrow.Int64()),
    text: arrow.vectorFromArray(text, new arrow.Utf8()),
    x: arrow.vectorFromArray(ids.map((id) => Number(id) / 1000), new arrow.Float64()),
  });
  if (!table) table = await db.createTable("docs", batch);
  else await table.add(batch);
}
await addColumns({ db: DB_DIR, table: "docs" }, { word_count: `${UDFS}#wordCount`, x_squared: `${UDFS}#xSquared` });
out(`table docs: 120,000 rows in 6 fragments at ${DB_DIR}`);

// ---- Redis and two workers ---------------------------------------------------------------------
const redis = await RedisServer.start();
const workers: { child: ChildProcess; port: number }[] = [];
try {
  for (let i = 0; i < 2; i++) {
    const port = await freePort();
    const child = spawn(process.execPath, [LANCET, "worker", "--redis", redis.url, "--concurrency", "1", "--metrics-port", String(port)], { stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
    while (!err.includes("taking tasks")) {
      if (child.exitCode !== null) throw new Error(`worker did not start: ${err}`);
      await sleep(50);
    }
    workers.push({ child, port });
  }
  out(`redis-server on ${redis.url}; 2 workers (lancet worker --redis ${redis.url} --concurrency 1)`);
  out(spawnSync(process.execPath, [LANCET, "workers", "--redis", redis.url], { encoding: "utf8" }).stdout.trimEnd());
  out();

  // ---- backfills through the queue -------------------------------------------------------------
  const io = { stdout: process.stdout, stderr: process.stderr, isTTY: Boolean(process.stderr.isTTY) };
  for (const column of ["word_count", "x_squared"]) {
    const view = new ProgressView(io, io.isTTY ? "bar" : "lines");
    const r = await backfill({ db: DB_DIR, table: "docs" }, column, { concurrency: 4, executor: { redis: redis.url }, onProgress: (p) => view.update(p) });
    view.done();
    out(`${column}: ${r.metrics.rowsComputed.toLocaleString("en-US")} rows computed on the workers, ${r.metrics.commits} commit(s), ${(r.metrics.elapsedMs / 1000).toFixed(1)} s`);
    for (const e of r.events.filter((e) => e.type === "queue")) out(`  ${e.message}`);
  }
  out();

  // ---- what the workers report -------------------------------------------------------------------
  for (const [i, w] of workers.entries()) {
    const text = await (await fetch(`http://127.0.0.1:${w.port}/metrics`)).text();
    const pick = (name: string): string => text.split("\n").find((l) => l.startsWith(name)) ?? `${name} 0`;
    out(`worker ${i + 1} metrics: ${pick("lancet_worker_tasks_total")}; ${pick("lancet_worker_rows_total")}`);
  }
  const sample = await (await lancedb.connect(DB_DIR)).openTable("docs");
  out();
  for (const row of await sample.query().select(["id", "text", "word_count", "x_squared"]).limit(3).toArray()) {
    out(`  id ${String(row.id)}  "${String(row.text)}"  word_count ${String(row.word_count)}  x_squared ${String(row.x_squared)}`);
  }
  out(`filled: word_count ${await sample.countRows("word_count IS NOT NULL")} / 120000, x_squared ${await sample.countRows("x_squared IS NOT NULL")} / 120000`);
} finally {
  for (const w of workers) w.child.kill("SIGTERM");
  await Promise.all(workers.map((w) => new Promise((r) => (w.child.exitCode !== null ? r(null) : w.child.once("exit", r)))));
  await redis.stop();
}
