/**
 * A column's binding: which UDF computes it. Stored as JSON in the field's metadata under
 * `lancet:udf`, so any process that opens the table (the CLI, a worker, another machine) knows how to
 * backfill the column. The code itself is the content-addressed bundle in the table's store.
 */
import { createHash } from "node:crypto";
import * as path from "node:path";
import { ConfigError } from "../errors.ts";
import type { ResolvedTable } from "../table.ts";
import { bundleModule, bundlePath, loadExport, parseUdfRef, storeBundle } from "./bundle.ts";
import { isSqlUdf } from "./udf.ts";
import { readChunkerBinding } from "./chunker.ts";
import { readUdtfBinding } from "./udtf.ts";
import { resolveDataType } from "./types.ts";
import { resolveErrorPolicy } from "./policy.ts";
import type { UdfSpec } from "./udf.ts";
import { connectDb } from "../storage/location.ts";

export const BINDING_KEY = "lancet:udf";

export interface Binding {
  readonly format: 1;
  /** `sql`: a LanceDB native computed column, filled by LanceDB's own refresh. @default "js" */
  readonly kind?: "js" | "sql" | "chunker" | "udtf";
  /** The SQL expression of a `sql` binding. */
  readonly sql?: string;
  /** Absolute path of the module file as bound. */
  readonly module: string;
  readonly exportName: string;
  /** The UDF's version: its explicit `version`, else the bundle's content hash (16 hex digits). */
  readonly version: string;
  /** sha256 of the stored bundle. */
  readonly bundle: string;
  readonly inputs: readonly string[];
  /** Canonical type string. */
  readonly dataType: string;
  readonly batch: boolean;
  readonly hasSetup: boolean;
  /** The UDF's error policy, e.g. "fail", "skip", "retry:3". */
  readonly errorPolicy?: string;
  readonly timeoutMs?: number;
  /** Worker memory hint in bytes. */
  readonly memory?: number;
  /** GPUs and CPUs one worker slot needs (distributed mode routes and admits by them). */
  readonly numGpus?: number;
  readonly numCpus?: number;
  /** Required input types (canonical type strings). */
  readonly inputTypes?: Readonly<Record<string, string>>;
  readonly boundAt: string;
}

/** The binding of a SQL UDF: LanceDB computes it natively; `inputs` and `dataType` come from LanceDB. */
export function sqlBinding(sql: string, inputs: readonly string[], dataType: string, source: { module: string; exportName: string }): Binding {
  return {
    format: 1,
    kind: "sql",
    sql,
    module: source.module,
    exportName: source.exportName,
    version: createHash("sha256").update(sql).digest("hex").slice(0, 16),
    bundle: "",
    inputs: [...inputs],
    dataType,
    batch: true,
    hasSetup: false,
    boundAt: new Date().toISOString(),
  };
}

/** Bundles, stores and loads the UDF named by `ref`; returns the binding and the loaded declaration. */
export async function bindUdf(t: ResolvedTable, column: string, ref: string): Promise<{ binding: Binding; spec: UdfSpec } | { sql: string; source: { module: string; exportName: string } }> {
  const { module, exportName } = parseUdfRef(ref);
  const { code, hash } = await bundleModule(module);
  const file = await storeBundle(t.storeDir, code, hash);
  const spec = await loadExport(file, exportName, `${module}#${exportName}`);
  if (isSqlUdf(spec)) return { sql: spec.sql, source: { module, exportName } };
  const { text } = resolveDataType(spec.dataType);
  if (spec.inputs.includes(column)) {
    throw new ConfigError("UDF_INVALID", `UDF ${module}#${exportName} for column ${column} takes ${column} itself as an input; a column cannot depend on itself`, { table: t.name, column });
  }
  const binding: Binding = {
    format: 1,
    module,
    exportName,
    version: spec.version ?? hash.slice(0, 16),
    bundle: hash,
    inputs: [...spec.inputs],
    dataType: text,
    batch: spec.batch === true,
    hasSetup: typeof spec.setup === "function",
    errorPolicy: resolveErrorPolicy(spec.errorPolicy, "errorPolicy").label,
    ...(spec.timeoutMs !== undefined ? { timeoutMs: spec.timeoutMs } : {}),
    ...(spec.memory !== undefined ? { memory: spec.memory } : {}),
    ...(spec.numGpus ? { numGpus: spec.numGpus } : {}),
    ...(spec.numCpus !== undefined ? { numCpus: spec.numCpus } : {}),
    ...(spec.inputTypes !== undefined ? { inputTypes: Object.fromEntries(Object.entries(spec.inputTypes).map(([k, v]) => [k, resolveDataType(v).text])) } : {}),
    boundAt: new Date().toISOString(),
  };
  return { binding, spec };
}

/** Reads the binding from a field's metadata; undefined when the column is not a UDF column. */
export function readBinding(metadata: Map<string, string> | undefined, table: string, column: string): Binding | undefined {
  const raw = metadata?.get(BINDING_KEY);
  if (raw === undefined) return undefined;
  let b: Partial<Binding>;
  try {
    b = JSON.parse(raw) as Partial<Binding>;
  } catch {
    throw new ConfigError("UDF_INVALID", `column ${column} of table ${table} has an unreadable ${BINDING_KEY} binding; rebind it with alter-column`, { table, column });
  }
  if (b.format !== 1 || typeof b.bundle !== "string" || typeof b.exportName !== "string" || !Array.isArray(b.inputs) || typeof b.dataType !== "string") {
    throw new ConfigError("UDF_INVALID", `column ${column} of table ${table} has a binding this version of Lancet cannot read (format ${String(b.format)}); rebind it with alter-column`, { table, column });
  }
  return b as Binding;
}

/**
 * Checks that `bundlePath` is the bundle the table binds to `column` (at `version`, else the latest):
 * a worker imports only code that binding the column stored, never another bundle that merely sits
 * in a store (a task from Redis names its bundle).
 * @throws ConfigError CONFIG_INVALID when the column binds another bundle, or none
 */
export async function assertBundleBound(c: { readonly dbDir: string; readonly table: string; readonly column: string; readonly bundlePath: string; readonly bindingVersion?: number; readonly chunker?: unknown; readonly udtf?: unknown }, subject: string): Promise<void> {
  const db = await connectDb(c.dbDir);
  const table = await db.openTable(c.table, undefined, (c.bindingVersion !== undefined ? { version: c.bindingVersion } : {}) as never);
  const field = (await table.schema()).fields.find((f) => f.name === c.column);
  // A chunk view's chunker is bound on its __child_index column, under its own key.
  const b = !field ? undefined : c.chunker !== undefined ? readChunkerBinding(field.metadata, c.table) : c.udtf !== undefined ? readUdtfBinding(field.metadata, c.table) : readBinding(field.metadata, c.table, c.column);
  const named = path.basename(c.bundlePath).replace(/\.mjs$/, "");
  if (b?.bundle !== named) {
    const at = c.bindingVersion !== undefined ? `version ${c.bindingVersion}` : "its latest version";
    throw new ConfigError(
      "CONFIG_INVALID",
      `${subject} names UDF bundle ${named.slice(0, 16)}…, but column ${c.column} of table ${c.table} (${at}) ${b ? `binds bundle ${b.bundle.slice(0, 16)}…` : "binds no UDF"}; refused: a worker runs only the bundle the column's binding names. Check who can write to the queue's Redis`,
      { table: c.table, column: c.column },
    );
  }
}

/** Where the bound bundle of `b` lives. */
export function bindingBundlePath(t: ResolvedTable, b: Binding): string {
  return bundlePath(t.storeDir, b.bundle);
}
