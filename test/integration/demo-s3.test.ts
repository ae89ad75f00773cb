/**
 * `npm run demo:s3` (demo/s3.ts) as a user runs it, against the test S3 server: a backfill of two UDF
 * columns of a table on S3, Lancet's objects listed under the database's prefix, a re-run that computes
 * nothing.
 */
import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { test } from "node:test";
import { REPO } from "../helpers.ts";
import { requireS3, s3Server } from "../s3.ts";

test("npm run demo:s3: a table on S3 backfilled, Lancet's objects listed under its prefix, a re-run that computes nothing", { skip: requireS3() }, async () => {
  const env = await s3Server();
  const r = spawnSync(process.execPath, [path.join(REPO, "demo", "s3.ts"), "--rows", "6000"], {
    env: { ...process.env, LANCET_TEST_S3_ENDPOINT: env.endpoint, LANCET_TEST_S3_REGION: env.region, LANCET_TEST_S3_BUCKET: env.bucket, LANCET_TEST_S3_ACCESS_KEY: env.accessKeyId, LANCET_TEST_S3_SECRET: env.secretAccessKey },
    encoding: "utf8",
    timeout: 180_000,
  });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^Table docs at s3:\/\/.*: 6000 rows in 3 fragments/m);
  assert.match(r.stdout, /^backfill of words: finished, 6000 rows computed/m);
  assert.match(r.stdout, /^backfill of x2: finished, 6000 rows computed/m);
  assert.match(r.stdout, /_lancet\/docs\/udfs\/…/);
  assert.match(r.stdout, /_lancet_jobs\.lance/);
  assert.match(r.stdout, /^Re-run of words: 0 rows computed/m);
  assert.ok(!r.stdout.includes(env.secretAccessKey) && !r.stderr.includes(env.secretAccessKey));
});
