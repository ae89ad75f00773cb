/**
 * The jobs table: one row per job in a LanceDB system table (`_lancet_jobs`) of the same database,
 * so any process — another terminal, the CLI, a dashboard — can list, inspect and cancel jobs. The
 * row holds a few scalar columns for filtering and the whole {@link JobRecord} as JSON, so the
 * record can grow without schema changes. Cancellation requests are files next to the checkpoints
 * (`DB/_lancet/_jobs/ID.cancel`), polled by the job's coordinator.
 */
import { existsSync } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import * as path from "node:path";
import { arrow} from "../arrow.ts";
import type { LanceNs } from "../arrow.ts";
import { sqlString } from "../sql.ts";
import { effectiveRecord, type JobRecord, type JobStatus } from "./record.ts";
import { canonical, connectDb, isRemote, storeAt } from "../storage/location.ts";

export const JOBS_TABLE = "_lancet_jobs";

const SCHEMA = new arrow.Schema([
  new arrow.Field("id", new arrow.Utf8(), false),
  new arrow.Field("table_name", new arrow.Utf8(), true),
  new arrow.Field("column_name", new arrow.Utf8(), true),
  new arrow.Field("status", new arrow.Utf8(), true),
  new arrow.Field("created_at", new arrow.Float64(), true),
  new arrow.Field("updated_at", new arrow.Float64(), true),
  new arrow.Field("record", new arrow.Utf8(), true),
]);

export interface JobFilter {
  readonly table?: string;
  readonly status?: JobStatus;
}

export class JobsTable {
  private readonly table: LanceNs.Table;
  private readonly dbDir: string;

  private constructor(dbDir: string, table: LanceNs.Table) {
    this.dbDir = dbDir;
    this.table = table;
  }

  /** Opens the jobs table of a database, creating it on first use. */
  static async open(dbDir: string): Promise<JobsTable> {
    return new JobsTable(dbDir, await openSystemTable(dbDir, JOBS_TABLE, SCHEMA));
  }

  /** Inserts or replaces a job's row. */
  async upsert(r: JobRecord): Promise<void> {
    const row = new arrow.Table(SCHEMA, {
      id: arrow.vectorFromArray([r.id], new arrow.Utf8()),
      table_name: arrow.vectorFromArray([r.table], new arrow.Utf8()),
      column_name: arrow.vectorFromArray([r.column], new arrow.Utf8()),
      status: arrow.vectorFromArray([r.status], new arrow.Utf8()),
      created_at: arrow.vectorFromArray([Date.parse(r.createdAt)], new arrow.Float64()),
      updated_at: arrow.vectorFromArray([Date.now()], new arrow.Float64()),
      record: arrow.vectorFromArray([JSON.stringify(r)], new arrow.Utf8()),
    });
    await this.table.mergeInsert("id").whenMatchedUpdateAll().whenNotMatchedInsertAll().execute(row);
  }

  private async rows(where?: string): Promise<JobRecord[]> {
    let q = this.table.query().select(["record"]);
    if (where) q = q.where(where);
    const data = await q.toArrow();
    const out: JobRecord[] = [];
    const col = data.getChild("record");
    for (let i = 0; i < data.numRows; i++) {
      const s = col?.get(i) as string | null;
      if (s) out.push(effectiveRecord(JSON.parse(s) as JobRecord));
    }
    return out;
  }

  /** A job by id (its effective state: abandoned jobs read as failed), or undefined. */
  async get(id: string): Promise<JobRecord | undefined> {
    if (!/^[0-9a-f-]{8,64}$/i.test(id)) return undefined;
    const [r] = await this.rows(`id = '${id}'`);
    return r;
  }

  /** Jobs, newest first. */
  async list(filter: JobFilter = {}): Promise<JobRecord[]> {
    const all = await this.rows(filter.table ? `table_name = ${sqlString(filter.table)}` : undefined);
    return all.filter((r) => filter.status === undefined || r.status === filter.status).sort((a, b) => b.createdAt.localeCompare(a.createdAt));
  }

  /** Compacts the table and drops versions older than a minute (every upsert is a version). Best effort. */
  async compact(): Promise<void> {
    try {
      // Every record update appends a fragment: compact (and drop versions older than a minute) once
      // there are enough of them, not after every job (it costs ~20 ms).
      if ((await this.table.stats()).fragmentStats.numFragments < COMPACT_FRAGMENTS) return;
      await this.table.optimize({ cleanupOlderThan: new Date(Date.now() - 60_000) } as never);
    } catch {
      // a concurrent upsert won the race; the next job's compaction will do it
    }
  }

  cancelFile(id: string): string {
    return cancelFile(this.dbDir, id);
  }
}

/** Fragments of the jobs table that make a finishing job compact it. */
const COMPACT_FRAGMENTS = 32;

/** Whether a system table (jobs, errors) exists in a database (a local directory or an object-storage prefix). */
export async function systemTableExists(dbDir: string, name: string): Promise<boolean> {
  if (!isRemote(dbDir)) return existsSync(path.join(dbDir, `${name}.lance`));
  return (await storeAt(`${canonical(dbDir)}/${name}.lance`).list("_versions/")).length > 0;
}

/** Opens a system table (jobs, errors) of a database, creating it empty on first use. */
export async function openSystemTable(dbDir: string, name: string, schema: InstanceType<typeof arrow.Schema>): Promise<LanceNs.Table> {
  const db = await connectDb(dbDir, { readConsistencyInterval: 0 });
  try {
    return await db.openTable(name);
  } catch {
    try {
      return await db.createEmptyTable(name, schema, { mode: "exist_ok" } as never);
    } catch {
      return db.openTable(name); // another process created it first
    }
  }
}

export function cancelFile(dbDir: string, id: string): string {
  return path.join(dbDir, "_lancet", "_jobs", `${id}.cancel`);
}

/** Asks the coordinator of job `id` to cancel it; it notices within a fraction of a second (object storage: about a second). */
export async function requestCancel(dbDir: string, id: string): Promise<void> {
  if (isRemote(dbDir)) {
    await storeAt(`${canonical(dbDir)}/_lancet/_jobs`).put(`${id}.cancel`, new Date().toISOString());
    return;
  }
  const f = cancelFile(dbDir, id);
  await mkdir(path.dirname(f), { recursive: true });
  await writeFile(f, new Date().toISOString());
}

/** Removes job `id`'s cancellation request, if any. */
export async function clearCancel(dbDir: string, id: string): Promise<void> {
  if (isRemote(dbDir)) await storeAt(`${canonical(dbDir)}/_lancet/_jobs`).delete(`${id}.cancel`);
  else await rm(cancelFile(dbDir, id), { force: true });
}

export async function cancelRequested(dbDir: string, id: string): Promise<boolean> {
  if (isRemote(dbDir)) return (await storeAt(`${canonical(dbDir)}/_lancet/_jobs`).get(`${id}.cancel`)) !== undefined;
  return existsSync(cancelFile(dbDir, id));
}
