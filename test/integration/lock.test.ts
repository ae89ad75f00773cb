// The column lock (src/jobs/lock.ts): never held twice, even by real processes racing for it, killed
// right after taking it, or stopped while holding it; leases judged on the observer's monotonic clock.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import * as path from "node:path";
import { isBackfillError } from "../../src/errors.ts";
import { ColumnLock, type JobLookup } from "../../src/jobs/lock.ts";
import type { JobRecord } from "../../src/jobs/record.ts";
import { FIXTURES } from "../helpers.ts";

const CONTENDER = path.join(FIXTURES, "lock-contender.ts");

interface Store extends Disposable {
  readonly dir: string;
  /** The column's lock folder. */
  readonly locks: string;
}

function tempStore(): Store {
  const dir = mkdtempSync(path.join(tmpdir(), "lancet-lock-"));
  return {
    dir,
    locks: path.join(dir, "locks", "y"),
    [Symbol.dispose]() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

interface Run {
  readonly child: ChildProcess;
  /** Resolves when the process exits: its stdout lines, exit code and signal. */
  readonly done: Promise<{ lines: string[]; code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
  /** Resolves with the first stdout line matching `re`. */
  line(re: RegExp): Promise<string>;
}

function contender(spec: Record<string, unknown>, env: Record<string, string> = {}): Run {
  const child = spawn(process.execPath, [CONTENDER, JSON.stringify(spec)], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let stderr = "";
  const watchers: { re: RegExp; resolve: (l: string) => void }[] = [];
  child.stdout!.setEncoding("utf8").on("data", (d: string) => {
    out += d;
    for (const w of [...watchers]) {
      const l = out.split("\n").find((x) => w.re.test(x));
      if (l !== undefined) {
        watchers.splice(watchers.indexOf(w), 1);
        w.resolve(l);
      }
    }
  });
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const done = new Promise<{ lines: string[]; code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) =>
    child.on("close", (code, signal) => resolve({ lines: out.split("\n").filter(Boolean), code, signal, stderr })),
  );
  return {
    child,
    done,
    line: (re) =>
      new Promise((resolve, reject) => {
        const l = out.split("\n").find((x) => re.test(x));
        if (l !== undefined) return resolve(l);
        watchers.push({ re, resolve });
        void done.then((r) => reject(new Error(`contender exited (${r.code ?? r.signal}) before printing ${re}: ${r.stderr}`)));
      }),
  };
}

/** Checks the contenders' shared log: holds never overlap, tokens only grow; returns the number of holds. */
function checkLog(file: string): number {
  let holder: string | undefined;
  let last = 0;
  let holds = 0;
  for (const line of readFileSync(file, "utf8").split("\n").filter(Boolean)) {
    const [kind, pid, token] = line.split(" ");
    const who = `${pid} ${token}`;
    switch (kind) {
      case "A":
        assert.equal(holder, undefined, `${who} acquired while ${holder} held the lock`);
        assert.ok(Number(token) > last, `token ${token} after ${last}: tokens only grow`);
        last = Number(token);
        holder = who;
        holds++;
        break;
      case "C":
        assert.equal(holder, who, `${who} checked the lock while ${holder} held it`);
        break;
      case "R":
        assert.equal(holder, who);
        holder = undefined;
        break;
      default:
        assert.fail(`unexpected log line: ${line}`);
    }
  }
  return holds;
}

/** Writes a lock file as another process would have (by default: on another host, never renewed). */
function writeLock(s: Store, token: number, body: Partial<Record<string, unknown>>): void {
  mkdirSync(s.locks, { recursive: true });
  writeFileSync(path.join(s.locks, `${token}.lock`), JSON.stringify({ token, jobId: "old-job", pid: 1, host: "far-away", since: "2099-01-01T00:00:00.000Z", leaseMs: 300, renewEveryMs: 50, ...body }));
}

const jobsSaying = (status: JobRecord["status"], abandoned?: boolean): JobLookup => ({
  get: async (id) => ({ id, status, ...(abandoned ? { abandoned } : {}) }) as JobRecord,
});

// ---- real processes ---------------------------------------------------------------------------

for (const hosts of ["one host", "a host each"] as const) {
  test(`8 processes (${hosts}) contend for one column lock: holding intervals never overlap, tokens only grow`, async () => {
    using s = tempStore();
    const log = path.join(s.dir, "holds.log");
    const go = path.join(s.dir, "go");
    writeFileSync(log, "");
    const runs = Array.from({ length: 8 }, (_, i) =>
      contender({ mode: "contend", store: s.dir, column: "y", log, go, rounds: 2, holdMs: 15, options: { leaseMs: 3000, renewEveryMs: 20, ...(hosts === "a host each" ? { host: `host-${i}` } : {}) } }),
    );
    writeFileSync(go, "");
    for (const r of await Promise.all(runs.map((r) => r.done))) assert.equal(r.code, 0, r.stderr);
    assert.equal(checkLog(log), 16, "every contender held the lock twice");
  });
}

test("a process SIGKILLed right after creating the lock leaves a complete lock, taken over at once by the next acquirer", async () => {
  using s = tempStore();
  const r = await contender({ mode: "once", store: s.dir, column: "y", options: { leaseMs: 60_000 } }, { LANCET_FAILPOINTS: "lock.after-create:kill" }).done;
  assert.equal(r.signal, "SIGKILL");
  assert.deepEqual(readdirSync(s.locks), ["1.lock"], "one lock file, no temporary file left");
  const body = JSON.parse(readFileSync(path.join(s.locks, "1.lock"), "utf8")) as { token: number; jobId: string; pid: number; host: string };
  assert.equal(body.token, 1);
  assert.equal(body.host, hostname());
  assert.match(body.jobId, new RegExp(`^job-${body.pid}-0$`));
  const t0 = performance.now();
  await using lock = await ColumnLock.acquire(s.dir, "t", "y", "next", undefined);
  assert.ok(performance.now() - t0 < 5000, "not after its 60 s lease: its process is dead");
  assert.equal(lock.token, 2);
  assert.equal(lock.previousJobId, body.jobId);
});

test("a failing step right after creating the lock releases it: the next acquirer takes it without a previous job", async () => {
  using s = tempStore();
  const r = await contender({ mode: "once", store: s.dir, column: "y" }, { LANCET_FAILPOINTS: "lock.after-create:fail" }).done;
  assert.equal(r.code, 1);
  assert.match(r.stderr, /failpoint lock\.after-create/);
  await using lock = await ColumnLock.acquire(s.dir, "t", "y", "next", undefined);
  assert.equal(lock.token, 2);
  assert.equal(lock.previousJobId, undefined);
});

for (const hosts of ["the holder's host", "other hosts"] as const) {
  test(`a stopped holder (SIGSTOP): after its lease, exactly one of 6 contenders on ${hosts} takes over; the fresh lock stays; the holder then refuses to commit`, async () => {
    using s = tempStore();
    const leaseMs = 1500;
    const holder = contender({ mode: "hold", store: s.dir, column: "y", options: { leaseMs, renewEveryMs: 100 } });
    try {
      assert.match(await holder.line(/^acquired/), /^acquired 1$/);
      holder.child.kill("SIGSTOP");
      const stoppedAt = Date.now();
      const log = path.join(s.dir, "holds.log");
      writeFileSync(log, "");
      const runs = Array.from({ length: 6 }, (_, i) =>
        contender({ mode: "once", store: s.dir, column: "y", log, holdMs: 1000, options: { leaseMs: 5000, renewEveryMs: 100, ...(hosts === "other hosts" ? { host: `host-${i}` } : {}) } }),
      );
      const results = await Promise.all(runs.map((r) => r.done));
      for (const r of results) assert.equal(r.code, 0, r.stderr);
      const outcomes = results.map((r) => r.lines[0] ?? "");
      const winners = outcomes.filter((l) => l.startsWith("acquired"));
      assert.equal(winners.length, 1, outcomes.join("\n"));
      const [, token, previous] = winners[0]!.split(" ");
      assert.equal(token, "2");
      assert.match(previous!, /^job-\d+-0$/, "the stopped holder's job is the previous one");
      const winnerJob = `job-${runs[outcomes.indexOf(winners[0]!)]!.child.pid}-0`;
      for (const l of outcomes.filter((x) => x !== winners[0])) assert.match(l, new RegExp(`^busy .*being backfilled by job ${winnerJob} `), "the others were refused, naming the new holder");
      assert.equal(checkLog(log), 1, "the winner checked its lock throughout its hold: nobody removed it");
      // Not before the lease: the contenders started after the stop, and waited all of it (one host: one wall clock).
      const acquiredAt = Number(readFileSync(log, "utf8").split("\n")[0]!.split(" ")[3]);
      assert.ok(acquiredAt - stoppedAt >= leaseMs, `taken over ${acquiredAt - stoppedAt} ms after the stop, not before the ${leaseMs} ms lease`);
      assert.ok(readdirSync(s.locks).includes("2.lock"));
      holder.child.kill("SIGCONT");
      const h = await holder.done;
      assert.equal(h.code, 3);
      assert.match(h.lines.at(-1)!, /^lost .*\(token 1\) (was taken over|lapsed)/);
    } finally {
      holder.child.kill("SIGKILL");
      await holder.done;
    }
  });
}

// ---- in one process, small leases ---------------------------------------------------------------

test("a live holder elsewhere: TABLE_BUSY naming it (job, pid, host, since) with the hint, as soon as a renewal is seen", async () => {
  using s = tempStore();
  await using held = await ColumnLock.acquire(s.dir, "t", "y", "first", undefined, { leaseMs: 5000, renewEveryMs: 50, host: "h1" });
  const t0 = performance.now();
  await assert.rejects(ColumnLock.acquire(s.dir, "t", "y", "second", undefined, { host: "h2" }), (e: unknown) => {
    assert.ok(isBackfillError(e, "TABLE_BUSY"));
    assert.match((e as Error).message, new RegExp(`^column y of table t is being backfilled by job first \\(pid ${process.pid} on h1, since \\d{4}-\\d\\d-\\d\\dT[^)]+\\); wait for it \\(lancet jobs watch first\\) or cancel it \\(lancet jobs cancel first\\)$`));
    return true;
  });
  assert.ok(performance.now() - t0 < 2500, "well before the 5 s lease");
  await held.assertHeld();
});

test("a live holder on this host: TABLE_BUSY at once", async () => {
  using s = tempStore();
  await using held = await ColumnLock.acquire(s.dir, "t", "y", "first", undefined, { leaseMs: 60_000 });
  const t0 = performance.now();
  await assert.rejects(ColumnLock.acquire(s.dir, "t", "y", "second", undefined), (e: unknown) => isBackfillError(e, "TABLE_BUSY"));
  assert.ok(performance.now() - t0 < 1000);
  assert.equal(held.token, 1);
});

test("lease expiry is judged by the observer's monotonic clock: a lock 'since' 2099 that stops renewing is taken over after the lease, and not before", async () => {
  using s = tempStore();
  writeLock(s, 1, { since: "2099-01-01T00:00:00.000Z", leaseMs: 400 });
  const t0 = performance.now();
  await using lock = await ColumnLock.acquire(s.dir, "t", "y", "new", undefined, { leaseMs: 400 });
  const waited = performance.now() - t0;
  assert.ok(waited >= 400, `waited ${waited} ms, at least the lease`);
  assert.ok(waited < 3000, `waited ${waited} ms`);
  assert.equal(lock.token, 2);
  assert.equal(lock.previousJobId, "old-job");
  assert.ok(readdirSync(s.locks).includes("1.lock"), "the stale lock was not removed: a newer token supersedes it");
});

test("a lock 'since' 1970 whose lease counter keeps moving is busy, however old its wall clock", async () => {
  using s = tempStore();
  writeLock(s, 1, { since: "1970-01-01T00:00:00.000Z", leaseMs: 300, renewEveryMs: 40 });
  let counter = 0;
  const renew = setInterval(() => writeFileSync(path.join(s.locks, "1.lease"), JSON.stringify({ counter: ++counter, released: false })), 40);
  try {
    await assert.rejects(ColumnLock.acquire(s.dir, "t", "y", "new", undefined), (e: unknown) => isBackfillError(e, "TABLE_BUSY") && /by job old-job \(pid 1 on far-away, since 1970/.test((e as Error).message));
    // And still busy after several leases' worth of time.
    await new Promise((r) => setTimeout(r, 700));
    await assert.rejects(ColumnLock.acquire(s.dir, "t", "y", "new", undefined), (e: unknown) => isBackfillError(e, "TABLE_BUSY"));
  } finally {
    clearInterval(renew);
  }
});

test("goneHolder watches the lease too; a later acquire continues the same observation", async () => {
  using s = tempStore();
  assert.equal(await ColumnLock.goneHolder(s.dir, "y", undefined), undefined, "no lock at all");
  await ColumnLock.acquire(s.dir, "t", "y", "x", undefined).then((l) => l.release());
  assert.equal(await ColumnLock.goneHolder(s.dir, "y", undefined), undefined, "a released lock has no gone holder");
  writeLock(s, 2, { leaseMs: 300 });
  assert.equal(await ColumnLock.goneHolder(s.dir, "y", undefined), "old-job");
  const t0 = performance.now();
  await using lock = await ColumnLock.acquire(s.dir, "t", "y", "new", undefined);
  assert.ok(performance.now() - t0 < 250, "the lease was already seen expired");
  assert.equal(lock.previousJobId, "old-job");
});

test("a holder whose job record is final is taken over at once; one only 'abandoned' by the jobs table's wall clock is not", async () => {
  using s = tempStore();
  writeLock(s, 1, { leaseMs: 60_000 });
  // Abandoned (a heartbeat judged old by wall clock) with a lease still running: watched, and busy once it renews.
  const renew = setTimeout(() => writeFileSync(path.join(s.locks, "1.lease"), JSON.stringify({ counter: 1, released: false })), 100);
  await assert.rejects(ColumnLock.acquire(s.dir, "t", "y", "new", jobsSaying("failed", true)), (e: unknown) => isBackfillError(e, "TABLE_BUSY"));
  clearTimeout(renew);
  const t0 = performance.now();
  await using lock = await ColumnLock.acquire(s.dir, "t", "y", "new", jobsSaying("finished"));
  assert.ok(performance.now() - t0 < 1000);
  assert.equal(lock.token, 2);
  assert.equal(lock.previousJobId, "old-job");
});

test("a superseded holder's assertHeld throws naming the new holder; its release leaves the new lock alone", async () => {
  using s = tempStore();
  const old = await ColumnLock.acquire(s.dir, "t", "y", "old", undefined, { leaseMs: 300, renewEveryMs: 50, host: "h1" });
  await old.assertHeld();
  // Simulate a holder that stopped renewing (its process stopped): the same effect as SIGSTOP, in-process.
  (old as unknown as { timer: NodeJS.Timeout }).timer.close();
  await using next = await ColumnLock.acquire(s.dir, "t", "y", "next", undefined, { host: "h2", leaseMs: 5000, renewEveryMs: 50 });
  assert.equal(next.token, 2);
  assert.equal(next.previousJobId, "old");
  await assert.rejects(old.assertHeld(), (e: unknown) => isBackfillError(e, "TABLE_BUSY") && /held by job old \(token 1\) was taken over by job next \(pid \d+ on h2, token 2/.test((e as Error).message));
  await old.release();
  await old.release(); // idempotent
  await next.assertHeld();
  await assert.rejects(ColumnLock.acquire(s.dir, "t", "y", "third", undefined, { host: "h3" }), (e: unknown) => isBackfillError(e, "TABLE_BUSY") && /by job next /.test((e as Error).message));
});

test("a holder whose lease lapsed (it could not renew) refuses to commit even before anyone takes over", async () => {
  using s = tempStore();
  const lock = await ColumnLock.acquire(s.dir, "t", "y", "j", undefined, { leaseMs: 200, renewEveryMs: 50 });
  (lock as unknown as { timer: NodeJS.Timeout }).timer.close();
  await new Promise((r) => setTimeout(r, 250));
  await assert.rejects(lock.assertHeld(), (e: unknown) => isBackfillError(e, "TABLE_BUSY") && /lapsed/.test((e as Error).message));
  await lock.release();
});

test("release: the next acquirer gets the next token with no previous job; assertHeld after release throws", async () => {
  using s = tempStore();
  const a = await ColumnLock.acquire(s.dir, "t", "y", "a", undefined);
  await a.release();
  await assert.rejects(a.assertHeld(), (e: unknown) => isBackfillError(e, "TABLE_BUSY") && /was released/.test((e as Error).message));
  const b = await ColumnLock.acquire(s.dir, "t", "y", "b", undefined);
  assert.equal(b.token, 2);
  assert.equal(b.previousJobId, undefined);
  await b.release();
  const c = await ColumnLock.acquire(s.dir, "t", "y", "c", undefined);
  assert.equal(c.token, 3);
  await c.release();
  assert.deepEqual(readdirSync(s.locks).sort(), ["2.lease", "2.lock", "3.lease", "3.lock"], "tokens below the previous one are cleaned up");
});

test("options are checked: leaseMs and renewEveryMs", async () => {
  using s = tempStore();
  for (const [options, re] of [
    [{ leaseMs: 0 }, /^options\.leaseMs must be a positive number of milliseconds \(got 0\)$/],
    [{ leaseMs: 1000, renewEveryMs: 950 }, /^options\.renewEveryMs must be positive and under 0\.9 × options\.leaseMs \(got 950 with a lease of 1000 ms\)$/],
  ] as const) {
    await assert.rejects(ColumnLock.acquire(s.dir, "t", "y", "j", undefined, options), (e: unknown) => isBackfillError(e, "CONFIG_INVALID") && re.test((e as Error).message));
  }
});

test("a holder with this host name in another pid namespace (a container sharing the host name) is judged by its lease, not by a pid lookup here", async () => {
  using s = tempStore();
  // A pid that does not exist here, but may well be alive in the other namespace.
  writeLock(s, 1, { host: hostname(), pid: 2 ** 22 - 7, pidSpace: "pid:[1] another-boot", leaseMs: 400 });
  const t0 = performance.now();
  await using lock = await ColumnLock.acquire(s.dir, "t", "y", "new", undefined, { leaseMs: 400 });
  assert.ok(performance.now() - t0 >= 400, "not taken over at once");
  assert.equal(lock.token, 2);
});
