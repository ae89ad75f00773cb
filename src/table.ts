/**
 * Table references and where Lancet keeps its own files for a table.
 *
 * Lancet's store for table `T` in database `DB` is `DB/_lancet/T/`: bound UDF bundles in `udfs/`,
 * checkpoints in `ckp/`. LanceDB lists only `*.lance` directories as tables, so the store never shows
 * up as user data, and every process that can open the table can reach it.
 */
import { existsSync, statSync } from "node:fs";
import * as path from "node:path";
import { lancedb } from "./arrow.ts";
import type { LanceNs } from "./arrow.ts";
import { ConfigError } from "./errors.ts";

/** Which table: a local database directory and a table name. */
export interface TableRef {
  /** The LanceDB database directory (what `lancedb.connect()` takes). */
  readonly db: string;
  /** The table's name in that database. */
  readonly table: string;
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
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(ref.db)) {
    throw new ConfigError("TABLE_UNSUPPORTED", `database ${ref.db} is not a local directory; Lancet reads fragment metadata from local or POSIX storage only`);
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
  const db = await lancedb.connect(t.dbDir, { readConsistencyInterval: 0 });
  const table = await db.openTable(t.name);
  return { db, table };
}
