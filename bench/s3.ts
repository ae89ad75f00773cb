/**
 * Object storage (S3) vs local disk, side by side in one run (issue 15): the suite's P1 (`y = x * 2`,
 * bench/udfs.ts#double, 100,000-row fragments) and P2 (bench/udfs-suite.ts#cpuBurn, a CPU-bound
 * scalar UDF, concurrency 1 and 2) on a table in an S3 bucket (`db = s3://bucket/prefix`, where
 * `auto` commits through the graft, published with put-if-absent; no fragment files there) and on local
 * disk, there both with `commitMode` auto (graft + fragment files, the default) and "merge".
 * The order of the configurations rotates per repetition; every result is verified (P1:
 * `countRows("y = x * 2")` = rows; P2: every row computed and committed, `countRows("y IS NOT NULL")`
 * = rows). Each S3 configuration then runs once more through a request-counting proxy
 * (test/s3-proxy.ts behind a small per-method counter): the object-store requests of the whole job,
 * from `addColumns` to `backfill` returning, coordinator and workers together. Prints Markdown
 * tables and a JSON line.
 *
 *   set -a; . /tmp/s3dev/s3.env; set +a      # LANCET_TEST_S3_* (tools/s3-server.sh writes them)
 *   node bench/s3.ts [--reps 3] [--p1-rows 1000000] [--p2-rows 150000] [--no-count]
 *
 * The S3 server's variables are LANCET_TEST_S3_ENDPOINT, _REGION, _BUCKET (unused: a fresh bucket is
 * made and removed), _ACCESS_KEY and _SECRET. Base tables are built once on local disk and copied
 * (files on disk; objects uploaded to S3) before every run, outside the timed part.
 */
import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import * as http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { cpus, loadavg, totalmem, tmpdir } from "node:os";
import * as path from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { CreateBucketCommand, DeleteBucketCommand, DeleteObjectsCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { lancedb } from "../src/arrow.ts";
import { addColumns, backfill, type BackfillOptions, type JobRecord } from "../src/index.ts";
import { startS3Proxy } from "../test/s3-proxy.ts";
import { breakdown, buildTable, CORES, fmt, median, r1, r3, rowsLabel, TABLE, UDF_BURN, UDF_DOUBLE } from "./suite/harness.ts";

const { values } = parseArgs({
  options: {
    reps: { type: "string", default: "3" },
    "p1-rows": { type: "string", default: "1000000" },
    "p2-rows": { type: "string", default: "150000" },
    "no-count": { type: "boolean", default: false },
  },
});
const REPS = Number(values.reps);
const P1_ROWS = Number(values["p1-rows"]);
const P1_FRAG = 100_000;
const P2_ROWS = Number(values["p2-rows"]);
const P2_FRAGS = 8;
const BURN_ROUNDS = "25000";
const COUNT = values["no-count"] !== true;
for (const [k, v] of [["reps", REPS], ["p1-rows", P1_ROWS], ["p2-rows", P2_ROWS]] as const) if (!Number.isInteger(v) || v < 1) throw new Error(`--${k}: bad value`);

const say = (s = ""): void => void process.stdout.write(s + "\n");
const t00 = performance.now();
const note = (s: string): void => void process.stderr.write(`[${((performance.now() - t00) / 1000).toFixed(0).padStart(4)} s] ${s}\n`);

// ---- the S3 server ------------------------------------------------------------------------------
const need = (name: string): string => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run \`set -a; . DIR/s3.env; set +a\` first (bash tools/s3-server.sh DIR starts a server and writes it)`);
  return v;
};
const S3 = {
  endpoint: need("LANCET_TEST_S3_ENDPOINT").replace(/\/+$/, ""),
  region: process.env.LANCET_TEST_S3_REGION || "us-east-1",
  accessKeyId: need("LANCET_TEST_S3_ACCESS_KEY"),
  secretAccessKey: need("LANCET_TEST_S3_SECRET"),
};
const storageOptions = (endpoint: string): Record<string, string> => ({
  endpoint,
  region: S3.region,
  access_key_id: S3.accessKeyId,
  secret_access_key: S3.secretAccessKey,
  allow_http: "true",
  virtual_hosted_style_request: "false",
});
const client = new S3Client({ endpoint: S3.endpoint, region: S3.region, forcePathStyle: true, credentials: { accessKeyId: S3.accessKeyId, secretAccessKey: S3.secretAccessKey } });
const BUCKET = `lancet-bench-${Date.now().toString(36)}`;

function filesUnder(dir: string, rel = ""): string[] {
  const out: string[] = [];
  for (const e of readdirSync(path.join(dir, rel), { withFileTypes: true })) {
    const r = rel === "" ? e.name : `${rel}/${e.name}`;
    if (e.isDirectory()) out.push(...filesUnder(dir, r));
    else if (e.isFile()) out.push(r);
  }
  return out;
}
/** Uploads every file under the local folder `dir` to `s3://BUCKET/prefix/…` (8 at a time). */
async function upload(dir: string, prefix: string): Promise<void> {
  const files = filesUnder(dir);
  let next = 0;
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (next < files.length) {
      const f = files[next++]!;
      await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: `${prefix}/${f}`, Body: readFileSync(path.join(dir, f)) }));
    }
  }));
}
async function deletePrefix(prefix: string): Promise<void> {
  let token: string | undefined;
  do {
    const r = await client.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: prefix === "" ? undefined : `${prefix}/`, ContinuationToken: token }));
    const keys = (r.Contents ?? []).map((o) => ({ Key: o.Key! }));
    if (keys.length > 0) await client.send(new DeleteObjectsCommand({ Bucket: BUCKET, Delete: { Objects: keys, Quiet: true } }));
    token = r.NextContinuationToken;
  } while (token);
}

// ---- request counting: a per-method counter in front of test/s3-proxy.ts -------------------------
type Kind = "GET" | "PUT" | "HEAD" | "LIST" | "DELETE" | "POST";
const KINDS: Kind[] = ["GET", "PUT", "HEAD", "LIST", "DELETE", "POST"];
interface Counts {
  total: number;
  byKind: Record<Kind, number>;
  bytesUp: number;
  bytesDown: number;
}
const zero = (): Counts => ({ total: 0, byKind: { GET: 0, PUT: 0, HEAD: 0, LIST: 0, DELETE: 0, POST: 0 }, bytesUp: 0, bytesDown: 0 });
/**
 * GET on a bucket (path-style `/bucket` or `/bucket/`, or `list-type=`) is a LIST; POST `?delete` (a
 * batched DeleteObjects) is a DELETE; other POSTs (multipart upload start/finish) are counted as POST.
 */
function kindOf(method: string, url: string): Kind {
  const [p = "/", q = ""] = url.split("?", 2);
  const keyPart = p.replace(/^\/[^/]*\/?/, "");
  if (method === "GET") return keyPart === "" || /(^|&)list-type=/.test(q) ? "LIST" : "GET";
  if (method === "POST") return /(^|&)delete(=|&|$)/.test(q) ? "DELETE" : "POST";
  if (method === "PUT" || method === "HEAD" || method === "DELETE") return method;
  return "POST";
}
interface Counter {
  endpoint: string;
  /** The S3 proxy's own count (every request this counter forwarded). */
  proxyRequests(): number;
  counts: Counts;
  /** When an array: every request's "METHOD /path" is pushed to it (the query string left out). */
  log: string[] | undefined;
  close(): Promise<void>;
}
async function startCounter(): Promise<Counter> {
  const proxy = await startS3Proxy(S3.endpoint);
  const up = new URL(proxy.endpoint);
  const agent = new http.Agent({ keepAlive: true });
  const counter: Counter = { endpoint: "", proxyRequests: () => proxy.requests, counts: zero(), log: undefined, close: async () => {} };
  const sockets = new Set<Socket>();
  const server = http.createServer((req, res) => {
    const c = counter.counts;
    c.total++;
    c.byKind[kindOf(req.method ?? "GET", req.url ?? "/")]++;
    counter.log?.push(`${req.method} ${decodeURIComponent((req.url ?? "/").split("?")[0]!)}`);
    req.on("data", (d: Buffer) => (c.bytesUp += d.length));
    const fwd = http.request({ host: up.hostname, port: Number(up.port), method: req.method, path: req.url, headers: req.rawHeaders, setHost: false, agent });
    fwd.on("error", () => req.socket.destroy());
    fwd.on("response", (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.statusMessage, ur.rawHeaders);
      ur.on("data", (d: Buffer) => (c.bytesDown += d.length));
      ur.pipe(res);
    });
    req.pipe(fwd);
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  counter.endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  counter.close = async () => {
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of sockets) s.destroy();
    agent.destroy();
    await closed;
    await proxy.close();
  };
  return counter;
}

// ---- one run ------------------------------------------------------------------------------------
type Where = "local-auto" | "local-merge" | "s3" | "s3-merge";
/** The configurations P2 runs (S3 with mergeInsert only in P1). */
type P2Where = Exclude<Where, "s3-merge">;
interface Run {
  where: Where;
  bindMs: number;
  backfillMs: number;
  totalMs: number;
  coordCpuMs: number;
  /** ms from the backfill call: plan ready, first checkpoint, all rows checkpointed. */
  planMs: number;
  firstCkpMs: number;
  allCkpMs: number;
  record: JobRecord;
  counts: Counts | undefined;
  /** Requests the counter saw in the second after backfill() returned (counted runs only). */
  late: number;
  lateLog: string[];
}
const root = mkdtempSync(path.join(tmpdir(), "lancet-s3bench-"));
let seq = 0;

async function runOne(where: Where, base: string, udf: string, options: BackfillOptions, verify: string, rows: number, counter?: Counter): Promise<Run> {
  const id = `${where}-${++seq}`;
  let db: string;
  let so: Record<string, string> | undefined;
  const remote = where === "s3" || where === "s3-merge";
  if (remote) {
    await upload(base, id);
    db = `s3://${BUCKET}/${id}`;
    so = storageOptions(counter?.endpoint ?? S3.endpoint);
  } else {
    db = path.join(root, id);
    cpSync(base, db, { recursive: true });
  }
  const ref = so ? { db, table: TABLE, storageOptions: so } : { db, table: TABLE };
  let late = 0;
  let lateLog: string[] = [];
  if (counter) counter.counts = zero();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await addColumns(ref, { y: udf });
  const t1 = performance.now();
  const tl = { planMs: -1, firstCkpMs: -1, allCkpMs: -1 };
  const record = await backfill(ref, "y", {
    ...options,
    ...(where === "local-merge" || where === "s3-merge" ? { commitMode: "merge" as const } : {}),
    onProgress: (p) => {
      const now = performance.now() - t1;
      if (tl.planMs < 0) tl.planMs = now;
      if (tl.firstCkpMs < 0 && p.rowsCheckpointed > 0) tl.firstCkpMs = now;
      if (tl.allCkpMs < 0 && p.rowsPlanned > 0 && p.rowsCheckpointed >= p.rowsPlanned) tl.allCkpMs = now;
    },
  });
  const t2 = performance.now();
  const cpu = process.cpuUsage(cpu0);
  const counts = counter ? { ...counter.counts, byKind: { ...counter.counts.byKind } } : undefined;
  if (counter && counts) {
    // Anything Lancet sends after backfill() returned (none expected): wait a second and look.
    counter.log = [];
    await new Promise((r) => setTimeout(r, 1000));
    late = counter.counts.total - counts.total;
    lateLog = counter.log.map((x) => x.replace(`/${BUCKET}/${id}/`, "…/"));
    counter.log = undefined;
  }
  const m = record.metrics;
  if (m.rowsComputed !== rows || m.rowsCommitted !== rows) throw new Error(`${id}: computed ${m.rowsComputed} and committed ${m.rowsCommitted} rows; expected ${rows}`);
  const conn = await lancedb.connect(db, so ? { storageOptions: storageOptions(S3.endpoint) } : {});
  const table = await conn.openTable(TABLE);
  const ok = await table.countRows(verify);
  table.close();
  conn.close();
  if (ok !== rows) throw new Error(`${id}: ${ok} of ${rows} rows satisfy ${verify}`);
  if (remote) await deletePrefix(id);
  else rmSync(db, { recursive: true, force: true });
  return { where, bindMs: t1 - t0, backfillMs: t2 - t1, totalMs: t2 - t0, coordCpuMs: (cpu.user + cpu.system) / 1000, ...tl, record, counts, late, lateLog };
}

// ---- printing -----------------------------------------------------------------------------------
const LABEL: Record<Where, string> = { "local-auto": "local, auto (graft + fragment files)", "local-merge": "local, merge", s3: "S3, auto (graft)", "s3-merge": "S3, merge (mergeInsert)" };
const s2 = (ms: number): string => (ms / 1000).toFixed(2);
function medianRows(label: string, runs: Run[]): string {
  const med = (f: (r: Run) => number): number => median(runs.map(f));
  const b = runs.map((x) => breakdown(x.record.metrics));
  const mb = (k: keyof ReturnType<typeof breakdown>): string => fmt(median(b.map((x) => x[k])));
  return `| ${label} | ${runs.map((x) => fmt(x.totalMs)).join(", ")} | **${fmt(med((x) => x.totalMs))}** | ${fmt(med((x) => x.bindMs))} | ${fmt(med((x) => x.backfillMs))} | plan ${s2(med((x) => x.planMs))} · 1st ckp ${s2(med((x) => x.firstCkpMs))} · all ckp ${s2(med((x) => x.allCkpMs))} | ${mb("read")} | ${mb("udf")} | ${mb("udfCpu")} | ${mb("checkpoint")} | ${mb("write")} | ${mb("commit")} | ${mb("commits")} | ${fmt(med((x) => x.coordCpuMs))} |`;
}
const HEAD = "| configuration | runs (ms) | **median total (ms)** | bind | backfill | timeline (s, medians) | read | udf | udf CPU | checkpoint | write | commit (ms) | commits | coordinator CPU (ms) |\n|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|";
function countsRow(label: string, run: Run, rows: number, fragments: number): string {
  const c = run.counts!;
  const perM = (n: number): string => fmt((n * 1e6) / rows);
  return `| ${label} | ${fmt(run.totalMs)} | ${fmt(c.total)} | **${perM(c.total)}** | ${fmt(c.total / fragments)} | ${KINDS.map((k) => `${fmt(c.byKind[k])} (${perM(c.byKind[k])})`).join(" | ")} | ${fmt(c.bytesUp / 2 ** 20, 1)} / ${fmt(c.bytesDown / 2 ** 20, 1)} | ${run.late}${run.lateLog.length > 0 ? ` (${run.lateLog.map((x) => `\`${x}\``).join(", ")})` : ""} |`;
}
const COUNT_HEAD = `| job | wall through the proxies (ms) | requests | **per 1M rows** | per fragment | ${KINDS.map((k) => `${k} (per 1M)`).join(" | ")} | MiB up / down | after return |\n|---|---:|---:|---:|---:|${KINDS.map(() => "---:").join("|")}|---:|---:|`;
const countsJson = (run: Run, rows: number, fragments: number): Record<string, unknown> => ({
  wallMs: r1(run.totalMs),
  requests: run.counts!.total,
  perMillionRows: Math.round((run.counts!.total * 1e6) / rows),
  perFragment: r1(run.counts!.total / fragments),
  afterReturn: run.late,
  afterReturnRequests: run.lateLog,
  byKind: run.counts!.byKind,
  mibUp: r1(run.counts!.bytesUp / 2 ** 20),
  mibDown: r1(run.counts!.bytesDown / 2 ** 20),
});

// ---- main ---------------------------------------------------------------------------------------
const pkgVersion = (p: string): string => {
  try {
    return (JSON.parse(readFileSync(path.join(import.meta.dirname, "..", "node_modules", p, "package.json"), "utf8")) as { version: string }).version;
  } catch {
    return "?";
  }
};
const rgw = spawnSync("sh", ["-c", "radosgw --version 2>/dev/null | head -1"], { encoding: "utf8" }).stdout.trim() || "unknown";
const facts = {
  date: new Date().toISOString(),
  cpus: CORES,
  cpuModel: cpus()[0]?.model.trim() ?? "unknown",
  memGiB: Math.round(totalmem() / 2 ** 30),
  node: process.version,
  lancedb: pkgVersion("@lancedb/lancedb"),
  s3: `${rgw} at ${S3.endpoint} (loopback)`,
  loadAtStart: loadavg().map((x) => r1(x)),
};
const result: Record<string, unknown> = { bench: "s3", ...facts, reps: REPS };
let bucketMade = false;
try {
  await client.send(new CreateBucketCommand({ Bucket: BUCKET }));
  bucketMade = true;
  say("## Object storage (S3) vs local disk: P1 and P2");
  say();
  say(`- **Date:** ${facts.date}; **machine:** ${facts.cpus} × ${facts.cpuModel}, ${facts.memGiB} GiB RAM; Node ${facts.node}, @lancedb/lancedb ${facts.lancedb}; load average at the start ${facts.loadAtStart.join(", ")}.`);
  say(`- **S3:** ${facts.s3}; a fresh bucket \`${BUCKET}\`, one prefix per run (\`s3://${BUCKET}/<run>\`; table, checkpoints, locks, bundles and the jobs table all in the bucket). Local: a \`mkdtemp\` folder under ${tmpdir()}.`);
  say(`- ${REPS} repetitions, configurations in rotating order; medians. Total = bind (\`addColumns\`) + backfill. Breakdown columns are medians in ms (read/udf/checkpoint summed over workers, write over writers, commit = coordinator). Request counts: one extra run per S3 job through a counting proxy (not among the timed runs).`);
  say();

  const counter = COUNT ? await startCounter() : undefined;

  // ---- P1 ----
  const p1Base = path.join(root, "base-p1");
  await buildTable(p1Base, P1_ROWS, P1_FRAG);
  note(`P1: built ${fmt(P1_ROWS)} rows`);
  const p1: Record<Where | "native-local" | "native-s3", Run[] | number[]> = { "local-auto": [], "local-merge": [], s3: [], "s3-merge": [], "native-local": [], "native-s3": [] };
  const orders: P2Where[][] = [["local-auto", "local-merge", "s3"], ["local-merge", "s3", "local-auto"], ["s3", "local-auto", "local-merge"]];
  // P1 also runs S3 with mergeInsert, so both committers on S3 are compared in one run.
  const p1Orders: Where[][] = [["local-auto", "local-merge", "s3", "s3-merge"], ["local-merge", "s3", "s3-merge", "local-auto"], ["s3", "s3-merge", "local-auto", "local-merge"], ["s3-merge", "local-auto", "local-merge", "s3"]];
  /** LanceDB's own `addColumns([{ valueSql: "x * 2" }])` on a copy, for reference (local and S3). */
  async function native(where: "local" | "s3"): Promise<number> {
    const id = `native-${where}-${++seq}`;
    let db: string;
    if (where === "s3") {
      await upload(p1Base, id);
      db = `s3://${BUCKET}/${id}`;
    } else {
      db = path.join(root, id);
      cpSync(p1Base, db, { recursive: true });
    }
    const conn = await lancedb.connect(db, where === "s3" ? { storageOptions: storageOptions(S3.endpoint) } : {});
    const table = await conn.openTable(TABLE);
    const t0 = performance.now();
    await table.addColumns([{ name: "y", valueSql: "x * 2" }]);
    const ms = performance.now() - t0;
    const ok = await table.countRows("y = x * 2");
    table.close();
    conn.close();
    if (ok !== P1_ROWS) throw new Error(`${id}: ${ok} of ${P1_ROWS} rows have y = x * 2`);
    if (where === "s3") await deletePrefix(id);
    else rmSync(db, { recursive: true, force: true });
    return ms;
  }
  for (let r = 0; r < REPS; r++) {
    const order = p1Orders[r % p1Orders.length]!;
    for (const w of order) (p1[w] as Run[]).push(await runOne(w, p1Base, UDF_DOUBLE, {}, "y = x * 2", P1_ROWS));
    for (const w of (r % 2 === 0 ? ["local", "s3"] : ["s3", "local"]) as ("local" | "s3")[]) (p1[`native-${w}`] as number[]).push(await native(w));
    note(`P1 rep ${r + 1}/${REPS} (${order.join(", ")}): ${order.map((w) => `${w} ${fmt((p1[w] as Run[])[r]!.totalMs)} ms`).join(", ")}; native local ${fmt((p1["native-local"] as number[])[r]!, 1)} ms, S3 ${fmt((p1["native-s3"] as number[])[r]!, 1)} ms`);
  }
  const p1Count = counter ? await runOne("s3", p1Base, UDF_DOUBLE, {}, "y = x * 2", P1_ROWS, counter) : undefined;
  if (p1Count) note(`P1 counted: ${p1Count.counts!.total} requests (S3 proxy saw ${counter!.proxyRequests()} in all so far)`);
  rmSync(p1Base, { recursive: true, force: true });
  const p1Med = (w: Where): number => median((p1[w] as Run[]).map((x) => x.totalMs));
  const nl = median(p1["native-local"] as number[]);
  const ns = median(p1["native-s3"] as number[]);
  say(`### P1: \`y = x * 2\`, ${fmt(P1_ROWS)} rows in ${P1_ROWS / P1_FRAG} fragments of ${fmt(P1_FRAG)}`);
  say();
  say("Lancet `addColumns({ y: \"bench/udfs.ts#double\" })` + `backfill(ref, \"y\")`, default options (concurrency = cores); every result verified with `countRows(\"y = x * 2\")`.");
  say();
  say(HEAD);
  for (const w of ["local-auto", "local-merge", "s3", "s3-merge"] as const) say(medianRows(LABEL[w], p1[w] as Run[]));
  say();
  say(`LanceDB native \`addColumns([{ name: "y", valueSql: "x * 2" }])\` for reference, median: local **${fmt(nl, 1)} ms** (${(p1["native-local"] as number[]).map((x) => fmt(x, 1)).join(", ")}), S3 **${fmt(ns, 1)} ms** (${(p1["native-s3"] as number[]).map((x) => fmt(x, 1)).join(", ")}).`);
  say();
  say("| ratio of medians | value |\n|---|---:|");
  say(`| S3 ÷ local auto (what S3 costs a user today) | **${(p1Med("s3") / p1Med("local-auto")).toFixed(2)}×** |`);
  say(`| S3 ÷ local merge | **${(p1Med("s3") / p1Med("local-merge")).toFixed(2)}×** |`);
  say(`| S3 merge ÷ S3 auto (the graft's gain on S3) | **${(p1Med("s3-merge") / p1Med("s3")).toFixed(2)}×** |`);
  say(`| S3 merge ÷ local merge (the object store, same committer) | ${(p1Med("s3-merge") / p1Med("local-merge")).toFixed(2)}× |`);
  say(`| local merge ÷ local auto (the fast committer's gain on disk) | ${(p1Med("local-merge") / p1Med("local-auto")).toFixed(2)}× |`);
  say(`| native S3 ÷ native local | ${(ns / nl).toFixed(2)}× |`);
  say(`| native ÷ Lancet: local auto / local merge / S3 | ${(nl / p1Med("local-auto")).toFixed(3)} / ${(nl / p1Med("local-merge")).toFixed(3)} / ${(ns / p1Med("s3")).toFixed(3)} |`);
  say();
  result.p1 = {
    rows: P1_ROWS,
    fragments: P1_ROWS / P1_FRAG,
    medianMs: { localAuto: r1(p1Med("local-auto")), localMerge: r1(p1Med("local-merge")), s3: r1(p1Med("s3")), s3Merge: r1(p1Med("s3-merge")), nativeLocal: r1(nl), nativeS3: r1(ns) },
    runsMs: Object.fromEntries((["local-auto", "local-merge", "s3", "s3-merge"] as const).map((w) => [w, (p1[w] as Run[]).map((x) => r1(x.totalMs))])),
    breakdownRep1: Object.fromEntries((["local-auto", "local-merge", "s3", "s3-merge"] as const).map((w) => [w, breakdown((p1[w] as Run[])[0]!.record.metrics)])),
    s3OverLocalAuto: r3(p1Med("s3") / p1Med("local-auto")),
    s3OverLocalMerge: r3(p1Med("s3") / p1Med("local-merge")),
    requests: p1Count ? countsJson(p1Count, P1_ROWS, P1_ROWS / P1_FRAG) : undefined,
  };

  // ---- P2 ----
  const p2Base = path.join(root, "base-p2");
  await buildTable(p2Base, P2_ROWS, Math.ceil(P2_ROWS / P2_FRAGS));
  note(`P2: built ${fmt(P2_ROWS)} rows`);
  process.env.LANCET_BENCH_BURN_ROUNDS = BURN_ROUNDS;
  const p2: Record<`${P2Where} c${1 | 2}`, Run[]> = { "local-auto c1": [], "local-auto c2": [], "local-merge c1": [], "local-merge c2": [], "s3 c1": [], "s3 c2": [] };
  for (let r = 0; r < REPS; r++) {
    const order = orders[r % orders.length]!;
    const cs = (r % 2 === 0 ? [1, 2] : [2, 1]) as (1 | 2)[];
    const done: string[] = [];
    for (const w of order) {
      for (const c of cs) {
        const run = await runOne(w, p2Base, UDF_BURN, { concurrency: c }, "y IS NOT NULL", P2_ROWS);
        p2[`${w} c${c}`].push(run);
        done.push(`${w} c${c} ${fmt(run.totalMs)} ms`);
      }
    }
    note(`P2 rep ${r + 1}/${REPS}: ${done.join(", ")}`);
  }
  const p2Count = counter ? { c1: await runOne("s3", p2Base, UDF_BURN, { concurrency: 1 }, "y IS NOT NULL", P2_ROWS, counter), c2: await runOne("s3", p2Base, UDF_BURN, { concurrency: 2 }, "y IS NOT NULL", P2_ROWS, counter) } : undefined;
  if (p2Count) note(`P2 counted: c1 ${p2Count.c1.counts!.total}, c2 ${p2Count.c2.counts!.total} requests (S3 proxy saw ${counter!.proxyRequests()} in all so far)`);
  delete process.env.LANCET_BENCH_BURN_ROUNDS;
  rmSync(p2Base, { recursive: true, force: true });
  const p2Med = (k: keyof typeof p2): number => median(p2[k].map((x) => x.totalMs));
  const speedup = (w: P2Where): number => median(p2[`${w} c1`].map((x) => x.backfillMs)) / median(p2[`${w} c2`].map((x) => x.backfillMs));
  say(`### P2: CPU-bound UDF, ${fmt(P2_ROWS)} rows in ${P2_FRAGS} fragments, concurrency 1 and 2`);
  say();
  say(`Scalar \`bench/udfs-suite.ts#cpuBurn\` (${BURN_ROUNDS} xorshift rounds per row, ~50 µs), default options except \`concurrency\`; every run checked: all rows computed and committed, \`countRows("y IS NOT NULL")\` = rows.`);
  say();
  say(HEAD);
  for (const w of ["local-auto", "local-merge", "s3"] as const) for (const c of [1, 2] as const) say(medianRows(`${LABEL[w]}, c${c}`, p2[`${w} c${c}`]));
  say();
  say("| ratio of medians | concurrency 1 | concurrency 2 |\n|---|---:|---:|");
  say(`| S3 ÷ local auto | **${(p2Med("s3 c1") / p2Med("local-auto c1")).toFixed(2)}×** | **${(p2Med("s3 c2") / p2Med("local-auto c2")).toFixed(2)}×** |`);
  say(`| S3 ÷ local merge | **${(p2Med("s3 c1") / p2Med("local-merge c1")).toFixed(2)}×** | **${(p2Med("s3 c2") / p2Med("local-merge c2")).toFixed(2)}×** |`);
  say(`| local merge ÷ local auto | ${(p2Med("local-merge c1") / p2Med("local-auto c1")).toFixed(2)}× | ${(p2Med("local-merge c2") / p2Med("local-auto c2")).toFixed(2)}× |`);
  say();
  say(`Speed-up c1 ÷ c2 (median backfill times, bind excluded as in the suite's P2): local auto **${speedup("local-auto").toFixed(2)}×**, local merge **${speedup("local-merge").toFixed(2)}×**, S3 **${speedup("s3").toFixed(2)}×**.`);
  say();
  result.p2 = {
    rows: P2_ROWS,
    fragments: P2_FRAGS,
    medianMs: Object.fromEntries(Object.keys(p2).map((k) => [k, r1(p2Med(k as keyof typeof p2))])),
    runsMs: Object.fromEntries(Object.entries(p2).map(([k, v]) => [k, v.map((x) => r1(x.totalMs))])),
    s3OverLocalAuto: { c1: r3(p2Med("s3 c1") / p2Med("local-auto c1")), c2: r3(p2Med("s3 c2") / p2Med("local-auto c2")) },
    s3OverLocalMerge: { c1: r3(p2Med("s3 c1") / p2Med("local-merge c1")), c2: r3(p2Med("s3 c2") / p2Med("local-merge c2")) },
    speedup: { localAuto: r3(speedup("local-auto")), localMerge: r3(speedup("local-merge")), s3: r3(speedup("s3")) },
    requests: p2Count ? { c1: countsJson(p2Count.c1, P2_ROWS, P2_FRAGS), c2: countsJson(p2Count.c2, P2_ROWS, P2_FRAGS) } : undefined,
  };

  // ---- requests ----
  if (counter && p1Count && p2Count) {
    say("### Object-store requests of one S3 job (bind to finished, coordinator + workers)");
    say();
    say("Counted by a small per-method counter in front of test/s3-proxy.ts (both forward every request to radosgw). LIST = GET on the bucket (ListObjectsV2); DELETE includes batched DeleteObjects (POST `?delete`, one request); POST = the rest (multipart uploads). Per 1M rows in parentheses. Bytes: request and response bodies.");
    say();
    say(COUNT_HEAD);
    say(countsRow(`P1 ${rowsLabel(P1_ROWS)} rows, ${P1_ROWS / P1_FRAG} fragments`, p1Count, P1_ROWS, P1_ROWS / P1_FRAG));
    say(countsRow(`P2 ${rowsLabel(P2_ROWS)} rows, ${P2_FRAGS} fragments, c1`, p2Count.c1, P2_ROWS, P2_FRAGS));
    say(countsRow(`P2 ${rowsLabel(P2_ROWS)} rows, ${P2_FRAGS} fragments, c2`, p2Count.c2, P2_ROWS, P2_FRAGS));
    say();
    const counted = [p1Count, p2Count.c1, p2Count.c2].reduce((n, x) => n + x.counts!.total + x.late, 0);
    say(`"After return" = requests in the second after \`backfill\` returned (not in the counts). Cross-check: the S3 proxy (test/s3-proxy.ts) saw ${fmt(counter.proxyRequests())} requests in all, the per-method counter ${fmt(counted)} (jobs + after return); verification reads and clean-up bypass both.`);
    say();
  }
  await counter?.close();
  result.loadAtEnd = loadavg().map((x) => r1(x));
  say(`Load average at the end: ${(result.loadAtEnd as number[]).join(", ")} (1, 5, 15 min; ${CORES} CPUs).`);
  say();
  say("```json");
  say(JSON.stringify(result));
  say("```");
} finally {
  rmSync(root, { recursive: true, force: true });
  if (bucketMade) {
    await deletePrefix("").catch(() => {});
    await client.send(new DeleteBucketCommand({ Bucket: BUCKET })).catch((e: unknown) => note(`could not remove bucket ${BUCKET}: ${String(e)}`));
  }
  client.destroy();
}
