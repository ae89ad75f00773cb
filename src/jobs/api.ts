/** Reading and cancelling jobs from any process: the jobs table of a database. */
import { existsSync } from "node:fs";
import { ConfigError } from "../errors.ts";
import { FINAL_STATUSES, type JobRecord, type JobStatus } from "./record.ts";
import { dbLocation, isRemote } from "../storage/location.ts";
import { JOBS_TABLE, JobsTable, requestCancel, systemTableExists } from "./store.ts";

function dbDirOf(db: string): string {
  const dir = dbLocation(db);
  if (!isRemote(db) && !existsSync(dir)) throw new ConfigError("DB_NOT_FOUND", `database directory ${dir} does not exist; pass the directory you gave lancedb.connect()`);
  return dir;
}

async function open(db: string): Promise<JobsTable | undefined> {
  const dir = dbDirOf(db);
  if (!(await systemTableExists(dir, JOBS_TABLE))) return undefined;
  return JobsTable.open(dir);
}

/** Jobs of a database, newest first; abandoned jobs read as failed. */
export async function listJobs(db: string, filter: { table?: string; status?: JobStatus } = {}): Promise<JobRecord[]> {
  const jobs = await open(db);
  return jobs ? jobs.list(filter) : [];
}

/** One job's record. @throws ConfigError JOB_NOT_FOUND */
export async function getJob(db: string, id: string): Promise<JobRecord> {
  const r = await (await open(db))?.get(id);
  if (!r) throw new ConfigError("JOB_NOT_FOUND", `no job ${id} in database ${dbDirOf(db)}; list jobs with \`lancet jobs --db ${db}\``);
  return r;
}

/**
 * Asks a running job — in this process or any other — to cancel, and waits (up to `timeoutMs`) until
 * it has stopped. Resolves with the job's record then.
 * @throws ConfigError JOB_NOT_FOUND, or CONFIG_INVALID when the job already ended.
 */
export async function cancelJob(db: string, id: string, options: { timeoutMs?: number } = {}): Promise<JobRecord> {
  const r = await getJob(db, id);
  if (FINAL_STATUSES.has(r.status)) {
    throw new ConfigError("CONFIG_INVALID", `job ${id} already ended (${r.abandoned ? "failed: abandoned" : r.status}); nothing to cancel`);
  }
  await requestCancel(dbDirOf(db), id);
  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  for (;;) {
    const now = await getJob(db, id);
    if (FINAL_STATUSES.has(now.status) || Date.now() > deadline) return now;
    await new Promise((res) => setTimeout(res, 200));
  }
}
