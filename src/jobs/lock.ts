/**
 * One backfill per column at a time: a lock file per column in the table's Lancet store, created
 * exclusively (`wx`) by the job that runs. A second job refuses with TABLE_BUSY naming the holder. A
 * lock whose holder is gone — its process is dead (same host), its job ended, or it stopped
 * heartbeating — is taken over.
 */
import { hostname } from "node:os";
import { mkdir, open, readFile, rm } from "node:fs/promises";
import * as path from "node:path";
import { ConfigError } from "../errors.ts";
import { FINAL_STATUSES } from "./record.ts";
import type { JobsTable } from "./store.ts";

interface LockBody {
  readonly jobId: string;
  readonly pid: number;
  readonly host: string;
  readonly at: string;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

const lockFile = (storeDir: string, column: string): string => path.join(storeDir, "locks", `${column}.lock`);

async function readHolder(file: string): Promise<LockBody | undefined> {
  try {
    return JSON.parse(await readFile(file, "utf8")) as LockBody;
  } catch {
    return undefined; // none, being written, or garbage
  }
}

async function isGone(holder: LockBody, jobs: JobsTable): Promise<boolean> {
  const record = await jobs.get(holder.jobId);
  return (holder.host === hostname() && !alive(holder.pid)) || (record !== undefined && FINAL_STATUSES.has(record.status));
}

export class ColumnLock {
  private readonly file: string;
  /** The job whose lock this one took over (its process was gone): its queued tasks may still be running. */
  readonly previousJobId: string | undefined;
  private constructor(file: string, previousJobId: string | undefined) {
    this.file = file;
    this.previousJobId = previousJobId;
  }

  static async acquire(storeDir: string, table: string, column: string, jobId: string, jobs: JobsTable): Promise<ColumnLock> {
    const file = lockFile(storeDir, column);
    await mkdir(path.dirname(file), { recursive: true });
    const body: LockBody = { jobId, pid: process.pid, host: hostname(), at: new Date().toISOString() };
    let previous: string | undefined;
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const fh = await open(file, "wx");
        await fh.writeFile(JSON.stringify(body));
        await fh.close();
        return new ColumnLock(file, previous);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      }
      const holder = await readHolder(file);
      if (holder) {
        if (!(await isGone(holder, jobs))) {
          throw new ConfigError(
            "TABLE_BUSY",
            `column ${column} of table ${table} is being backfilled by job ${holder.jobId} (pid ${holder.pid} on ${holder.host}, since ${holder.at}); wait for it (lancet jobs watch ${holder.jobId}) or cancel it (lancet jobs cancel ${holder.jobId})`,
            { table, column },
          );
        }
        previous = holder.jobId;
      }
      await rm(file, { force: true });
    }
    throw new ConfigError("TABLE_BUSY", `could not take the backfill lock of column ${column} of table ${table} (${file}); another job keeps taking it`, { table, column });
  }

  /** The job holding the column's lock when its process is gone (the lock will be taken over), else undefined. */
  static async goneHolder(storeDir: string, column: string, jobs: JobsTable): Promise<string | undefined> {
    const holder = await readHolder(lockFile(storeDir, column));
    return holder && (await isGone(holder, jobs)) ? holder.jobId : undefined;
  }

  async release(): Promise<void> {
    await rm(this.file, { force: true });
  }
}
