/**
 * The CLI as a newcomer meets it (issue 11): help for every command, typo suggestions, one exit-code
 * rule with messages that name flags, the library's JSON shape, honest output, pipes, --force.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { COMMANDS, run, type CliIo } from "../../src/cli/main.ts";
import { ProgressView } from "../../src/cli/progress.ts";
import { editDistance, flagText, formatHelp, suggest, translateMessage, type CommandSpec } from "../../src/cli/shared.ts";
import { addColumns, backfill, isBackfillError } from "../../src/index.ts";
import { ErrorsWriter } from "../../src/jobs/errors-table.ts";
import { emptyMetrics } from "../../src/jobs/record.ts";
import { resolveBackfillOptions } from "../../src/options.ts";
import { makeTable, REPO, tempDb, udfRef } from "../helpers.ts";

const BIN = path.join(REPO, "bin/lancet.mjs");

function io(isTTY = false): CliIo & { out: string; err: string } {
  const o = { out: "", err: "", isTTY } as CliIo & { out: string; err: string };
  return Object.assign(o, {
    stdout: { write: (s: string) => (o.out += s) },
    stderr: { write: (s: string) => (o.err += s) },
  });
}
const lastJson = (s: string): Record<string, unknown> => JSON.parse(s.trim().split("\n").at(-1)!) as Record<string, unknown>;
const spec = (name: string): CommandSpec => COMMANDS.find((c) => c.name === name)!;
/** Text of Node's own argument parser, which must never reach users. */
const PARSE_ARGS_LEAK = /ERR_PARSE_ARGS|Unknown option|parseArgs|To specify an option argument starting with/;

// ---- 1. help ------------------------------------------------------------------------------------

test("every command and subcommand answers --help, -h and `lancet help CMD` with its flags, defaults and an example", async () => {
  for (const c of COMMANDS) {
    const words = c.name.split(" ");
    const expected = formatHelp(c);
    const withMistake = c.name === "help" ? [] : [[...words, "--no-such-flag", "--help"]];
    for (const argv of [[...words, "--help"], [...words, "-h"], ["help", ...words], ...withMistake]) {
      const o = io();
      assert.equal(await run(argv, o), 0, `${argv.join(" ")}: ${o.err}`);
      assert.equal(o.out, expected, argv.join(" "));
      assert.equal(o.err, "", argv.join(" "));
    }
    assert.match(expected, new RegExp(`^lancet ${c.name} — `));
    assert.match(expected, /\nExample:\n {2}lancet \S/);
    for (const f of c.flags) {
      assert.match(expected, new RegExp(`--${f.name}\\b`), `${c.name} --help lists --${f.name}`);
      if (f.default !== undefined) assert.ok(expected.includes(`(default: ${f.default})`), `${c.name} --help shows --${f.name}'s default`);
    }
  }
  // The overview stays the overview and names every command.
  const o = io();
  assert.equal(await run(["--help"], o), 0);
  for (const c of COMMANDS) assert.ok(o.out.includes(`lancet ${c.name} `), c.name);
  assert.match(o.out, /lancet COMMAND --help/);
  const h = io();
  assert.equal(await run(["help"], h), 0);
  assert.equal(h.out, o.out);
});

test("spawned: `lancet CMD --help` of every command exits 0 with its help and leaks no parser text", () => {
  for (const c of COMMANDS) {
    const r = spawnSync(process.execPath, [BIN, ...c.name.split(" "), "--help"], { encoding: "utf8" });
    assert.equal(r.status, 0, `${c.name}: ${r.stderr}`);
    assert.equal(r.stdout, formatHelp(c), c.name);
    assert.doesNotMatch(r.stdout + r.stderr, PARSE_ARGS_LEAK, c.name);
  }
});

// ---- 2. suggestions and one exit-code rule ------------------------------------------------------

test("typos get a suggestion and exit 2 pointing to the command's help", async () => {
  const cases: [string[], RegExp, string][] = [
    [["backfil"], /unknown command "backfil"; did you mean backfill\?/, "lancet --help"],
    [["help", "refragmnet"], /unknown command "refragmnet"; did you mean refragment\?/, "lancet --help"],
    [["backfill", "--db", "d", "--table", "t", "--column", "y", "--concurency", "2"], /unknown flag --concurency for backfill; did you mean --concurrency\?/, "lancet backfill --help"],
    [["backfill", "--admissionTimeoutMs", "5"], /unknown flag --admissionTimeoutMs for backfill; did you mean --admission-timeout-ms\?/, "lancet backfill --help"],
    [["jobs", "shwo", "x", "--db", "d"], /unknown jobs command "shwo"; did you mean show\?/, "lancet jobs --help"],
    [["jobs", "show", "x", "--db", "d", "--jsn"], /unknown flag --jsn for jobs show; did you mean --json\?/, "lancet jobs show --help"],
    [["jobs", "--db", "d", "--status", "runing"], /--status must be one of .*\(got "runing"\); did you mean running\?/, "lancet jobs --help"],
    [["status", "--db", "d", "--tabel", "t"], /unknown flag --tabel for status; did you mean --table\?/, "lancet status --help"],
    [["errors", "-x"], /unknown flag -x for errors/, "lancet errors --help"],
  ];
  for (const [argv, message, help] of cases) {
    const o = io();
    assert.equal(await run(argv, o), 2, argv.join(" "));
    assert.match(o.err, new RegExp(`^lancet: ${message.source}`), argv.join(" "));
    assert.ok(o.err.includes(`Run \`${help}\` for usage.`), `${argv.join(" ")}: ${o.err}`);
    assert.doesNotMatch(o.err, PARSE_ARGS_LEAK);
  }
  // Far from everything: no guess.
  const o = io();
  assert.equal(await run(["frobnicate"], o), 2);
  assert.match(o.err, /unknown command "frobnicate"\n/);
});

test("the suggestion rule: edit distance with swaps, scaled to the word's length", () => {
  assert.equal(editDistance("backfil", "backfill"), 1);
  assert.equal(editDistance("shwo", "show"), 1, "a swap of neighbours is one edit");
  assert.equal(suggest("concurency", ["concurrency", "checkpoint-size"]), "concurrency");
  assert.equal(suggest("sttaus", ["status", "errors"]), "status");
  assert.equal(suggest("xyz", ["db", "job"]), undefined);
  assert.equal(suggest("max-rows", ["max-rows-per-fragment", "force"]), "max-rows-per-fragment", "a unique prefix");
});

test("usage errors exit 2 naming the flag; runtime errors exit 1 with `lancet: error CODE:`", async () => {
  await using t = await tempDb();
  await makeTable(t, 1, 50);
  await addColumns({ db: t.dir, table: "t" }, { y: udfRef("doubled") });
  const base = ["backfill", "--db", t.dir, "--table", "t", "--column", "y"];
  const usage: [string[], RegExp][] = [
    [["backfill", "--table", "t", "--column", "y"], /^lancet: --db DIR\|URI is required \(or LANCET_DB\)/],
    [[...base, "--concurrency", "abc"], /^lancet: --concurrency must be an integer \(got "abc"\)/],
    [[...base, "--concurrency"], /^lancet: --concurrency needs a value \(N\)/],
    [[...base, "--json=yes"], /^lancet: --json takes no value/],
    [[...base, "--concurrency", "0"], /^lancet: --concurrency must be a positive integer .*\(got 0\)/],
    [[...base, "--checkpoint-size", "500", "--max-checkpoint-size", "100"], /^lancet: --max-checkpoint-size \(100\) must be at least --checkpoint-size \(500\)/],
    [[...base, "--error-policy", "sometimes"], /^lancet: --error-policy must be "fail", "skip" or "retry:N" \(got "sometimes"\)/],
    [[...base, "--commit-mode", "fast"], /^lancet: --commit-mode must be "auto", "graft" or "merge"/],
    [[...base, "--env", "NODE_OPTIONS=--inspect"], /^lancet: --env/],
    [[...base, "--where", "nope >"], /^lancet: --where "nope >" is not a valid filter on table t/],
    [[...base, "--queue", "q"], /^lancet: --queue and --admission-timeout-ms need --redis URL/],
    [["refragment", "--db", t.dir, "--table", "t", "--max-rows-per-fragment", "0"], /^lancet: --max-rows-per-fragment must be a positive integer \(got 0\)/],
    [["jobs", "show", "--db", t.dir], /^lancet: jobs show needs ID/],
    [["worker", "--redis", "redis://127.0.0.1:1", "--resources", "tpu=4"], /^lancet: --resources: "tpu=4" is not a resource/],
    [["worker", "--redis", "redis://127.0.0.1:1", "--queue", "a:b"], /^lancet: --queue "a:b" is not a valid queue name/],
  ];
  for (const [argv, message] of usage) {
    const o = io();
    assert.equal(await run(argv, o), 2, `${argv.join(" ")}: ${o.err}`);
    assert.match(o.err, message, argv.join(" "));
    assert.match(o.err, /Run `lancet [a-z -]*--help` for usage\./);
    assert.doesNotMatch(o.err, /options\.|ERR_PARSE_ARGS/, argv.join(" "));
  }
  const runtime: [string[], RegExp][] = [
    [["backfill", "--db", t.dir, "--table", "t", "--column", "nope"], /^lancet: error COLUMN_NOT_FOUND: table t has no column nope/],
    [["backfill", "--db", t.dir, "--table", "missing", "--column", "y"], /^lancet: error TABLE_NOT_FOUND: /],
    [["jobs", "show", "no-such-id", "--db", t.dir], /^lancet: error JOB_NOT_FOUND: no job no-such-id/],
  ];
  for (const [argv, message] of runtime) {
    const o = io();
    assert.equal(await run(argv, o), 1, `${argv.join(" ")}: ${o.err}`);
    assert.match(o.err, message);
    assert.doesNotMatch(o.err, /--help/);
  }
});

test("every backfill flag that sets a library option translates that option's name in messages", () => {
  const backfillSpec = spec("backfill");
  // The integer options: the library names them as the flag table says (the table cannot drift).
  for (const f of backfillSpec.flags.filter((x) => x.integer && x.option !== undefined && x.name !== "admission-timeout-ms")) {
    assert.throws(
      () => resolveBackfillOptions({ [f.option!]: 0 }),
      (e: unknown) => {
        assert.ok(isBackfillError(e, "CONFIG_INVALID"));
        const { message, badFlag } = translateMessage((e as Error).message, backfillSpec);
        assert.ok(badFlag, f.name);
        assert.ok(message.startsWith(`--${f.name} must be`), `${f.name}: ${message}`);
        return true;
      },
    );
  }
  // Hints in runtime errors name the flag: NO_WORKER's advice, the executor's sub-options.
  const noWorker = "no live worker served queue lancet-cpu for 600 s (table t, column y, UDF needs cpu=1); start one with lancet worker --redis redis://127.0.0.1:6379 --queue lancet, or raise admissionTimeoutMs";
  assert.deepEqual(translateMessage(noWorker, backfillSpec), { message: noWorker.replace("raise admissionTimeoutMs", "raise --admission-timeout-ms"), badFlag: false });
  assert.equal(
    translateMessage(`options.executor .redis must be a Redis URL such as redis://127.0.0.1:6379 (got "x"); pass "local" or { redis: "redis://HOST:PORT", queue?: NAME, admissionTimeoutMs?: N, redisOutageMs?: N }`, backfillSpec).message,
    `--redis must be a Redis URL such as redis://127.0.0.1:6379 (got "x")`,
  );
  assert.equal(translateMessage("pass force: true (CLI: alter-column --force), or add a new column", spec("alter-column")).message, "pass --force, or add a new column");
  // Diagnosis advice, as the summary, progress and `jobs show` print it.
  assert.equal(flagText("a synchronous UDF blocks its worker: raise concurrency (now 2 worker processes)"), "a synchronous UDF blocks its worker: raise --concurrency (now 2 worker processes)");
  assert.equal(flagText("an async UDF waiting on I/O: raise intraApplierConcurrency (now 1)"), "an async UDF waiting on I/O: raise --intra-applier-concurrency (now 1)");
  // Option names no flag sets are left alone.
  assert.equal(translateMessage("options.onProgress must be a function", backfillSpec).message, "options.onProgress must be a function");
});

// ---- 3. JSON shape ------------------------------------------------------------------------------

test("--json prints the JobRecord exactly as backfill() returns it; failures carry id and error", async () => {
  await using t = await tempDb();
  await makeTable(t, 2, 50);
  const ref = { db: t.dir, table: "t" };
  await addColumns(ref, { y: udfRef("doubled"), z: udfRef("doubled"), w: udfRef("wrongType") });
  const lib = await backfill(ref, "z");
  let o = io();
  assert.equal(await run(["backfill", "--db", t.dir, "--table", "t", "--column", "y", "--json"], o), 0, o.err);
  const r = lastJson(o.out);
  assert.deepEqual(Object.keys(r).sort(), Object.keys(lib).sort(), "the same fields as the library's record");
  assert.deepEqual(Object.keys(r.metrics as object).sort(), Object.keys(lib.metrics).sort());
  assert.equal((r.metrics as { rowsComputed: number }).rowsComputed, 100);
  assert.equal(r.rowsComputed, undefined, "metrics are not flattened");
  assert.equal(r.jobId, undefined);
  assert.ok(Array.isArray(r.events) && r.events.length > 0);
  assert.equal(r.status, "finished");

  // jobs --json and jobs show --json: records as listJobs()/getJob() return them.
  o = io();
  assert.equal(await run(["jobs", "--db", t.dir, "--json"], o), 0, o.err);
  const jobs = JSON.parse(o.out.trim().split("\n").at(-1)!) as Record<string, unknown>[];
  const mine = jobs.find((j) => j.id === r.id)!;
  assert.equal((mine.metrics as { rowsComputed: number }).rowsComputed, 100);
  assert.equal(mine.rowsComputed, undefined);
  o = io();
  assert.equal(await run(["jobs", "show", r.id as string, "--db", t.dir, "--json"], o), 0, o.err);
  const shown = lastJson(o.out);
  assert.deepEqual(Object.keys(shown).sort(), Object.keys(lib).sort());
  assert.ok(Array.isArray(shown.events) && shown.events.length > 0);

  // A job that ran and failed: its record, with its id and error {code, message}.
  o = io();
  assert.equal(await run(["backfill", "--db", t.dir, "--table", "t", "--column", "w", "--json"], o), 1);
  const failed = lastJson(o.out);
  assert.equal(failed.status, "failed");
  assert.equal(typeof failed.id, "string");
  assert.equal((failed.error as { code: string }).code, "UDF_OUTPUT_TYPE");
  assert.equal(typeof (failed.error as { message: string }).message, "string");
  assert.ok("metrics" in failed && "events" in failed);
  o = io();
  assert.equal(await run(["jobs", "show", failed.id as string, "--db", t.dir], o), 0, "the id names a stored job");

  // Failing validation before a job exists: id null.
  for (const argv of [["--column", "nope"], ["--column", "y", "--concurrency", "0"], ["--column", "y", "--concurency", "2"]]) {
    o = io();
    assert.notEqual(await run(["backfill", "--db", t.dir, "--table", "t", ...argv, "--json"], o), 0);
    const pre = lastJson(o.out);
    assert.equal(pre.id, null, argv.join(" "));
    assert.equal(pre.status, "failed");
    assert.match((pre.error as { code: string }).code, /^(COLUMN_NOT_FOUND|CONFIG_INVALID|USAGE)$/);
  }
});

// ---- 4. honest output ---------------------------------------------------------------------------

test("no progress before a job starts, no eta once it stopped, `nothing to do` on a re-run, the real new version", async () => {
  await using t = await tempDb();
  await makeTable(t, 3, 50);
  const ref = { db: t.dir, table: "t" };
  await addColumns(ref, { y: udfRef("doubled") });
  const base = ["backfill", "--db", t.dir, "--table", "t"];

  for (const tty of [false, true]) {
    const o = io(tty);
    assert.equal(await run([...base, "--column", "nope"], o), 1);
    assert.doesNotMatch(o.err, /%|rows\/s|0 of 0 rows/, "no progress drawn for a job that never started");
  }

  const before = await (await t.open()).version();
  let o = io();
  assert.equal(await run([...base, "--column", "y"], o), 0, o.err);
  const after = await (await t.open()).version();
  assert.ok(after > before);
  assert.match(o.out, new RegExp(`table version ${before} → ${after};`));
  assert.doesNotMatch(o.out, /latest/);
  assert.match(o.err, /finished 100\.0%/);

  o = io();
  assert.equal(await run([...base, "--column", "y"], o), 0, o.err);
  assert.match(o.out, new RegExp(`^backfill of t\\.y: nothing to do: all 3 fragments already complete \\(table version ${after} \\(unchanged\\); job [0-9a-f-]+\\)\\n$`));
  assert.doesNotMatch(o.err, /fragments 0\/0|0 of 0 rows/);
  assert.doesNotMatch(o.out, /diagnosis/);

  // An estimate only while the job works: never on a cancelled or failed one.
  const p = { ...emptyMetrics(), rowsPlanned: 1000, rowsProcessed: 100, elapsedMs: 1000, fragmentsPlanned: 2, status: "running" as const, diagnosis: null };
  assert.match(ProgressView.line({ ...p, phase: "running" }), / eta 9s$/);
  for (const phase of ["cancelled", "failed"] as const) assert.doesNotMatch(ProgressView.line({ ...p, phase, status: phase }), /eta/);
});

// ---- 5. pipes and ids ---------------------------------------------------------------------------

/** Runs `lancet ARGS | PIPE` in bash; lancet's exit status and stderr. */
function piped(args: string[], pipe: string): { status: number; stderr: string; stdout: string } {
  const dir = mkdtempSync(path.join(tmpdir(), "lancet-pipe-"));
  try {
    const errFile = path.join(dir, "stderr");
    const r = spawnSync("bash", ["-c", `"$0" "$1" "\${@:2}" 2>"$ERR" | ${pipe}; echo "exit=\${PIPESTATUS[0]}"`, process.execPath, BIN, ...args], { encoding: "utf8", env: { ...process.env, ERR: errFile } });
    const status = Number(/exit=(\d+)\n$/.exec(r.stdout)?.[1]);
    return { status, stderr: readFileSync(errFile, "utf8"), stdout: r.stdout };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("spawned: `lancet errors | head -1`, `jobs | head`, `status | head` exit 0 quietly (no EPIPE crash)", async () => {
  await using t = await tempDb();
  await makeTable(t, 1, 50);
  const ref = { db: t.dir, table: "t" };
  await addColumns(ref, { y: udfRef("doubled") });
  const job = await backfill(ref, "y");
  // Far more error lines than a pipe holds, so lancet is still writing when head has gone.
  const w = new ErrorsWriter(t.dir, { jobId: job.id, table: "t", column: "y" });
  const at = new Date().toISOString();
  w.add(Array.from({ length: 4000 }, (_, i) => ({ jobId: job.id, table: "t", column: "y", udf: "udfs.ts#doubled", udfVersion: "v", fragment: 0, rowAddress: String(i), rowOffset: i, name: "RangeError", message: `bad x ${i} ${"·".repeat(100)}`, stack: "", attempt: 1, bisectDepth: 0, at })));
  await w.flush();

  const errs = piped(["errors", "--db", t.dir], "head -1");
  assert.equal(errs.status, 0, errs.stderr);
  assert.equal(errs.stderr, "");
  assert.match(errs.stdout, /^\S+ {2}job .* RangeError: bad x 0 /);
  // head -n 0 leaves at once: every write of these fails.
  for (const args of [["jobs", "--db", t.dir], ["status", "--db", t.dir, "--table", "t"], ["errors", "--db", t.dir]]) {
    const r = piped(args, "head -n 0");
    assert.equal(r.status, 0, `${args[0]}: ${r.stderr}`);
    assert.equal(r.stderr, "", args[0]);
  }
});

test("`lancet errors --job` with an id that names no job is JOB_NOT_FOUND, not `no errors`", async () => {
  await using t = await tempDb();
  await makeTable(t, 1, 20);
  const o = io();
  assert.equal(await run(["errors", "--db", t.dir, "--job", "no-such-id"], o), 1);
  assert.match(o.err, /^lancet: error JOB_NOT_FOUND: no job no-such-id/);
  assert.equal(o.out, "");
});

// ---- 6. alter-column --force --------------------------------------------------------------------

test("alter-column refuses to bind a UDF to a data column unless --force, naming the flag", async () => {
  await using t = await tempDb();
  await makeTable(t, 1, 20);
  const argv = ["alter-column", "--db", t.dir, "--table", "t", "--column", "s", "--udf", udfRef("returnsFunction")];
  let o = io();
  assert.equal(await run(argv, o), 1);
  assert.match(o.err, /^lancet: error COLUMN_NOT_UDF: column s of table t is a data column .*pass --force/);
  assert.doesNotMatch(o.err, /force: true/);
  o = io();
  assert.equal(await run([...argv, "--force"], o), 0, o.err);
  assert.match(o.out, /rebound column s → .*#returnsFunction/);
});

test("status explains Lancet's own _lancet_key column after a mergeInsert run instead of leaving it unexplained", async () => {
  await using t = await tempDb();
  await makeTable(t, 2, 40);
  await addColumns({ db: t.dir, table: "t" }, { y: udfRef("doubled") });
  await backfill({ db: t.dir, table: "t" }, "y", { commitMode: "merge" });
  const o = io();
  assert.equal(await run(["status", "--db", t.dir, "--table", "t"], o), 0, o.err);
  assert.match(o.out, /^_lancet_key {2}utf8 {2}Lancet's internal row key \(added by the mergeInsert commit path/m);
  assert.match(o.out, /^y {2}float64 /m);
});
