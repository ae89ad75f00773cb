/**
 * Table references and where Lancet keeps its own files for a table.
 *
 * Lancet's store for table `T` in database `DB` is `DB/_lancet/T/`: bound UDF bundles in `udfs/`,
 * checkpoints in `ckp/`. LanceDB lists only `*.lance` directories as tables, so the store never shows
 * up as user data, and every process that can open the table can reach it.
 */
import { existsSync, statSync } from "node:fs";
import * as path from "node:path";
import type { LanceNs } from "./arrow.ts";
import { ConfigError } from "./errors.ts";
import { canonical, connectDb, isRemote, registerStorage, storageRegistered, storeAt } from "./storage/location.ts";
import { resolveStorageOptions, storeFor } from "./storage/object-store.ts";

/** Which table: a database (a local directory or an `s3://bucket/prefix` URI) and a table name. */
export interface TableRef {
  /** The LanceDB database: a directory or an object-storage URI (what `lancedb.connect()` takes). */
  readonly db: string;
  /** The table's name in that database. */
  readonly table: string;
  /**
   * Object storage: LanceDB's storage options (`endpoint`, `region`, `access_key_id`,
   * `secret_access_key`, `allow_http`…), over those of the usual AWS environment variables. Never
   * stored in a job record.
   */
  readonly storageOptions?: Readonly<Record<string, string>>;
}

export interface ResolvedTable {
  readonly ref: TableRef;
  readonly dbDir: string;
  readonly name: string;
  /** `DB/NAME.lance` */
  readonly tableDir: string;
  /** `DB/_lancet/NAME` */
  readonly storeDir: string;
}

/** Validates a TableRef and resolves its paths. Throws ConfigError naming what is missing. */
export function resolveTable(ref: TableRef): ResolvedTable {
  if (typeof ref?.db !== "string" || ref.db.length === 0) {
    throw new ConfigError("CONFIG_INVALID", `table.db must be a database directory (got ${JSON.stringify(ref?.db)})`);
  }
  if (typeof ref.table !== "string" || !/^[A-Za-z0-9_.-]+$/.test(ref.table)) {
    throw new ConfigError("CONFIG_INVALID", `table.table must be a table name of letters, digits, "_", "-" or "." (got ${JSON.stringify(ref.table)})`);
  }
  if (isRemote(ref.db)) {
    // Object storage: the table's existence is checked when it is first opened (openLanceTable).
    storeFor(canonical(ref.db), ref.storageOptions ?? {}); // refuses schemes other than s3:// at once
    const dbDir = canonical(ref.db);
    // Options given with the ref win; else those registered already (the CLI's --storage-option), else the environment's.
    if (ref.storageOptions !== undefined || !storageRegistered(dbDir)) registerStorage(dbDir, resolveStorageOptions(ref.storageOptions, process.env));
    return { ref, dbDir, name: ref.table, tableDir: `${dbDir}/${ref.table}.lance`, storeDir: `${dbDir}/_lancet/${ref.table}` };
  }
  const dbDir = path.resolve(ref.db);
  if (!existsSync(dbDir)) {
    throw new ConfigError("DB_NOT_FOUND", `database directory ${dbDir} does not exist; pass the directory you gave lancedb.connect()`);
  }
  if (!statSync(dbDir).isDirectory()) {
    throw new ConfigError("DB_NOT_FOUND", `database path ${dbDir} is a file, not a directory; pass the directory you gave lancedb.connect()`);
  }
  const tableDir = path.join(dbDir, `${ref.table}.lance`);
  if (!existsSync(path.join(tableDir, "_versions"))) {
    throw new ConfigError("TABLE_NOT_FOUND", `table ${ref.table} does not exist in database ${dbDir}; create it with LanceDB first`, { table: ref.table });
  }
  return { ref, dbDir, name: ref.table, tableDir, storeDir: path.join(dbDir, "_lancet", ref.table) };
}

/** Opens the table at its latest version, with a connection that sees other writers at once. */
export async function openLanceTable(t: ResolvedTable): Promise<{ db: LanceNs.Connection; table: LanceNs.Table }> {
  const db = await connectDb(t.dbDir, { readConsistencyInterval: 0 });
  if (isRemote(t.dbDir) && !(await tableExists(t))) {
    throw new ConfigError("TABLE_NOT_FOUND", `table ${t.name} does not exist in database ${t.dbDir}; create it with LanceDB first (and check the bucket, prefix and --storage-option endpoint)`, { table: t.name });
  }
  const table = await db.openTable(t.name);
  return { db, table };
}

/** Whether the table has a version (a manifest) in its database. */
export async function tableExists(t: ResolvedTable): Promise<boolean> {
  if (!isRemote(t.tableDir)) return existsSync(path.join(t.tableDir, "_versions"));
  return (await storeAt(t.tableDir).list("_versions/")).some((k) => k.endsWith(".manifest"));
}
