/**
 * Materialized views: ordinary LanceDB tables, created by Lancet with stable row ids, that hold a
 * filtered projection of a source table plus UDF columns of their own. Any LanceDB reader can query
 * a view; Lancet keeps it in step with its source ({@link syncView}, {@link refreshView}).
 *
 * A view's columns: `__source_row_id` (the source row's stable `_rowid`), `__input_hash` (a digest of
 * the row's selected values, see `hash.ts`), the selected columns with their source types, and UDF
 * columns bound like any Lancet column. Its definition lives in the schema metadata (key
 * `lancet:view`, written once at creation: LanceDB Node can set schema metadata only then); the
 * source version it was last refreshed to lives in the field metadata of `__source_row_id` (key
 * `lancet:view:watermark`), written last by every refresh.
 */
import { hasStableRowIdsFlag } from "../commit/manifest-write.ts";
import * as path from "node:path";
import { addColumns } from "../columns.ts";
import { arrow, lancedb } from "../arrow.ts";
import type { ArrowNs, LanceNs } from "../arrow.ts";
import { ConfigError, isBackfillError } from "../errors.ts";
import { readManifestFile } from "../read/manifest.ts";
import { resolveTable, type ResolvedTable } from "../table.ts";
import { bindChunker, CHUNKER_KEY, readChunkerBinding } from "../udf/chunker.ts";
import { bindUdtf, readUdtfBinding, UDTF_KEY, type UdtfBinding } from "../udf/udtf.ts";
import type { TableFnBinding } from "../udf/table-fn.ts";
import { parseDataType } from "../udf/types.ts";
import { connectDb, dbLocation, removeAll } from "../storage/location.ts";

/** Schema metadata key holding a view's definition (JSON). */
export const VIEW_KEY = "lancet:view";
/** Field metadata key (on `__source_row_id`) holding the refresh watermark (JSON). */
export const WATERMARK_KEY = "lancet:view:watermark";
export const SOURCE_ROW_ID = "__source_row_id";
export const INPUT_HASH = "__input_hash";
/** A chunk view's column: a child row's index among its siblings (the chunker binding lives in its field metadata). */
export const CHILD_INDEX = "__child_index";
/** A UDTF view's column: the partition an output row came from, as JSON (the UDTF binding lives in its field metadata). */
export const PARTITION = "__partition";
/** Columns a view owns; a selection cannot name them. */
export const VIEW_COLUMNS: ReadonlySet<string> = new Set([SOURCE_ROW_ID, INPUT_HASH, CHILD_INDEX, PARTITION, "_rowid", "_rowaddr", "_lancet_key"]);
const VIEW_FORMAT = 1;
const STABLE_IDS = { new_table_enable_stable_row_ids: "true" } as const;

/** What {@link createView} takes. */
export interface ViewOptions {
  /** The source table, in the same database. It must have stable row ids. */
  source: string;
  /** SQL filter on the source: only matching rows are in the view. @default all rows */
  where?: string;
  /** Source columns copied into the view (a view's UDF inputs must be among them); a chunk view inherits them into every child. @default none, for a chunk view */
  select?: readonly string[];
  /** A chunker (`MODULE#EXPORT` of a `kind: "chunker"` export): the view holds its children of each source row. @default none: one view row per source row */
  chunker?: string;
  /** A batch UDTF (`MODULE#EXPORT` of a `kind: "udtf"` export): the view holds its output over the source, recomputed partition by partition and replaced at once on each refresh that has anything new. @default none */
  udtf?: string;
  /** UDF columns of the view, `{ column: "MODULE#EXPORT" }`; filled by a refresh. @default none */
  udfs?: Readonly<Record<string, string>>;
  /** Rows added by a refresh are appended in a pseudo-random order of source row id under this seed. @default source order */
  shuffleSeed?: number;
}

/** A view's stored definition. */
export interface ViewDefinition {
  readonly format: 1;
  readonly source: string;
  readonly where: string | null;
  readonly select: readonly string[];
  readonly udfs: Readonly<Record<string, string>>;
  readonly shuffleSeed: number | null;
  /** The chunker as first bound (`MODULE#EXPORT`); the binding in force is on `__child_index`. */
  readonly chunker: string | null;
  /** The UDTF as first bound (`MODULE#EXPORT`); the binding in force is on `__partition`. */
  readonly udtf: string | null;
  readonly createdAt: string;
}

/** The source version a view was last refreshed to; null before its first refresh. */
export interface ViewWatermark {
  readonly sourceVersion: number;
  readonly refreshedAt: string;
  /** UDTF views: what the rows were computed with (`EXPORT@VERSION`). */
  readonly version?: string;
}

/** A view as {@link readView} and {@link listViews} report it. */
export interface ViewInfo {
  readonly name: string;
  readonly definition: ViewDefinition;
  readonly watermark: ViewWatermark | null;
}

/**
 * Creates view `name` in database `db` (a directory) over `options.source`. Writes no rows: the
 * first {@link refreshView} (or {@link syncView}) fills it.
 * @throws ConfigError TABLE_NOT_FOUND (unknown source), TABLE_UNSUPPORTED (source without stable row
 * ids), COLUMN_NOT_FOUND (unknown selected column), WHERE_INVALID, TABLE_EXISTS (the name is taken),
 * CONFIG_INVALID (malformed options), COLUMN_EXISTS (a UDF column named like a selected one), or addColumns' codes for a bad UDF; nothing is left behind.
 */
export async function createView(db: string, name: string, options: ViewOptions): Promise<ViewInfo> {
  const def = checkOptions(name, options);
  const src = resolveTable({ db, table: def.source });
  const conn = await connectDb(src.dbDir, { readConsistencyInterval: 0 });
  if ((await conn.tableNames()).includes(name)) {
    throw new ConfigError("TABLE_EXISTS", `view name ${name} is taken: database ${src.dbDir} already has a table ${name}; pick another name (or drop that table)`, { table: name });
  }
  await assertStableRowIds(src, "create a view over it");
  const source = await conn.openTable(def.source);
  const schema = await source.schema();
  const fields: ArrowNs.Field[] = [];
  for (const col of def.select) {
    const f = schema.fields.find((x) => x.name === col);
    if (!f) {
      throw new ConfigError("COLUMN_NOT_FOUND", `selected column ${col} is not a column of source table ${def.source}; its columns are ${schema.fields.map((x) => x.name).join(", ")}`, { table: def.source, column: col });
    }
    if (lancedb.isBlobField(f as never)) {
      throw new ConfigError("CONFIG_INVALID", `selected column ${col} of source table ${def.source} is a blob column, which a view does not copy; select the columns that identify the row and read the blob from the source, or make it an input of the view's chunker, UDTF or UDFs`, { table: def.source, column: col });
    }
    fields.push(new arrow.Field(col, f.type, true));
  }
  if (def.where !== null) await checkWhere(source, def.source, def.where);

  const storeDir = path.join(src.dbDir, "_lancet", name);
  let own: ArrowNs.Field[];
  try {
    own =
      def.udtf !== null
        ? await tableFnViewFields("udtf", src, name, storeDir, def, schema)
        : def.chunker === null
          ? [new arrow.Field(SOURCE_ROW_ID, new arrow.Int64(), false), new arrow.Field(INPUT_HASH, new arrow.Int64(), false)]
          : await tableFnViewFields("chunker", src, name, storeDir, def, schema);
  } catch (e) {
    await removeAll(storeDir);
    throw e;
  }
  const lead = def.udtf !== null ? 1 : 2;
  const viewSchema = new arrow.Schema([...own.slice(0, lead), ...fields, ...own.slice(lead)], new Map([[VIEW_KEY, JSON.stringify(def)]]));
  await conn.createEmptyTable(name, viewSchema, { storageOptions: STABLE_IDS } as never);
  try {
    if (Object.keys(def.udfs).length > 0) await addColumns({ db: src.dbDir, table: name }, { ...def.udfs });
  } catch (e) {
    // Nothing written: drop the half-made view and its Lancet store.
    await conn.dropTable(name).catch(() => undefined);
    await removeAll(storeDir);
    if (isBackfillError(e, "INPUT_COLUMN_NOT_FOUND")) {
      throw new ConfigError("INPUT_COLUMN_NOT_FOUND", `${e.message.replace(/; its columns are .*$/, "")}; a view's UDF inputs must be among its ${def.chunker === null && def.udtf === null ? `selected columns (select: ${def.select.join(", ")})` : "selected and output columns"}`, { table: name, ...(e.context.column !== undefined ? { column: e.context.column } : {}), cause: e });
    }
    throw e;
  }
  return { name, definition: def, watermark: null };
}

/** Validates and normalises {@link createView}'s options. */
function checkOptions(name: string, o: ViewOptions): ViewDefinition {
  if (typeof name !== "string" || !/^[A-Za-z0-9_.-]+$/.test(name) || name.startsWith("_lancet")) {
    throw new ConfigError("CONFIG_INVALID", `view name must be a table name of letters, digits, "_", "-" or "." (got ${JSON.stringify(name)})`);
  }
  if (o === null || typeof o !== "object") throw new ConfigError("CONFIG_INVALID", "createView needs options { source, select, where?, udfs?, shuffleSeed? }");
  if (typeof o.source !== "string" || o.source.length === 0) throw new ConfigError("CONFIG_INVALID", `options.source must be a table name (got ${JSON.stringify(o.source)})`);
  if (o.source === name) throw new ConfigError("CONFIG_INVALID", `a view cannot be its own source (${name})`);
  if (o.chunker !== undefined && (typeof o.chunker !== "string" || !o.chunker.includes("#"))) {
    throw new ConfigError("CONFIG_INVALID", `options.chunker must be "MODULE#EXPORT" (got ${JSON.stringify(o.chunker)})`);
  }
  if (o.udtf !== undefined && (typeof o.udtf !== "string" || !o.udtf.includes("#"))) {
    throw new ConfigError("CONFIG_INVALID", `options.udtf must be "MODULE#EXPORT" (got ${JSON.stringify(o.udtf)})`);
  }
  if (o.udtf !== undefined && (o.chunker !== undefined || (o.select !== undefined && o.select.length > 0) || o.shuffleSeed !== undefined)) {
    throw new ConfigError("CONFIG_INVALID", "a UDTF view takes no chunker, select or shuffleSeed: its columns are the UDTF's outputs (and UDF columns)");
  }
  const select = o.select ?? (o.chunker !== undefined || o.udtf !== undefined ? [] : undefined);
  if (!Array.isArray(select) || (select.length === 0 && o.chunker === undefined && o.udtf === undefined) || select.some((c) => typeof c !== "string" || c.length === 0)) {
    throw new ConfigError("CONFIG_INVALID", `options.select must be a non-empty list of column names (got ${JSON.stringify(o.select)})`);
  }
  if (o.chunker !== undefined && o.shuffleSeed !== undefined) throw new ConfigError("CONFIG_INVALID", "options.shuffleSeed applies to views without a chunker");
  const dup = select.find((c, i) => select.indexOf(c) !== i);
  if (dup !== undefined) throw new ConfigError("CONFIG_INVALID", `options.select names column ${dup} twice`);
  const reserved = select.find((c) => VIEW_COLUMNS.has(c));
  if (reserved !== undefined) throw new ConfigError("CONFIG_INVALID", `options.select cannot name ${reserved}: a view keeps its own ${[...VIEW_COLUMNS].join(", ")}`);
  if (o.where !== undefined && (typeof o.where !== "string" || o.where.trim() === "")) {
    throw new ConfigError("WHERE_INVALID", `options.where must be a non-empty SQL filter (got ${JSON.stringify(o.where)})`);
  }
  const udfs = o.udfs ?? {};
  if (udfs === null || typeof udfs !== "object" || Object.values(udfs).some((r) => typeof r !== "string" || r.length === 0)) {
    throw new ConfigError("CONFIG_INVALID", `options.udfs must map column names to "MODULE#EXPORT" (got ${JSON.stringify(o.udfs)})`);
  }
  const clash = Object.keys(udfs).find((c) => select.includes(c) || VIEW_COLUMNS.has(c));
  if (clash !== undefined) throw new ConfigError("COLUMN_EXISTS", `UDF column ${clash} clashes with a selected or view column of view ${name}; pick another name`, { table: name, column: clash });
  if (o.shuffleSeed !== undefined && (!Number.isSafeInteger(o.shuffleSeed) || o.shuffleSeed < 0)) {
    throw new ConfigError("CONFIG_INVALID", `options.shuffleSeed must be a non-negative integer (got ${JSON.stringify(o.shuffleSeed)})`);
  }
  return {
    format: VIEW_FORMAT,
    source: o.source,
    where: o.where ?? null,
    select: [...select],
    udfs: { ...udfs },
    shuffleSeed: o.shuffleSeed ?? null,
    chunker: o.chunker ?? null,
    udtf: o.udtf ?? null,
    createdAt: new Date().toISOString(),
  };
}

async function checkWhere(table: LanceNs.Table, tableName: string, where: string): Promise<void> {
  try {
    await table.query().where(where).select(["_rowid"]).limit(0).toArray();
  } catch (e) {
    throw new ConfigError("WHERE_INVALID", `where ${JSON.stringify(where)} is not a valid filter on source table ${tableName}: ${(e as Error).message.split("\n")[0]!.replace(/^.*?Invalid input, /, "")}`, { table: tableName, cause: e });
  }
}

/** Whether a table was created with stable row ids (Lance reader feature flag 2 in its manifest). */
export async function hasStableRowIds(t: ResolvedTable): Promise<boolean> {
  return hasStableRowIdsFlag((await readManifestFile(t.tableDir)).fields);
}

/** Refuses a source without stable row ids, naming the fix. */
export async function assertStableRowIds(t: ResolvedTable, what: string): Promise<void> {
  if (await hasStableRowIds(t)) return;
  throw new ConfigError(
    "TABLE_UNSUPPORTED",
    `source table ${t.name} has no stable row ids, so Lancet cannot ${what} (its row ids change when LanceDB compacts it); recreate it with stable row ids, e.g. db.createTable("${t.name}_v2", data, { storageOptions: { new_table_enable_stable_row_ids: "true" } }) and copy its rows over — LanceDB can enable them only at creation`,
    { table: t.name },
  );
}

/** Parses a view definition from schema metadata; undefined when the table is not a view. */
export function parseDefinition(metadata: Map<string, string> | undefined, table: string): ViewDefinition | undefined {
  const raw = metadata?.get(VIEW_KEY);
  if (raw === undefined) return undefined;
  let d: Partial<ViewDefinition>;
  try {
    d = JSON.parse(raw) as Partial<ViewDefinition>;
  } catch {
    throw new ConfigError("TABLE_UNSUPPORTED", `table ${table} has an unreadable ${VIEW_KEY} definition; recreate the view`, { table });
  }
  if (d.format !== VIEW_FORMAT || typeof d.source !== "string" || !Array.isArray(d.select) || typeof d.udfs !== "object" || d.udfs === null) {
    throw new ConfigError("TABLE_UNSUPPORTED", `table ${table} has a view definition this version of Lancet cannot read (format ${String(d.format)}); recreate the view`, { table });
  }
  return { format: VIEW_FORMAT, source: d.source, where: d.where ?? null, select: d.select, udfs: d.udfs, shuffleSeed: d.shuffleSeed ?? null, chunker: d.chunker ?? null, udtf: d.udtf ?? null, createdAt: d.createdAt ?? "" };
}

/** The column whose field metadata holds a view's watermark: `__source_row_id`, or a UDTF view's `__partition`. */
export function watermarkField(schema: ArrowNs.Schema): string {
  return schema.fields.some((f) => f.name === SOURCE_ROW_ID) ? SOURCE_ROW_ID : PARTITION;
}

/** Parses the watermark from the field metadata of `__source_row_id` (a UDTF view's `__partition`). */
export function parseWatermark(schema: ArrowNs.Schema): ViewWatermark | null {
  const raw = schema.fields.find((f) => f.name === watermarkField(schema))?.metadata.get(WATERMARK_KEY);
  if (raw === undefined) return null;
  try {
    const w = JSON.parse(raw) as Partial<ViewWatermark>;
    return typeof w.sourceVersion === "number" ? { sourceVersion: w.sourceVersion, refreshedAt: w.refreshedAt ?? "", ...(typeof w.version === "string" ? { version: w.version } : {}) } : null;
  } catch {
    return null;
  }
}

/**
 * Reads view `name`'s definition and watermark.
 * @throws ConfigError TABLE_NOT_FOUND when there is no such table, TABLE_UNSUPPORTED when it is not a view.
 */
export async function readView(db: string, name: string): Promise<ViewInfo> {
  const t = resolveTable({ db, table: name });
  const conn = await connectDb(t.dbDir, { readConsistencyInterval: 0 });
  const schema = await (await conn.openTable(name)).schema();
  const definition = parseDefinition(schema.metadata, name);
  if (!definition) {
    throw new ConfigError("TABLE_UNSUPPORTED", `table ${name} is not a view (it has no ${VIEW_KEY} definition); create one with createView / lancet create-view`, { table: name });
  }
  return { name, definition, watermark: parseWatermark(schema) };
}

/** The views in database `db` (tables carrying a Lancet view definition), by name. */
export async function listViews(db: string): Promise<ViewInfo[]> {
  const dbDir = dbLocation(db);
  resolveDb(db);
  const conn = await connectDb(dbDir, { readConsistencyInterval: 0 });
  const out: ViewInfo[] = [];
  for (const name of (await conn.tableNames()).sort()) {
    const schema = await (await conn.openTable(name)).schema();
    let definition: ViewDefinition | undefined;
    try {
      definition = parseDefinition(schema.metadata, name);
    } catch {
      continue; // an unreadable definition: readView reports it
    }
    if (definition) out.push({ name, definition, watermark: parseWatermark(schema) });
  }
  return out;
}

/** Validates a database directory with resolveTable's checks (a dummy table name never looked up). */
function resolveDb(db: string): void {
  try {
    resolveTable({ db, table: "_" });
  } catch (e) {
    if (!isBackfillError(e, "TABLE_NOT_FOUND")) throw e;
  }
}

/** A chunker's or UDTF's place in a view: the view column carrying its binding, and how it is bound and read. */
const TABLE_FNS = {
  chunker: { noun: "chunker", column: CHILD_INDEX, key: CHUNKER_KEY, bind: bindChunker, read: readChunkerBinding, sourceColumns: (b: TableFnBinding) => b.inputs },
  udtf: { noun: "UDTF", column: PARTITION, key: UDTF_KEY, bind: bindUdtf, read: readUdtfBinding, sourceColumns: (b: TableFnBinding) => [...b.inputs, ...((b as UdtfBinding).partitionBy !== null ? [(b as UdtfBinding).partitionBy!] : [])] },
} as const;

/** Refuses a chunker or UDTF binding that needs a column the source does not have. */
function checkSourceColumns(kind: keyof typeof TABLE_FNS, binding: TableFnBinding, source: string, sourceSchema: ArrowNs.Schema): void {
  for (const col of TABLE_FNS[kind].sourceColumns(binding)) {
    if (!sourceSchema.fields.some((f) => f.name === col)) {
      throw new ConfigError("INPUT_COLUMN_NOT_FOUND", `${TABLE_FNS[kind].noun} ${binding.module}#${binding.exportName} ${binding.inputs.includes(col) ? "takes input" : "partitions by"} ${col}, which source table ${source} does not have; its columns are ${sourceSchema.fields.map((f) => f.name).join(", ")}`, { table: source, column: col });
    }
  }
}

/**
 * A chunk or UDTF view's own columns and its outputs: a chunk view's `__source_row_id` and
 * `__child_index`, a UDTF view's `__partition` (the one carrying the binding), then one column per
 * output. Binds the chunker or UDTF into the view's store.
 */
async function tableFnViewFields(kind: keyof typeof TABLE_FNS, src: ResolvedTable, name: string, storeDir: string, def: ViewDefinition, sourceSchema: ArrowNs.Schema): Promise<ArrowNs.Field[]> {
  const fn = TABLE_FNS[kind];
  const { binding } = await fn.bind({ ...src, ref: { db: src.dbDir, table: name }, name, tableDir: path.join(src.dbDir, `${name}.lance`), storeDir }, (kind === "chunker" ? def.chunker : def.udtf)!);
  checkSourceColumns(kind, binding, def.source, sourceSchema);
  const clash = Object.keys(binding.outputs).find((c) => def.select.includes(c) || c in def.udfs || VIEW_COLUMNS.has(c));
  if (clash !== undefined) throw new ConfigError("COLUMN_EXISTS", `${fn.noun} ${binding.module}#${binding.exportName} outputs column ${clash}, which clashes with a selected, UDF or view column of view ${name}; rename the output or the column`, { table: name, column: clash });
  const carrier = new Map([[fn.key, JSON.stringify(binding)]]);
  const own =
    kind === "chunker"
      ? [new arrow.Field(SOURCE_ROW_ID, new arrow.Int64(), false), new arrow.Field(CHILD_INDEX, new arrow.Int32(), false, carrier)]
      : [new arrow.Field(PARTITION, new arrow.Utf8(), true, carrier)];
  return [...own, ...Object.entries(binding.outputs).map(([k, t]) => new arrow.Field(k, parseDataType(t), true))];
}

/** What {@link alterView} changes. */
export interface AlterViewOptions {
  /** Rebind the chunker of a chunk view (`MODULE#EXPORT`); a new version regenerates every child at the next refresh. Its outputs must keep the view's output columns and types. */
  chunker?: string;
  /** Rebind the UDTF of a UDTF view (`MODULE#EXPORT`, same outputs); a new version recomputes the view at the next refresh. */
  udtf?: string;
}

/**
 * Changes a view's binding: `chunker` rebinds a chunk view's chunker.
 * @throws ConfigError TABLE_UNSUPPORTED (not a chunk view), UDF_INVALID, INPUT_COLUMN_NOT_FOUND, CONFIG_INVALID (outputs differ)
 */
export async function alterView(db: string, name: string, options: AlterViewOptions): Promise<ViewInfo> {
  const info = await readView(db, name);
  const kind = options.udtf !== undefined ? "udtf" : options.chunker !== undefined ? "chunker" : undefined;
  if (kind === undefined) return info;
  const fn = TABLE_FNS[kind];
  const ref = (kind === "udtf" ? options.udtf : options.chunker)!;
  if ((kind === "udtf" ? info.definition.udtf : info.definition.chunker) === null) {
    throw new ConfigError("TABLE_UNSUPPORTED", `view ${name} has no ${fn.noun} to rebind; create a ${kind === "udtf" ? "UDTF" : "chunk"} view with createView(db, name, { source, ${kind} })`, { table: name });
  }
  const t = resolveTable({ db, table: name });
  const conn = await connectDb(t.dbDir, { readConsistencyInterval: 0 });
  const view = await conn.openTable(name);
  const old = fn.read((await view.schema()).fields.find((f) => f.name === fn.column)?.metadata, name);
  const { binding } = await fn.bind(t, ref);
  if (JSON.stringify(Object.entries(binding.outputs)) !== JSON.stringify(Object.entries(old.outputs))) {
    throw new ConfigError("CONFIG_INVALID", `${fn.noun} ${ref} outputs ${JSON.stringify(binding.outputs)}, but view ${name}'s output columns are ${JSON.stringify(old.outputs)}; a rebind keeps the output columns — create a new view for new outputs`, { table: name });
  }
  checkSourceColumns(kind, binding, info.definition.source, await (await conn.openTable(info.definition.source)).schema());
  await view.updateFieldMetadata([{ path: fn.column, metadata: { [fn.key]: JSON.stringify(binding) } }] as never);
  return info;
}
