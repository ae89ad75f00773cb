import { test } from "node:test";
import assert from "node:assert/strict";
import { checkQueueBase, classOf, connectionFor, formatResources, parseResources, queueName, redactRedisUrl, redisFailure, satisfies, taskJobId } from "../../src/exec/bullmq/queue.ts";
import { checkTaskEnv, checkUdfEnv, isReservedEnvName, udfBaseEnv } from "../../src/exec/env.ts";
import type { TaskSpec, WorkerConfig } from "../../src/exec/protocol.ts";
import { isBackfillError } from "../../src/errors.ts";
import { resolveBackfillOptions } from "../../src/options.ts";
import { verifyStoredBundle } from "../../src/udf/bundle.ts";

const config: WorkerConfig = { bundlePath: "/d/_lancet/t/udfs/x.mjs", exportName: "f", label: "f", dbDir: "/d", table: "t", column: "y", dataType: "float64", inputs: ["x"], checkpointRoot: "/d/_lancet/t/ckp", intraApplierConcurrency: 1 };
const task: TaskSpec = { taskId: "a", fragmentId: 3, version: 7, globalOffset: 0, gaps: [{ start: 100, end: 200 }], selection: "", batchKey: "y/3-abc", checkpointSize: 100, maxCheckpointSize: 100 };

test("task job ids are deterministic, never integers, never contain ':', and change with what the task computes", () => {
  const id = taskJobId(config, task);
  assert.equal(taskJobId(config, { ...task, taskId: "other", version: 8 }), id, "the same rows of the same data: the same id");
  assert.match(id, /^t-f3-o100-[0-9a-f]{20}$/);
  assert.ok(!id.includes(":") && !/^\d+$/.test(id));
  assert.notEqual(taskJobId(config, { ...task, gaps: [{ start: 100, end: 150 }] }), id);
  assert.notEqual(taskJobId(config, { ...task, batchKey: "y/3-def" }), id);
  assert.notEqual(taskJobId({ ...config, column: "z" }, task), id);
  assert.notEqual(taskJobId({ ...config, dbDir: "/e" }, task), id);
});

test("resources: parsing, formatting, routing class and satisfaction", () => {
  assert.deepEqual(parseResources("cpu=4, gpu=1,memory=16384", "--resources"), { cpu: 4, gpu: 1, memory: 16384 });
  assert.throws(() => parseResources("tpu=2", "--resources"), /--resources: "tpu=2" is not a resource; write cpu=N, gpu=N or memory=MiB/);
  assert.throws(() => parseResources("cpu=four", "--resources"), /"cpu=four" is not a resource/);
  assert.equal(formatResources({ cpu: 4, gpu: 1 }), "cpu=4,gpu=1");
  assert.equal(formatResources({}), "none");
  assert.equal(classOf({ gpu: 1 }), "gpu");
  assert.equal(classOf({ cpu: 8, memory: 4096 }), "cpu");
  assert.equal(queueName("lancet", "gpu"), "lancet-gpu");
  assert.ok(satisfies({ cpu: 4, gpu: 1, memory: 8192 }, { gpu: 1, cpu: 2, memory: 4096 }));
  assert.ok(!satisfies({ cpu: 4 }, { gpu: 1 }));
  assert.ok(!satisfies({ cpu: 4 }, { cpu: 8 }));
  assert.ok(!satisfies({ memory: 1024 }, { memory: 2048 }));
  assert.ok(satisfies({ cpu: 4 }, { memory: 2048 }), "a worker that does not advertise memory is not refused for it");
});

test("queue names and Redis URLs are checked with clear errors", () => {
  assert.equal(checkQueueBase("my.queue_1-a", "--queue"), "my.queue_1-a");
  assert.throws(() => checkQueueBase("a:b", "--queue"), /--queue "a:b" is not a valid queue name; use letters, digits, '.', '_' or '-' \(no ':'\)/);
  const c = connectionFor("rediss://user:p%40ss@cache.example:6380/2") as Record<string, unknown>;
  assert.deepEqual([c.host, c.port, c.username, c.password, c.db, c.maxRetriesPerRequest], ["cache.example", 6380, "user", "p@ss", 2, null]);
  assert.ok(c.tls);
  assert.equal((connectionFor("redis://10.0.0.5") as { port: number }).port, 6379);
  assert.throws(() => connectionFor("http://x:6379", "--redis"), /--redis "http:\/\/x:6379" is not a Redis URL; write redis:\/\/HOST:PORT/);
  assert.throws(() => connectionFor("not a url", "--redis"), /is not a Redis URL/);
});

test("executor and env options are validated; distributed concurrency is not bound by this machine's cores", () => {
  const o = resolveBackfillOptions({ executor: { redis: "redis://127.0.0.1:6379", queue: "q", admissionTimeoutMs: 0, redisOutageMs: 1000 }, env: { API_KEY: "k" } });
  assert.deepEqual(o.executor, { redis: "redis://127.0.0.1:6379", queue: "q", admissionTimeoutMs: 0, redisOutageMs: 1000 });
  assert.equal(o.concurrency, 8);
  assert.equal(o.concurrencyGiven, false);
  assert.equal(resolveBackfillOptions({ executor: { redis: "redis://h" }, concurrency: 3 }).concurrencyGiven, true);
  assert.equal(resolveBackfillOptions({}).executor, "local");
  const bad: [unknown, RegExp][] = [
    [{ executor: "remote" }, /options.executor must be "local" or an object/],
    [{ executor: { redis: "h:6379" } }, /options.executor .redis must be a Redis URL/],
    [{ executor: { redis: "redis://h", queue: "a b" } }, /options.executor .queue must be letters/],
    [{ executor: { redis: "redis://h", host: "x" } }, /options.executor has an unknown key host/],
    [{ executor: { redis: "redis://h", admissionTimeoutMs: -1 } }, /admissionTimeoutMs must be an integer >= 0/],
    [{ executor: { redis: "redis://h", redisOutageMs: 0 } }, /redisOutageMs must be a positive integer/],
    [{ env: { "1BAD": "x" } }, /options.env: "1BAD" is not an environment variable name/],
    [{ env: { A: 1 } }, /options.env.A must be a string/],
    [{ env: ["A=1"] }, /options.env must map variable names to strings/],
    [{ env: { NODE_OPTIONS: "--require=/tmp/evil.js" } }, /options.env may not set NODE_OPTIONS/],
  ];
  for (const [opts, re] of bad) assert.throws(() => resolveBackfillOptions(opts as never), re);
});

test("Redis URLs with a password, an ACL user or TLS become ioredis options; rediss:// means tls: {}", () => {
  const pick = (url: string) => {
    const c = connectionFor(url) as Record<string, unknown>;
    return { host: c.host, port: c.port, username: c.username, password: c.password, db: c.db, tls: c.tls };
  };
  assert.deepEqual(pick("redis://:s3cret@10.0.0.5:6380"), { host: "10.0.0.5", port: 6380, username: undefined, password: "s3cret", db: undefined, tls: undefined });
  assert.deepEqual(pick("redis://lancet:p%3Aw%2Fd%40x@redis.lancet.svc:6379/1"), { host: "redis.lancet.svc", port: 6379, username: "lancet", password: "p:w/d@x", db: 1, tls: undefined });
  assert.deepEqual(pick("rediss://:pw@cache.example"), { host: "cache.example", port: 6379, username: undefined, password: "pw", db: undefined, tls: {} });
  assert.deepEqual(pick("rediss://cache.example:6380"), { host: "cache.example", port: 6380, username: undefined, password: undefined, db: undefined, tls: {} });
  assert.equal(pick("redis://[::1]:6379").host, "::1");
  assert.throws(() => connectionFor("redis://:pw@h:6379/x", "--redis"), /--redis "redis:\/\/:\*\*\*@h:6379\/x" names database "x", not a number/);
});

test("a Redis password is never printed: URLs are masked in messages, errors and options errors", () => {
  const cases: [string, string][] = [
    ["redis://127.0.0.1:6379", "redis://127.0.0.1:6379"],
    ["redis://:s3cret@127.0.0.1:6379", "redis://:***@127.0.0.1:6379"],
    ["redis://bob:s3cret@h:6379/2", "redis://bob:***@h:6379/2"],
    ["rediss://:p%40ss@h", "rediss://:***@h"],
    ["http://u:s3cret@x", "http://u:***@x"],
    ["not a url //u:s3cret@x", "not a url //u:***@x"],
  ];
  for (const [url, shown] of cases) assert.equal(redactRedisUrl(url), shown);
  for (const bad of ["http://u:s3cret@x:6379", "redis://:s3cret@h/x"]) {
    assert.throws(() => connectionFor(bad, "--redis"), (e: Error) => !e.message.includes("s3cret") && e.message.includes("***"));
  }
  const wrong = redisFailure("redis://:s3cret@h:1", new Error("WRONGPASS invalid username-password pair or user is disabled."));
  assert.ok(isBackfillError(wrong, "QUEUE_UNAVAILABLE"));
  assert.match(wrong.message, /^Redis at redis:\/\/:\*\*\*@h:1 did not accept the credentials: WRONGPASS .*; put the right password in the URL/);
  assert.match(redisFailure("redis://h:1", new Error("NOAUTH Authentication required.")).message, /did not accept the credentials: NOAUTH/);
  assert.match(redisFailure("redis://:s3cret@h:1", new Error("connect ECONNREFUSED")).message, /^cannot reach Redis at redis:\/\/:\*\*\*@h:1: connect ECONNREFUSED; start redis-server/);
  assert.throws(
    () => resolveBackfillOptions({ executor: { redis: "h:6379" } }),
    (e: Error) => /options.executor .redis must be a Redis URL/.test(e.message),
  );
  assert.throws(
    () => resolveBackfillOptions({ executor: { redis: "tcp://:s3cret@h:6379" } }),
    (e: Error) => e.message.includes("tcp://:***@h:6379") && !e.message.includes("s3cret"),
  );
});

test("UDF environment: names that change how Node or the loader starts are refused (CONFIG_INVALID), others pass", () => {
  const reserved = ["NODE_OPTIONS", "node_options", "NODE_PATH", "NODE_EXTRA_CA_CERTS", "NODE_REPL_EXTERNAL_MODULE", "NODE_V8_COVERAGE", "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "DYLD_INSERT_LIBRARIES", "OPENSSL_CONF", "OPENSSL_MODULES", "GCONV_PATH", "BASH_ENV", "PERL5OPT", "PYTHONPATH", "PYTHONWARNINGS", "RUBYOPT", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "GIT_CONFIG_COUNT", "GIT_SSH_COMMAND", "BASH_FUNC_x%%", "BROWSER", "https_proxy", "HTTP_PROXY", "LESSOPEN", "SSH_ASKPASS", "PROMPT_COMMAND"];
  for (const name of reserved) {
    assert.ok(isReservedEnvName(name), name);
    assert.throws(
      () => resolveBackfillOptions({ env: { [name]: "--require=/tmp/evil.js" } }),
      (e: unknown) => isBackfillError(e, "CONFIG_INVALID") && (e.message.startsWith(`options.env may not set ${name}: it can change how Node, the system loader or a program the UDF starts loads code or routes traffic (reserved: NODE_*, LD_*`) || /is not an environment variable name/.test(e.message)),
      name,
    );
  }
  for (const name of ["API_KEY", "HF_TOKEN", "NODEJS_THING", "MY_NODE_OPTIONS", "PATH", "CUDA_VISIBLE_DEVICES", "LANCET_TEST_ECHO"]) {
    assert.ok(!isReservedEnvName(name), name);
    assert.deepEqual(resolveBackfillOptions({ env: { [name]: "v" } }).env, { [name]: "v" });
  }
  assert.throws(() => checkUdfEnv({ LD_PRELOAD: "/x.so" }, "task t-1 of column y (table t): env", { table: "t", column: "y" }), (e: unknown) => isBackfillError(e, "CONFIG_INVALID") && e.context.column === "y" && /^task t-1 of column y \(table t\): env may not set LD_PRELOAD/.test(e.message));
});

test("a task from Redis may not set what the worker provides its UDFs (PATH, HOME, locale, --pass-env names)", () => {
  for (const name of ["PATH", "HOME", "TMPDIR", "LC_ALL", "LANG", "MY_PASSED"]) {
    assert.throws(() => checkTaskEnv({ [name]: "/tmp/evil" }, "task t-1 of column y (table t): env", ["PATH", "HOME", "MY_PASSED"]), (e: unknown) => isBackfillError(e, "CONFIG_INVALID") && e.message.includes(`may not set ${name}: the worker provides it`), name);
  }
  assert.deepEqual(checkTaskEnv({ API_KEY: "k" }, "task", ["PATH"]), { API_KEY: "k" });
});

test("a worker's UDF processes start from PATH, HOME, TMPDIR, the locale and the --pass-env names only", () => {
  const from = { PATH: "/bin", HOME: "/home/w", TMPDIR: "/tmp", LANG: "C.UTF-8", LC_ALL: "C", LANCET_REDIS_URL: "redis://:s3cret@h:6379", AWS_SECRET_ACCESS_KEY: "x", HF_TOKEN: "hf", NODE_OPTIONS: "--inspect" };
  assert.deepEqual(udfBaseEnv(from), { PATH: "/bin", HOME: "/home/w", TMPDIR: "/tmp", LANG: "C.UTF-8", LC_ALL: "C" });
  assert.deepEqual(udfBaseEnv(from, ["HF_TOKEN", "MISSING"]), { PATH: "/bin", HOME: "/home/w", TMPDIR: "/tmp", LANG: "C.UTF-8", LC_ALL: "C", HF_TOKEN: "hf" });
});

test("a task's bundle must be a content-addressed bundle of the table's own store (shape, before any file is touched)", () => {
  const hash = "a".repeat(64);
  const ok = { dbDir: "/d", table: "t", bundlePath: `/d/_lancet/t/udfs/${hash}.mjs`, checkpointRoot: "/d/_lancet/t/ckp" };
  verifyStoredBundle(ok, { subject: "task x", shapeOnly: true });
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ bundlePath: "/tmp/evil.mjs" }, /names UDF bundle "\/tmp\/evil.mjs", which is not a content-addressed bundle of table t's store \(\/d\/_lancet\/t\/udfs\/<sha256>.mjs\)/],
    [{ bundlePath: `/d/_lancet/t/udfs/../../../../tmp/${hash}.mjs` }, /which is not an absolute path without '..'/],
    [{ bundlePath: `/d/_lancet/other/udfs/${hash}.mjs` }, /not a content-addressed bundle of table t's store/],
    [{ bundlePath: "/d/_lancet/t/udfs/evil.mjs" }, /not a content-addressed bundle/],
    [{ bundlePath: `_lancet/t/udfs/${hash}.mjs` }, /not an absolute path/],
    [{ table: ".." }, /names table "\.\.", which is not a table name/],
    [{ table: "a/b" }, /which is not a table name/],
    [{ dbDir: "d" }, /names database directory "d", which is not an absolute path/],
    [{ checkpointRoot: "/elsewhere/ckp" }, /names checkpoint folder "\/elsewhere\/ckp", which is not table t's own \(\/d\/_lancet\/t\/ckp\)/],
  ];
  for (const [patch, re] of bad) {
    assert.throws(
      () => verifyStoredBundle({ ...ok, ...patch } as typeof ok, { subject: "task x of column y (table t)", context: { table: "t", column: "y" }, shapeOnly: true }),
      (e: unknown) => isBackfillError(e, "CONFIG_INVALID") && !e.retryable && re.test(e.message) && e.message.startsWith("task x of column y (table t) names") && /; refused: workers run only/.test(e.message),
      JSON.stringify(patch),
    );
  }
});
