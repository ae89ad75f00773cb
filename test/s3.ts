/**
 * The S3 server for tests of tables and state on object storage: a real single-node Ceph radosgw
 * (put-if-absent, which LanceDB's commits need; see tools/s3-server.sh).
 *
 * Where the LANCET_TEST_S3_* variables are set (`.ci/run` sets them) the tests use that server;
 * otherwise, when Debian's radosgw is installed, the first {@link s3Server} call of a test process
 * starts one in a temporary directory (~15 s) that every later call shares, and it is stopped by PID
 * when the process exits. Without either, S3 tests skip — except where CI=true or
 * LANCET_TEST_S3_ENDPOINT is set, where {@link requireS3} adds a failing test instead.
 */
import { execFile, execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "node:test";
import { CreateBucketCommand, S3Client } from "@aws-sdk/client-s3";

export interface S3Env {
  endpoint: string;
  region: string;
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** as LanceDB's storageOptions take them: endpoint, region, access_key_id, secret_access_key, allow_http "true", virtual_hosted_style_request "false" */
  storageOptions: Record<string, string>;
}

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const SCRIPT = path.join(ROOT, "tools", "s3-server.sh");

function radosgwInstalled(): boolean {
  try {
    execFileSync("sh", ["-c", "command -v radosgw"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

let skipReason: string | false | undefined;
let failingTestAdded = false;

/** Why S3 tests are skipped here, or false when they run. Where CI=true or LANCET_TEST_S3_ENDPOINT is set, a missing server is not a skip: requireS3() adds a failing test instead. */
export function requireS3(): string | false {
  if (skipReason === undefined) {
    skipReason = process.env.LANCET_TEST_S3_ENDPOINT || radosgwInstalled()
      ? false
      : "no S3 server: LANCET_TEST_S3_ENDPOINT is unset and radosgw is not installed (apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw; .ci/run does it)";
  }
  if (skipReason && !failingTestAdded && (process.env.CI === "true" || process.env.LANCET_TEST_S3_ENDPOINT)) {
    failingTestAdded = true;
    const reason = skipReason;
    test("an S3 server is available (CI=true or LANCET_TEST_S3_ENDPOINT is set, so the S3 tests must run)", () => {
      throw new Error(`${reason}; in CI the S3 tests must run, not skip`);
    });
  }
  return skipReason;
}

function envFrom(vars: Record<string, string | undefined>): S3Env {
  const get = (name: string, fallback?: string): string => {
    const v = vars[name] || fallback;
    if (!v) throw new Error(`${name} is not set (the LANCET_TEST_S3_* variables come together; tools/s3-server.sh writes them)`);
    return v;
  };
  const endpoint = get("LANCET_TEST_S3_ENDPOINT").replace(/\/+$/, "");
  const region = get("LANCET_TEST_S3_REGION", "us-east-1");
  const accessKeyId = get("LANCET_TEST_S3_ACCESS_KEY");
  const secretAccessKey = get("LANCET_TEST_S3_SECRET");
  return {
    endpoint,
    region,
    bucket: get("LANCET_TEST_S3_BUCKET"),
    accessKeyId,
    secretAccessKey,
    storageOptions: {
      endpoint,
      region,
      access_key_id: accessKeyId,
      secret_access_key: secretAccessKey,
      allow_http: "true",
      virtual_hosted_style_request: "false",
    },
  };
}

/** Parses the `export NAME=VALUE` lines tools/s3-server.sh writes to DIR/s3.env. */
function readEnvFile(file: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(file, "utf8").split("\n")) {
    const m = /^(?:export\s+)?([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m) out[m[1]!] = m[2]!.replace(/^['"]|['"]$/g, "");
  }
  return out;
}

let server: Promise<S3Env> | undefined;

async function startLocal(): Promise<S3Env> {
  if (!radosgwInstalled()) throw new Error("no S3 server: LANCET_TEST_S3_ENDPOINT is unset and radosgw is not installed");
  const dir = mkdtempSync(path.join(tmpdir(), "lancet-s3-"));
  // Registered before the start so a half-started cluster is stopped too (the stop mode kills by the
  // PIDs in DIR/run, never by name, and removes DIR).
  let stopped = false;
  const stop = () => {
    if (stopped) return;
    stopped = true;
    spawnSync("bash", [SCRIPT, "stop", dir], { stdio: "ignore", timeout: 30_000 });
  };
  process.once("exit", stop);
  // A test runner's timeout or ^C ends the process by a signal, which skips "exit": stop the server,
  // then die of the same signal.
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.once(sig, () => {
      stop();
      process.kill(process.pid, sig);
    });
  }
  await new Promise<void>((resolve, reject) => {
    execFile("bash", [SCRIPT, "start", dir], { timeout: 180_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`tools/s3-server.sh failed: ${err.message}\n${stdout}\n${stderr}`));
      else resolve();
    });
  });
  return envFrom(readEnvFile(path.join(dir, "s3.env")));
}

/** The test S3 server: from the LANCET_TEST_S3_* environment when set (CI), else started once per test process with tools/s3-server.sh in a temp dir (only when radosgw is installed) and stopped at process exit. */
export async function s3Server(): Promise<S3Env> {
  if (process.env.LANCET_TEST_S3_ENDPOINT) return envFrom(process.env);
  server ??= startLocal();
  try {
    return await server;
  } catch (e) {
    server = undefined;
    throw e;
  }
}

/** An S3 client for ENV (path-style, as radosgw on loopback needs). */
function s3Client(env: S3Env, endpoint: string = env.endpoint): S3Client {
  return new S3Client({
    endpoint,
    region: env.region,
    forcePathStyle: true,
    credentials: { accessKeyId: env.accessKeyId, secretAccessKey: env.secretAccessKey },
  });
}

/** A fresh, empty bucket on that server (unique name), for one test's isolation; returns its name. */
export async function freshBucket(env: S3Env): Promise<string> {
  const name = `lancet-t-${Date.now().toString(36)}-${randomBytes(5).toString("hex")}`;
  const client = s3Client(env);
  try {
    await client.send(new CreateBucketCommand({ Bucket: name }));
  } finally {
    client.destroy();
  }
  return name;
}
