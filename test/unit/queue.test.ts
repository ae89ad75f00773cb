import { test } from "node:test";
import assert from "node:assert/strict";
import { checkQueueBase, classOf, connectionFor, formatResources, parseResources, queueName, satisfies, taskJobId } from "../../src/exec/bullmq/queue.ts";
import type { TaskSpec, WorkerConfig } from "../../src/exec/protocol.ts";
import { resolveBackfillOptions } from "../../src/options.ts";

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
  ];
  for (const [opts, re] of bad) assert.throws(() => resolveBackfillOptions(opts as never), re);
});
