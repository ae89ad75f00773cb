/**
 * Declaring UDF columns: {@link addColumns} (metadata-only, the column starts NULL),
 * {@link alterColumns} (rebind to another UDF or version) and {@link columnStatus}.
 */
import { existsSync } from "node:fs";
import { arrow, lancedb } from "./arrow.ts";
import type { ArrowNs, LanceNs } from "./arrow.ts";
import { ConfigError } from "./errors.ts";
import { openLanceTable, resolveTable, type ResolvedTable, type TableRef } from "./table.ts";
import { BINDING_KEY, bindUdf, readBinding, sqlBinding, type Binding } from "./udf/binding.ts";
import { bundleModule } from "./udf/bundle.ts";
import { formatDataType, parseDataType } from "./udf/types.ts";
import { KEY_COLUMN } from "./commit/merge-insert.ts";

/** Columns Lancet manages itself; never user inputs or outputs. */
export const RESERVED_COLUMNS: ReadonlySet<string> = new Set([KEY_COLUMN, "_rowid", "_rowaddr"]);

/** Checks a binding's inputs against a table schema: present, and of the declared types. */
export function checkInputs(t: ResolvedTable, column: string, binding: Binding, schema: ArrowNs.Schema): void {
  const names = schema.fields.map((f) => f.name);
  const reserved = binding.inputs.filter((i) => RESERVED_COLUMNS.has(i));
  if (reserved.length > 0) {
    throw new ConfigError("INPUT_COLUMN_NOT_FOUND", `UDF ${binding.module}#${binding.exportName} for column ${column} takes ${reserved[0]} as an input, which is ${describeReserved(reserved[0]!)}, not an input; its columns are ${userColumns(schema).join(", ")}`, { table: t.name, column });
  }
  const missing = binding.inputs.filter((i) => !names.includes(i));
  if (missing.length > 0) {
    throw new ConfigError(
      "INPUT_COLUMN_NOT_FOUND",
      `UDF ${binding.module}#${binding.exportName} for column ${column} needs input column(s) ${missing.join(", ")}, which table ${t.name} does not have; its columns are ${userColumns(schema).join(", ")}`,
      { table: t.name, column },
    );
  }
  for (const [input, want] of Object.entries(binding.inputTypes ?? {})) {
    const field = schema.fields.find((f) => f.name === input)!;
    let have: string;
    try {
      have = formatDataType(field.type);
    } catch {
      have = String(field.type);
    }
    if (have !== want) {
      throw new ConfigError("INPUT_COLUMN_TYPE", `UDF ${binding.module}#${binding.exportName} for column ${column} needs input column ${input} as ${want}, but in table ${t.name} it is ${have}; cast the column or change the UDF's inputTypes`, { table: t.name, column });
    }
  }
}

/** A table's columns as users know them: without Lancet's internal ones. */
export function userColumns(schema: ArrowNs.Schema): string[] {
  return schema.fields.map((f) => f.name).filter((n) => !RESERVED_COLUMNS.has(n));
}

/** A LanceDB message without Lancet's internal columns in its lists of fields ("Valid fields are `a`, `_lancet_key`."). */
export function withoutReservedColumns(message: string): string {
  let out = message;
  for (const c of RESERVED_COLUMNS) out = out.replaceAll(`, \`${c}\``, "").replaceAll(`\`${c}\`, `, "");
  return out;
}

/** What a reserved column is, for messages. */
export function describeReserved(column: string): string {
  return column === KEY_COLUMN
    ? `Lancet's internal row key (added by the mergeInsert commit path to match computed values to rows; leave it in place)`
    : `a LanceDB row address column (${column})`;
}

function describeType(type: ArrowNs.DataType): string {
  try {
    return formatDataType(type);
  } catch {
    return String(type);
  }
}

/** Runs a schema change, retrying LanceDB's non-retried DDL conflicts on a fresh view of the table. */
async function retryDdl<T>(table: LanceNs.Table, op: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await op();
    } catch (e) {
      if (attempt >= 5 || !/Retryable commit conflict/i.test((e as Error).message)) throw e;
      await table.checkoutLatest();
      await new Promise((r) => setTimeout(r, 50 * attempt));
    }
  }
}

export interface ColumnBindingResult {
  readonly column: string;
  readonly binding: Binding;
}

/**
 * Adds nullable columns bound to UDFs, e.g. `addColumns({ db, table }, { words: "./udfs.ts#wordCount" })`.
 * Metadata-only: no values are written until {@link backfill}. Each UDF module is bundled and the
 * bundle stored in the table's Lancet store.
 * @throws ConfigError when a column exists, a module/export/input column is missing, or a type is invalid.
 */
export async function addColumns(ref: TableRef, columns: Record<string, string | { sql: string }>): Promise<ColumnBindingResult[]> {
  const t = resolveTable(ref);
  const entries = Object.entries(columns ?? {});
  if (entries.length === 0) throw new ConfigError("CONFIG_INVALID", "addColumns needs at least one { column: \"MODULE#EXPORT\" } entry");
  const { table } = await openLanceTable(t);
  const schema = await table.schema();
  const out: ColumnBindingResult[] = [];
  const fields: ArrowNs.Field[] = [];
  const sqlColumns: { column: string; sql: string; source: { module: string; exportName: string } }[] = [];
  for (const [column, udfRef] of entries) {
    if (RESERVED_COLUMNS.has(column) || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(column)) {
      throw new ConfigError("CONFIG_INVALID", `column name ${JSON.stringify(column)} is not allowed; use letters, digits and "_" (and not ${[...RESERVED_COLUMNS].join(", ")})`, { table: t.name, column });
    }
    const existing = schema.fields.find((f) => f.name === column);
    if (existing) {
      const hint = readBinding(existing.metadata, t.name, column)
        ? "use alter-column to rebind it"
        : `it is a data column (${describeType(existing.type)}), not a UDF column; pick another name (alter-column with force would bind a UDF to it and overwrite its values)`;
      throw new ConfigError("COLUMN_EXISTS", `table ${t.name} already has a column ${column}; ${hint}`, { table: t.name, column });
    }
    if (typeof udfRef === "object" && udfRef !== null && typeof udfRef.sql === "string") {
      if (udfRef.sql.trim() === "") throw new ConfigError("UDF_INVALID", `the SQL expression for column ${column} is empty`, { table: t.name, column });
      sqlColumns.push({ column, sql: udfRef.sql, source: { module: "", exportName: "" } });
      continue;
    }
    const bound = await bindUdf(t, column, udfRef as string);
    if ("sql" in bound) {
      sqlColumns.push({ column, ...bound });
      continue;
    }
    const { binding } = bound;
    checkInputs(t, column, binding, schema);
    const meta = new Map([[BINDING_KEY, JSON.stringify(binding)]]);
    // A blob column is LanceDB's blob v2 field (its `lance.blob.v2` marker), not a plain struct.
    const field = binding.dataType === "blob" ? lancedb.blob(column) : new arrow.Field(column, parseDataType(binding.dataType), true);
    fields.push(new arrow.Field(column, field.type, true, new Map([...field.metadata, ...meta])));
    out.push({ column, binding });
  }
  if (fields.length > 0) await retryDdl(table, () => table.addColumns(fields));
  for (const c of sqlColumns) out.push({ column: c.column, binding: await addSqlColumn(t, table, c.column, c.sql, c.source) });
  return out;
}

/** Declares a LanceDB native computed column and records Lancet's binding on it. */
async function addSqlColumn(t: ResolvedTable, table: LanceNs.Table, column: string, sql: string, source: { module: string; exportName: string }): Promise<Binding> {
  try {
    await retryDdl(table, () => table.addColumns({ computed: [{ name: column, valueSql: sql }] } as never));
  } catch (e) {
    throw new ConfigError("UDF_INVALID", `SQL expression ${JSON.stringify(sql)} for column ${column} of table ${t.name} was refused by LanceDB: ${(e as Error).message.split("\n")[0]}`, { table: t.name, column, cause: e });
  }
  const field = (await table.schema()).fields.find((f) => f.name === column)!;
  let inputs: string[] = [];
  try {
    inputs = JSON.parse(field.metadata.get("computed_column.inputs") ?? "[]") as string[];
  } catch {
    inputs = [];
  }
  const binding = sqlBinding(sql, inputs, formatDataType(field.type), source);
  await retryDdl(table, () => table.updateFieldMetadata([{ path: column, metadata: { [BINDING_KEY]: JSON.stringify(binding) } }]));
  return binding;
}

/** Options of {@link alterColumns}. */
export interface AlterColumnsOptions {
  /**
   * Also bind columns that are not UDF columns yet (plain data columns). Their values stay until a
   * backfill writes the UDF's values over them. Lancet's own columns (`_lancet_key`) are never bound.
   * @default false
   */
  readonly force?: boolean;
}

/**
 * Rebinds existing UDF columns to a UDF (a new module, export or version). Values are kept; the next
 * backfill recomputes every row when the version changed. A plain data column (one no UDF computes,
 * such as a primary key) is refused unless `options.force` is set, since a backfill would overwrite
 * its values.
 * @throws ConfigError COLUMN_NOT_FOUND when the column does not exist; COLUMN_NOT_UDF when it is a
 * data column and `force` is not set (the message says its type and how many values it holds);
 * UDF_OUTPUT_TYPE when the UDF's type differs from the column's.
 */
export async function alterColumns(ref: TableRef, columns: Record<string, string>, options: AlterColumnsOptions = {}): Promise<ColumnBindingResult[]> {
  const t = resolveTable(ref);
  const entries = Object.entries(columns ?? {});
  if (entries.length === 0) throw new ConfigError("CONFIG_INVALID", "alterColumns needs at least one { column: \"MODULE#EXPORT\" } entry");
  const force = options?.force ?? false;
  if (typeof force !== "boolean") throw new ConfigError("CONFIG_INVALID", `options.force must be a boolean (got ${JSON.stringify(force)})`);
  const { table } = await openLanceTable(t);
  const schema = await table.schema();
  const out: ColumnBindingResult[] = [];
  for (const [column, udfRef] of entries) {
    const field = schema.fields.find((f) => f.name === column);
    if (RESERVED_COLUMNS.has(column)) {
      throw new ConfigError("CONFIG_INVALID", `column ${column} of table ${t.name} is ${describeReserved(column)}; it cannot be bound to a UDF`, { table: t.name, column });
    }
    if (!field) {
      throw new ConfigError("COLUMN_NOT_FOUND", `table ${t.name} has no column ${column}; its columns are ${userColumns(schema).join(", ")}. Add it with add-column`, { table: t.name, column });
    }
    // An unreadable binding still marks a UDF column, and a rebind is how it gets fixed.
    let current: Binding | undefined;
    try {
      current = readBinding(field.metadata, t.name, column);
    } catch {
      current = undefined;
    }
    const isUdfColumn = field.metadata.has(BINDING_KEY) || field.metadata.has("computed_column");
    if (!isUdfColumn && !force) {
      const values = await table.countRows(`\`${column}\` IS NOT NULL`);
      throw new ConfigError(
        "COLUMN_NOT_UDF",
        `column ${column} of table ${t.name} is a data column (${describeType(field.type)}, ${values} non-null value${values === 1 ? "" : "s"}), not a UDF column: bound to ${udfRef}, its values would be overwritten by backfills (its null rows at once, every row after a UDF version change). To compute a new column, add it with add-column; to overwrite this one, pass force: true (CLI: alter-column --force)`,
        { table: t.name, column },
      );
    }
    const bound = await bindUdf(t, column, udfRef);
    if ("sql" in bound || current?.kind === "sql" || field.metadata.has("computed_column")) {
      throw new ConfigError("CONFIG_INVALID", `column ${column} of table ${t.name} cannot be rebound ${"sql" in bound ? "to a SQL UDF" : "from a SQL UDF"}: LanceDB computed columns keep their expression; drop the column and add it again`, { table: t.name, column });
    }
    const { binding } = bound;
    checkInputs(t, column, binding, schema);
    const have = formatDataType(field.type);
    if (have !== binding.dataType) {
      throw new ConfigError("UDF_OUTPUT_TYPE", `UDF ${binding.module}#${binding.exportName} returns ${binding.dataType} but column ${column} of table ${t.name} is ${have}; a rebind cannot change a column's type`, { table: t.name, column });
    }
    out.push({ column, binding });
  }
  await retryDdl(table, () => table.updateFieldMetadata(out.map(({ column, binding }) => ({ path: column, metadata: { [BINDING_KEY]: JSON.stringify(binding) } }))));
  return out;
}

/** One UDF column as {@link columnStatus} reports it. */
export interface ColumnStatus {
  readonly column: string;
  readonly binding: Binding;
  /** Rows with a non-null value. */
  readonly filledRows: number;
  readonly totalRows: number;
  /** `current`: the module file bundles to the bound snapshot; `changed`: it differs (rebind to use it); `missing`: the file is gone. */
  readonly moduleState: "current" | "changed" | "missing" | "unbundleable" | "sql";
}

/** Reports every UDF column of a table with its binding and fill state. */
export async function columnStatus(ref: TableRef): Promise<ColumnStatus[]> {
  const t = resolveTable(ref);
  const { table } = await openLanceTable(t);
  const schema = await table.schema();
  const total = await table.countRows();
  const out: ColumnStatus[] = [];
  for (const f of schema.fields) {
    const binding = readBinding(f.metadata, t.name, f.name);
    if (!binding) continue;
    let moduleState: ColumnStatus["moduleState"] = binding.kind === "sql" ? "sql" : "missing";
    if (moduleState !== "sql" && existsSync(binding.module)) {
      try {
        moduleState = (await bundleModule(binding.module)).hash === binding.bundle ? "current" : "changed";
      } catch {
        moduleState = "unbundleable";
      }
    }
    const filled = await table.countRows(`\`${f.name}\` IS NOT NULL`);
    out.push({ column: f.name, binding, filledRows: filled, totalRows: total, moduleState });
  }
  return out;
}

/** A column Lancet keeps in a user's table for its own use, as {@link internalColumns} reports it. */
export interface InternalColumn {
  readonly column: string;
  readonly dataType: string;
  /** One line for users: what the column is and what to do about it. */
  readonly purpose: string;
}

/**
 * Lists the columns Lancet itself added to a table: today `_lancet_key`, the row key the mergeInsert
 * commit path adds (a UUID per row, with a btree index) to match computed values to rows. Users see
 * it in the table's schema; it is safe to ignore, and dropping it only costs the next mergeInsert run
 * a rebuild.
 */
export async function internalColumns(ref: TableRef): Promise<InternalColumn[]> {
  const t = resolveTable(ref);
  const { table } = await openLanceTable(t);
  const schema = await table.schema();
  return schema.fields.filter((f) => RESERVED_COLUMNS.has(f.name)).map((f) => ({ column: f.name, dataType: describeType(f.type), purpose: describeReserved(f.name) }));
}
