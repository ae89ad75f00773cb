/**
 * One backfill per column at a time: a column lock that cannot be held twice.
 *
 * ## Layout
 *
 * A column's lock is a folder of numbered files in the table's Lancet store,
 * `locks/<column>/<token>.lock` and `locks/<column>/<token>.lease`:
 *
 * - `<n>.lock` is the n-th taking of the lock (its holder's job id, pid, host, start time, lease). It is
 *   written in full to a unique temporary file and `link()`ed to its name, so it never exists half
 *   written, and `link()` refuses an existing name (EEXIST), so each `n` is taken by exactly one
 *   process. `n` is the **fencing token**: it only grows, and each value is used once.
 * - The lock is the file with the highest `n`. Its holder holds the column until it releases it or
 *   someone creates `<n+1>.lock`; nothing else ever happens to a lock: **no lock file is removed or
 *   renamed to take a lock over**, so a contender that judged a lock wrongly can only lose a race for
 *   `<n+1>.lock`, never remove a fresh lock. Files below `n - 1` are deleted by holder `n` (only files
 *   below an existing one, so the highest always stays; a contender whose `link()` lands in that gap
 *   sees a higher token when it checks and gives the token up).
 * - `<n>.lease` belongs to holder `n` alone (its name carries the token): the holder renews its lease
 *   by writing `{ counter + 1 }` there (temporary file + `rename()`) every `renewEveryMs`, and releases
 *   by writing `{ released: true }`. A renewal can therefore never overwrite another holder's file.
 *
 * ## Who may create `<n+1>.lock`
 *
 * A contender that finds lock `n` creates `<n+1>.lock` only when `n` is released or its holder is
 * gone: its job record is final (finished, failed, cancelled — not "abandoned", which is a wall-clock
 * judgement), its process is dead (same host: the pid is gone or is another process now), or its
 * lease expired. The lease is judged on the **observer's monotonic clock** (`performance.now()`): the
 * observer notes when it first saw the lease's counter at its current value, and the lease expired
 * only once the counter has not changed for longer than the holder's `leaseMs`. Wall clocks are never
 * compared across hosts. A holder on this host whose process is running (Linux: not stopped) is busy
 * at once; a stopped or foreign one is watched until its counter moves (busy) or its lease expires.
 *
 * ## Why a holder never overlaps its successor
 *
 * The holder counts its lease from *before* it started the write that renewed it (time `W` on its
 * clock) and considers itself the holder only until `W + 0.9 × leaseMs`; {@link ColumnLock.assertHeld}
 * refuses after that, and whenever a higher token exists. An observer first sees that counter after
 * the write finished, so it cannot judge the lease expired before `W + leaseMs` — later than the
 * holder stops trusting it (clock rates differ by parts per million; the 10 % covers them). A stopped
 * holder that wakes up finds its lease lapsed, or a higher token, and refuses to commit. What this
 * cannot close is the gap between `assertHeld()` and the commit it guards: storage does not check the
 * token, so a holder paused inside that gap for a whole lease could still commit once.
 *
 * Assumes a filesystem with atomic `link()`/`rename()` and read-after-write consistency (local disks;
 * NFS with attribute caching can serve a stale counter, which makes a lease look expired early).
 */
import { randomUUID } from "node:crypto";
import { readFileSync, readlinkSync } from "node:fs";
import { link, mkdir, open, readdir, readFile, rename, rm } from "node:fs/promises";
import { hostname } from "node:os";
import * as path from "node:path";
import { BackfillError, ConfigError } from "../errors.ts";
import { failpoint } from "../failpoints.ts";
import { canonical, isRemote, storeAt } from "../storage/location.ts";
import { FINAL_STATUSES, type JobRecord } from "./record.ts";

/** How the lock looks up a holder's job record (a {@link JobsTable} is one). */
export interface JobLookup {
  get(id: string): Promise<JobRecord | undefined>;
}

/** Options of {@link ColumnLock.acquire} and {@link ColumnLock.goneHolder}. */
export interface ColumnLockOptions {
  /**
   * How long a holder's lease lasts without a renewal before another process may take the lock over,
   * measured by the other process's own monotonic clock. Stored in the lock, so observers use the
   * holder's value.
   * @default 30000
   */
  leaseMs?: number;
  /**
   * How often the holder renews its lease. Observers on other hosts answer TABLE_BUSY once they see
   * a renewal, so this is also how long they take to do so.
   * @default Math.min(1000, leaseMs / 3)
   */
  renewEveryMs?: number;
  /**
   * The host name written into the lock and compared with a holder's (the pid check only applies on
   * the same host). For tests that simulate several hosts on one machine.
   * @default os.hostname()
   */
  host?: string;
}

/** The content of `<token>.lock`: written once, never changed. */
/**
 * Runs `fn` holding the table-wide lock `name` of a store (a refragment, a view refresh): one holder
 * at a time, with the column lock's guarantees. When another process holds it, throws TABLE_BUSY with
 * `busy` ("table t is being refragmented") and who holds it.
 */
export async function holdingLock<T>(storeDir: string, table: string, name: string, busy: string, fn: (lock: ColumnLock) => Promise<T>): Promise<T> {
  let lock: ColumnLock;
  try {
    lock = await ColumnLock.acquire(storeDir, table, name, `${name.replace(/^\./, "")}-${randomUUID()}`, undefined);
  } catch (e) {
    if (!(e instanceof BackfillError) || e.code !== "TABLE_BUSY") throw e;
    const h = await ColumnLock.holder(storeDir, name, undefined);
    throw new ConfigError("TABLE_BUSY", `${busy} by another process${h ? ` (pid ${h.pid} on ${h.host}, since ${h.since})` : ""}; wait for it to finish`, { table });
  }
  try {
    return await fn(lock);
  } finally {
    await lock.release();
  }
}

/** The lock a `refragment` of the table holds: backfills and refragments exclude each other through it. */
export const REFRAGMENT_LOCK = ".refragment";

interface LockBody {
  readonly token: number;
  readonly jobId: string;
  readonly pid: number;
  readonly host: string;
  /** When the lock was taken (wall clock, for people; never compared). */
  readonly since: string;
  /** Linux: the holder's start time in /proc (tells a reused pid apart). */
  readonly procStart?: string;
  /** Linux: the holder's pid namespace and boot (containers sharing a host name are told apart). */
  readonly pidSpace?: string;
  readonly leaseMs: number;
  readonly renewEveryMs: number;
}

/** The content of `<token>.lease`, rewritten by its holder only. */
interface LeaseBody {
  readonly counter: number;
  readonly released: boolean;
}

/** The newest lock of a column, as read from its folder. */
interface Current {
  /** 0 when the column was never locked. */
  readonly token: number;
  /** Undefined when the file is not a lock Lancet wrote (then it counts as gone). */
  readonly body: LockBody | undefined;
  readonly counter: number;
  readonly released: boolean;
}

const DEFAULT_LEASE_MS = 30_000;
/** The holder trusts its lease for this share of it (observers wait for all of it). */
const HOLDER_SHARE = 0.9;
/** Lost `link()` races before acquire gives up. */
const MAX_RACES = 50;
const LOCK_RE = /^(\d+)\.lock$/;
const TMP_RE = /^\.tmp\.(\d+)\.[0-9a-f-]+\.(.+)$/;

const lockDir = (storeDir: string, column: string): LockFolder => folderAt(isRemote(storeDir) ? `${canonical(storeDir)}/locks/${column}` : path.join(storeDir, "locks", column));
const lockName = (token: number): string => `${token}.lock`;
const leaseName = (token: number): string => `${token}.lease`;
const tmpName = (host: string): string => `.tmp.${process.pid}.${randomUUID()}.${host}`;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const code = (e: unknown): string | undefined => (e as NodeJS.ErrnoException).code;

function resolveOptions(options: ColumnLockOptions): { leaseMs: number; renewEveryMs: number; host: string } {
  const leaseMs = options.leaseMs ?? DEFAULT_LEASE_MS;
  if (!Number.isFinite(leaseMs) || leaseMs <= 0) throw new ConfigError("CONFIG_INVALID", `options.leaseMs must be a positive number of milliseconds (got ${leaseMs})`);
  const renewEveryMs = options.renewEveryMs ?? Math.min(1000, leaseMs / 3);
  if (!Number.isFinite(renewEveryMs) || renewEveryMs <= 0 || renewEveryMs >= leaseMs * HOLDER_SHARE) {
    throw new ConfigError("CONFIG_INVALID", `options.renewEveryMs must be positive and under 0.9 × options.leaseMs (got ${renewEveryMs} with a lease of ${leaseMs} ms)`);
  }
  return { leaseMs, renewEveryMs, host: options.host ?? hostname() };
}

// ---- processes on this host ------------------------------------------------------------------

/** False only when `host` is this machine and process `pid` is gone (other hosts cannot be judged). */
export function mayBeAlive(pid: number, host: string): boolean {
  return host !== hostname() || alive(pid);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return code(e) === "EPERM";
  }
}

/** Linux: a process's state letter and start time from /proc, or undefined (no such process, or no /proc). */
function procStat(pid: number): { state: string; start: string } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may hold spaces and parentheses: fields are counted after its last ")".
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return { state: rest[0] ?? "", start: rest[19] ?? "" };
  } catch {
    return undefined;
  }
}

const HAS_PROC = procStat(process.pid) !== undefined;

/** A holder process on this host: dead (or its pid reused), running, or stopped / unknown (then its lease decides). */
/** This process's pid namespace and boot id (Linux), or undefined: a pid means the same process only within both. */
const PID_SPACE = ((): string | undefined => {
  try {
    return `${readlinkSync("/proc/self/ns/pid")} ${readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim()}`;
  } catch {
    return undefined;
  }
})();

function localProcess(pid: number, procStart: string | undefined): "dead" | "running" | "watch" {
  if (!alive(pid)) return "dead";
  if (!HAS_PROC) return "watch";
  const stat = procStat(pid);
  if (stat === undefined || stat.state === "Z" || stat.state === "X") return "dead";
  if (procStart !== undefined && stat.start !== procStart) return "dead";
  return stat.state === "T" || stat.state === "t" ? "watch" : "running";
}

// ---- reading the folder ----------------------------------------------------------------------

async function maxToken(dir: LockFolder): Promise<number> {
  let max = 0;
  for (const name of await dir.names()) {
    const m = LOCK_RE.exec(name);
    if (m) max = Math.max(max, Number(m[1]));
  }
  return max;
}

async function readJson(dir: LockFolder, name: string): Promise<unknown> {
  try {
    const text = await dir.read(name);
    if (text === undefined) return undefined;
    return JSON.parse(text) as unknown;
  } catch (e) {
    if (code(e) === "ENOENT") return undefined;
    if (e instanceof SyntaxError) return null; // not JSON: not a file Lancet wrote whole
    throw e; // unreadable (EIO, EACCES, EMFILE…): never judged as gone
  }
}

async function current(dir: LockFolder): Promise<Current> {
  let token = await maxToken(dir);
  if (token === 0) return { token, body: undefined, counter: 0, released: false };
  let raw = await readJson(dir, lockName(token));
  // The newest lock is never deleted; a file that vanished was a loser's (see acquire): read again.
  for (let i = 0; raw === undefined && i < 5; i++) {
    token = await maxToken(dir);
    raw = await readJson(dir, lockName(token));
  }
  const body = raw !== null && typeof raw === "object" && (raw as LockBody).token === token && typeof (raw as LockBody).jobId === "string" ? (raw as LockBody) : undefined;
  const lease = (await readJson(dir, leaseName(token))) as LeaseBody | null | undefined;
  // No lease file yet: the holder has not renewed since it took the lock (counter 0).
  return { token, body, counter: lease === undefined ? 0 : (lease?.counter ?? -1), released: lease?.released === true };
}

/** Writes `data` to a unique temporary file in `dir` (flushed to disk when `sync`) and returns its path. */
async function writeTemp(dir: string, host: string, data: string, sync: boolean): Promise<string> {
  const tmp = path.join(dir, tmpName(host));
  const fh = await open(tmp, "wx");
  try {
    await fh.writeFile(data);
    if (sync) await fh.sync();
  } finally {
    await fh.close();
  }
  return tmp;
}

// ---- judging a holder --------------------------------------------------------------------------

/**
 * What this process last saw of each lock folder: the token and lease counter, and when (monotonic)
 * it first saw that counter. Kept across calls, so a later acquire continues an observation.
 */
const seen = new Map<string, { token: number; counter: number; at: number }>();

/** "renewed" when the counter moved since this process last looked at the same token. */
function observe(dir: LockFolder, cur: Current, leaseMs: number): "renewed" | "expired" | "waiting" {
  const now = performance.now();
  const last = seen.get(dir.id);
  if (last === undefined || last.token !== cur.token || last.counter !== cur.counter) {
    seen.set(dir.id, { token: cur.token, counter: cur.counter, at: now });
    return last !== undefined && last.token === cur.token ? "renewed" : "waiting";
  }
  return now - last.at > leaseMs ? "expired" : "waiting";
}

type Verdict = "free" | "gone" | "busy" | "changed";

/** Judges the newest lock: free (released or none), gone (may be taken over), busy, or changed while watched. */
async function judge(dir: LockFolder, cur: Current, me: string, jobs: JobLookup | undefined): Promise<Verdict> {
  if (cur.token === 0 || cur.released) return "free";
  const body = cur.body;
  if (body === undefined) return "gone";
  if (jobs !== undefined) {
    const record = await jobs.get(body.jobId);
    // `abandoned` is the jobs table's wall-clock judgement of a heartbeat: the lease decides instead.
    if (record !== undefined && FINAL_STATUSES.has(record.status) && record.abandoned !== true) return "gone";
  }
  const poll = Math.min(250, Math.max(10, body.renewEveryMs / 4));
  for (let now = cur; ; ) {
    // Same host name and same pid namespace and boot: its pid can be checked here. (Containers that
    // share a host name but not a pid namespace fall through to the lease.)
    if (body.host === me && body.pidSpace === PID_SPACE) {
      const p = localProcess(body.pid, body.procStart);
      if (p === "dead") return "gone";
      if (p === "running") return "busy";
    }
    const o = observe(dir, now, body.leaseMs);
    if (o === "renewed") return "busy";
    if (o === "expired") return "gone";
    await sleep(poll);
    now = await current(dir);
    if (now.token !== cur.token || now.released) return "changed";
  }
}

/** The verdict on a column's newest lock once it stops changing, or undefined when the column has no lock folder. */
async function settle(storeDir: string, column: string, jobs: JobLookup | undefined, options: ColumnLockOptions): Promise<{ verdict: Exclude<Verdict, "changed">; body: LockBody | undefined } | undefined> {
  const { host } = resolveOptions(options);
  const dir = lockDir(storeDir, column);
  for (;;) {
    let cur: Current;
    try {
      cur = await current(dir);
    } catch (e) {
      if (code(e) === "ENOENT") return undefined;
      throw e;
    }
    const verdict = await judge(dir, cur, host, jobs);
    if (verdict !== "changed") return { verdict, body: cur.body };
  }
}

function busyError(table: string, column: string, holder: LockBody): ConfigError {
  return new ConfigError(
    "TABLE_BUSY",
    `column ${column} of table ${table} is being backfilled by job ${holder.jobId} (pid ${holder.pid} on ${holder.host}, since ${holder.since}); wait for it (lancet jobs watch ${holder.jobId}) or cancel it (lancet jobs cancel ${holder.jobId})`,
    { table, column },
  );
}

// ---- the lock ------------------------------------------------------------------------------------

/**
 * A column's backfill lock, held by this process: renewed in the background until {@link release}.
 * Take it with {@link ColumnLock.acquire}; call {@link assertHeld} before each commit.
 */
export class ColumnLock {
  /** The fencing token: grows with every taking of this column's lock, each value used once. */
  readonly token: number;
  /** The job whose lock this one took over (its holder was gone): its queued tasks may still be running. */
  readonly previousJobId: string | undefined;
  private readonly dir: LockFolder;
  private readonly table: string;
  private readonly column: string;
  private readonly body: LockBody;
  private readonly host: string;
  private counter = 0;
  /** Monotonic time until which this process may trust its lease. */
  private validUntil: number;
  private lost: BackfillError | undefined;
  private released: Promise<void> | undefined;
  /** Renewals and the release run one after the other (a late renewal must not undo a release). */
  private chain: Promise<void> = Promise.resolve();
  private readonly timer: NodeJS.Timeout;

  private constructor(dir: LockFolder, table: string, column: string, body: LockBody, host: string, startedAt: number, previousJobId: string | undefined) {
    this.dir = dir;
    this.table = table;
    this.column = column;
    this.body = body;
    this.host = host;
    this.token = body.token;
    this.previousJobId = previousJobId;
    this.validUntil = startedAt + body.leaseMs * HOLDER_SHARE;
    this.timer = setInterval(() => {
      this.chain = this.chain.then(() => this.renew());
    }, body.renewEveryMs);
    this.timer.unref();
  }

  /**
   * Takes the lock of `column`, taking it over when its holder is gone (see the module comment).
   * When the holder is on another host or stopped, waits until its lease is renewed (TABLE_BUSY, within
   * about its `renewEveryMs`) or expires (taken over, after its `leaseMs`).
   * @throws ConfigError TABLE_BUSY naming the holder (job, pid, host, since) when it is alive.
   */
  static async acquire(storeDir: string, table: string, column: string, jobId: string, jobs: JobLookup | undefined, options: ColumnLockOptions = {}): Promise<ColumnLock> {
    const { leaseMs, renewEveryMs, host } = resolveOptions(options);
    const dir = lockDir(storeDir, column);
    await dir.ensure();
    const procStart = procStat(process.pid)?.start;
    for (let races = 0; races < MAX_RACES; ) {
      const cur = await current(dir);
      const verdict = await judge(dir, cur, host, jobs);
      if (verdict === "changed") continue;
      if (verdict === "busy") throw busyError(table, column, cur.body!);
      const token = cur.token + 1;
      const body: LockBody = { token, jobId, pid: process.pid, host, since: new Date().toISOString(), ...(procStart !== undefined ? { procStart } : {}), ...(PID_SPACE !== undefined ? { pidSpace: PID_SPACE } : {}), leaseMs, renewEveryMs };
      const startedAt = performance.now();
      if (!(await dir.create(lockName(token), JSON.stringify(body), host))) {
        races++; // another contender took this token first
        continue;
      }
      try {
        failpoint("lock.after-create");
      } catch (e) {
        await writeLease(dir, host, token, { counter: 1, released: true }).catch(() => undefined);
        throw e;
      }
      // Our link can only land below the newest token in a gap the cleanup left (we read the folder
      // long ago): then the token is not ours to use.
      if ((await maxToken(dir)) !== token) {
        await dir.remove(lockName(token));
        races++;
        continue;
      }
      await cleanUp(dir, token, host);
      return new ColumnLock(dir, table, column, body, host, startedAt, verdict === "gone" ? cur.body?.jobId : undefined);
    }
    throw new ConfigError("TABLE_BUSY", `could not take the backfill lock of column ${column} of table ${table} (${dir.id}); another job keeps taking it`, { table, column });
  }

  /**
   * The job holding the column's lock when its holder is gone (the lock will be taken over), else
   * undefined. Like {@link acquire}, may watch a stopped or foreign holder's lease for up to its length.
   */
  static async goneHolder(storeDir: string, column: string, jobs: JobLookup | undefined, options: ColumnLockOptions = {}): Promise<string | undefined> {
    const s = await settle(storeDir, column, jobs, options);
    return s?.verdict === "gone" ? s.body?.jobId : undefined;
  }

  /**
   * Who holds the column's lock, while a live holder does (its process runs, or its lease is being
   * renewed); undefined when it is free, released or its holder is gone. Like {@link goneHolder}, may
   * watch a stopped or foreign holder's lease for up to its length.
   */
  static async holder(storeDir: string, column: string, jobs: JobLookup | undefined, options: ColumnLockOptions = {}): Promise<{ readonly jobId: string; readonly pid: number; readonly host: string; readonly since: string } | undefined> {
    const s = await settle(storeDir, column, jobs, options);
    return s?.verdict === "busy" && s.body ? { jobId: s.body.jobId, pid: s.body.pid, host: s.body.host, since: s.body.since } : undefined;
  }

  /** The names of the locks kept in a table's store (columns, and {@link REFRAGMENT_LOCK}). */
  static async names(storeDir: string): Promise<string[]> {
    if (isRemote(storeDir)) return [...new Set((await storeAt(`${canonical(storeDir)}/locks`).list("")).map((k) => k.split("/")[0]!))].sort();
    try {
      return (await readdir(path.join(storeDir, "locks"), { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name);
    } catch (e) {
      if (code(e) === "ENOENT") return [];
      throw e;
    }
  }

  /**
   * Checks that this process still holds the lock: not released, its lease renewed in time, and no
   * newer token taken. Call it right before each commit.
   * @throws BackfillError TABLE_BUSY when another job took the column over or the lease lapsed.
   */
  async assertHeld(): Promise<void> {
    if (this.released !== undefined) throw this.failure("was released");
    if (this.lost !== undefined) throw this.lost;
    const cur = await current(this.dir);
    if (cur.token !== this.token) {
      const who = cur.body ? ` by job ${cur.body.jobId} (pid ${cur.body.pid} on ${cur.body.host}, token ${cur.token}, since ${cur.body.since})` : ` (token ${cur.token})`;
      this.lost = this.failure(`was taken over${who}`);
      throw this.lost;
    }
    const late = performance.now() - this.validUntil;
    if (late > 0) throw this.failure(`lapsed: it was not renewed for ${Math.round(late + this.body.leaseMs * HOLDER_SHARE)} ms (lease ${this.body.leaseMs} ms; the process was stopped or its event loop blocked), so another job may take it over`);
  }

  /** Stops renewing and marks the lease released; touches only this lock's own files. Idempotent. */
  release(): Promise<void> {
    this.released ??= (async () => {
      clearInterval(this.timer);
      await this.chain;
      if (this.lost !== undefined) return;
      try {
        await this.writeLease(true);
      } catch {
        // The lease then expires on its own.
      }
    })();
    return this.released;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.release();
  }

  private failure(what: string): BackfillError {
    return new BackfillError("TABLE_BUSY", `the backfill lock of column ${this.column} of table ${this.table} held by job ${this.body.jobId} (token ${this.token}) ${what}; this job must not commit`, { table: this.table, column: this.column, jobId: this.body.jobId });
  }

  private async renew(): Promise<void> {
    if (this.released !== undefined || this.lost !== undefined) return;
    const startedAt = performance.now();
    try {
      if ((await maxToken(this.dir)) !== this.token) {
        this.lost = this.failure("was taken over");
        clearInterval(this.timer);
        return;
      }
      await this.writeLease(false);
      this.validUntil = startedAt + this.body.leaseMs * HOLDER_SHARE;
    } catch {
      // A failed renewal leaves the lease to lapse; assertHeld then refuses.
    }
  }

  private async writeLease(released: boolean): Promise<void> {
    await writeLease(this.dir, this.host, this.token, { counter: ++this.counter, released });
  }
}

/** Rewrites holder `token`'s own `<token>.lease` whole (temporary file + rename, or one PUT); no other holder's file. */
async function writeLease(dir: LockFolder, host: string, token: number, lease: LeaseBody): Promise<void> {
  await dir.replace(leaseName(token), JSON.stringify(lease), host);
}

/** Holder `token` deletes the lock files below its predecessor, and temporary files of dead processes on this host. */
async function cleanUp(dir: LockFolder, token: number, host: string): Promise<void> {
  for (const name of await dir.names().catch(() => [] as string[])) {
    const n = /^(\d+)\.(lock|lease)$/.exec(name);
    const tmp = TMP_RE.exec(name);
    const stale = n ? Number(n[1]) < token - 1 : tmp !== null && tmp[2] === host && !alive(Number(tmp[1]));
    if (stale) await dir.remove(name).catch(() => undefined);
  }
}

// ---- where a lock folder lives -------------------------------------------------------------------

/**
 * A lock's folder: its entries' names, reads, a create that refuses an existing name (the only way a
 * token is taken), and a whole-object replace (a holder's own lease). Local: files, `link()` for the
 * create (EEXIST), `rename()` for the replace. Object storage: a put-if-absent (`If-None-Match: *`,
 * 412) for the create and a plain put for the replace — never a read-then-write.
 */
interface LockFolder {
  /** The folder's path or URI (messages; the key of this process's observations). */
  readonly id: string;
  /** Entry names; throws ENOENT when a local folder does not exist. */
  names(): Promise<string[]>;
  read(name: string): Promise<string | undefined>;
  create(name: string, data: string, host: string): Promise<boolean>;
  replace(name: string, data: string, host: string): Promise<void>;
  remove(name: string): Promise<void>;
  ensure(): Promise<void>;
}

function folderAt(id: string): LockFolder {
  if (isRemote(id)) {
    const store = storeAt(id);
    return {
      id,
      names: async () => (await store.list("")).filter((k) => !k.includes("/")),
      read: async (name) => {
        const b = await store.get(name);
        return b === undefined ? undefined : new TextDecoder().decode(b);
      },
      create: (name, data) => store.putIfAbsent(name, data),
      replace: (name, data) => store.put(name, data),
      remove: (name) => store.delete(name),
      ensure: async () => {},
    };
  }
  return {
    id,
    names: () => readdir(id),
    read: async (name) => {
      try {
        return await readFile(path.join(id, name), "utf8");
      } catch (e) {
        if (code(e) === "ENOENT") return undefined;
        throw e;
      }
    },
    create: async (name, data, host) => {
      const tmp = await writeTemp(id, host, data, true);
      try {
        await link(tmp, path.join(id, name));
        return true;
      } catch (e) {
        if (code(e) !== "EEXIST") throw e;
        return false;
      } finally {
        await rm(tmp, { force: true });
      }
    },
    replace: async (name, data, host) => {
      const tmp = await writeTemp(id, host, data, false);
      try {
        await rename(tmp, path.join(id, name));
      } catch (e) {
        await rm(tmp, { force: true });
        throw e;
      }
    },
    remove: (name) => rm(path.join(id, name), { force: true }),
    ensure: async () => {
      await mkdir(id, { recursive: true });
    },
  };
}
