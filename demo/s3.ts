/**
 * Lancet on S3-compatible object storage, with no shared filesystem: builds a 60,000-row table at
 * s3://BUCKET/lancet-demo-<time>, binds two UDF columns from demo/udfs.ts, backfills them (worker
 * processes read the table and write checkpoints in the bucket), then lists what Lancet keeps there
 * and shows that a re-run computes nothing.
 *
 *   bash tools/s3-server.sh /tmp/lancet-s3   # a local S3 server (Ceph radosgw from Debian's packages)
 *   npm run demo:s3                          # reads /tmp/lancet-s3/s3.env
 *
 * Against another server: LANCET_TEST_S3_ENDPOINT/_REGION/_BUCKET/_ACCESS_KEY/_SECRET, or
 * `npm run demo:s3 -- --env-file FILE` with those variables.
 */
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import { arrow, lancedb } from "../src/arrow.ts";
import { addColumns, backfill, listJobs } from "../src/index.ts";

const { values } = parseArgs({ options: { "env-file": { type: "string", default: "/tmp/lancet-s3/s3.env" }, rows: { type: "string", default: "60000" } } });
const fromFile: Record<string, string> = {};
if (!process.env.LANCET_TEST_S3_ENDPOINT) {
  const file = values["env-file"]!;
  if (!existsSync(file)) {
    process.stderr.write(`demo:s3: no S3 server settings: start one with \`bash tools/s3-server.sh /tmp/lancet-s3\` (Debian, root; ~15 s) or set LANCET_TEST_S3_ENDPOINT, _REGION, _BUCKET, _ACCESS_KEY, _SECRET\n`);
    process.exit(2);
  }
  for (const line of readFileSync(file, "utf8").split("\n")) {
    const m = /^(?:export\s+)?(LANCET_TEST_S3_\w+)=(.*)$/.exec(line.trim());
    if (m) fromFile[m[1]!] = m[2]!.replace(/^["']|["']$/g, "");
  }
}
const env = (k: string): string => {
  const v = process.env[`LANCET_TEST_S3_${k}`] ?? fromFile[`LANCET_TEST_S3_${k}`];
  if (!v) throw new Error(`LANCET_TEST_S3_${k} is not set`);
  return v;
};
const endpoint = env("ENDPOINT");
const bucket = env("BUCKET");
const storageOptions = { endpoint, region: env("REGION"), access_key_id: env("ACCESS_KEY"), secret_access_key: env("SECRET") };
const db = `s3://${bucket}/lancet-demo-${Date.now()}`;
const UDFS = fileURLToPath(new URL("./udfs.ts", import.meta.url));
const ROWS = Number(values.rows);
const out = (s = ""): void => void process.stdout.write(s + "\n");

// ---- 1. a table on S3, written by plain LanceDB ------------------------------------------------
const conn = await lancedb.connect(db, { storageOptions: { ...storageOptions, allow_http: String(endpoint.startsWith("http:")), virtual_hosted_style_request: "false" } });
const words = "lance arrow column table fragment vector query index batch commit checkpoint worker bucket object".split(" ");
const part = (from: number, n: number) =>
  new arrow.Table({
    id: arrow.vectorFromArray(Array.from({ length: n }, (_, i) => from + i), new arrow.Int32()),
    x: arrow.vectorFromArray(Array.from({ length: n }, (_, i) => ((from + i) % 1000) / 10), new arrow.Float64()),
    text: arrow.vectorFromArray(Array.from({ length: n }, (_, i) => Array.from({ length: 3 + ((from + i) % 9) }, (_, k) => words[(from + i + k * 7) % words.length]).join(" ")), new arrow.Utf8()),
  });
const per = Math.ceil(ROWS / 3);
const table = await conn.createTable("docs", part(0, per) as never);
for (let f = 1; f < 3; f++) await table.add(part(f * per, Math.min(per, ROWS - f * per)) as never);
out(`Table docs at ${db}: ${await table.countRows()} rows in 3 fragments (endpoint ${endpoint})`);

// ---- 2. two UDF columns, backfilled with everything in the bucket -----------------------------------
const ref = { db, table: "docs", storageOptions };
await addColumns(ref, { words: `${UDFS}#wordCount`, x2: `${UDFS}#xSquared` });
for (const column of ["words", "x2"]) {
  const r = await backfill(ref, column, { concurrency: 2 });
  out(`backfill of ${column}: ${r.status}, ${r.metrics.rowsComputed} rows computed, ${r.metrics.commits} commit(s) (${r.events.find((e) => e.type === "commit")?.message ?? "no commit"})`);
}
const sample = (await (await conn.openTable("docs")).query().select(["id", "text", "words", "x", "x2"]).limit(3).toArray()) as Record<string, unknown>[];
for (const row of sample) out(`  ${JSON.stringify(row)}`);

// ---- 3. what Lancet keeps in the bucket -----------------------------------------------------------
const client = new S3Client({ endpoint, region: storageOptions.region, forcePathStyle: true, credentials: { accessKeyId: storageOptions.access_key_id, secretAccessKey: storageOptions.secret_access_key } });
const prefix = db.slice(`s3://${bucket}/`.length);
const keys: string[] = [];
let token: string | undefined;
do {
  const r = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${prefix}/`, ContinuationToken: token }));
  for (const o of r.Contents ?? []) keys.push(o.Key!.slice(prefix.length + 1));
  token = r.NextContinuationToken;
} while (token);
client.destroy();
const group = (k: string): string => (k.startsWith("_lancet/") ? k.split("/").slice(0, 4).join("/").replace(/\/[^/]*\.(json|mjs|lock|lease)$/, "/…") : k.split("/")[0]!);
const counts = new Map<string, number>();
for (const k of keys) counts.set(group(k), (counts.get(group(k)) ?? 0) + 1);
out(`\nObjects under ${db}/ (${keys.length}):`);
for (const [g, n] of [...counts].sort()) out(`  ${g.padEnd(44)} ${n}`);

// ---- 4. a re-run computes nothing; the jobs table is in the bucket too ---------------------------------
const again = await backfill(ref, "words");
out(`\nRe-run of words: ${again.metrics.rowsComputed} rows computed. Jobs in ${db}/_lancet_jobs.lance: ${(await listJobs(db)).length}`);
out(`Try the CLI on it: npx lancet jobs --db ${db} --storage-option endpoint=${endpoint} (credentials from AWS_* or --storage-option)`);
