/**
 * What chunkers (1:N) and batch UDTFs (N:M) share: declarations with named, typed `outputs` instead
 * of one `dataType`, validated alike, bundled into their view's store and bound in the field
 * metadata of one of the view's own columns.
 */
import { ConfigError } from "../errors.ts";
import type { ResolvedTable } from "../table.ts";
import type { Binding } from "./binding.ts";
import { bundleModule, parseUdfRef, storeBundle } from "./bundle.ts";
import { resolveErrorPolicy } from "./policy.ts";
import { resolveDataType, type DataTypeLike } from "./types.ts";

/** What a chunker's and a UDTF's binding add to a {@link Binding}. */
export interface TableFnBinding extends Binding {
  readonly kind: "chunker" | "udtf";
  readonly outputs: Readonly<Record<string, string>>;
}

/**
 * Checks the fields every chunker and UDTF declaration has: `kind`, `inputs`, `outputs`, `fn`,
 * `setup`, `version`, `memory`, `errorPolicy`. `fail` throws with the kind's own advice.
 */
export function validateTableFn(value: unknown, kind: "chunker" | "udtf", where: string, fail: (what: string) => never): Record<string, unknown> {
  if (typeof value !== "object" || value === null || (value as { kind?: unknown }).kind !== kind) fail(`expected an object with kind: "${kind}"`);
  const v = value as Record<string, unknown>;
  if (!Array.isArray(v.inputs) || v.inputs.length === 0 || !v.inputs.every((x) => typeof x === "string" && x.length > 0)) fail("inputs must be a non-empty array of column names");
  if (new Set(v.inputs as string[]).size !== (v.inputs as string[]).length) fail("inputs must not repeat a column");
  if (typeof v.outputs !== "object" || v.outputs === null || Array.isArray(v.outputs) || Object.keys(v.outputs).length === 0) fail("outputs must map one or more output column names to types");
  for (const [name, t] of Object.entries(v.outputs as Record<string, unknown>)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name) || name.startsWith("__")) fail(`output name ${JSON.stringify(name)} must be a plain column name (letters, digits, _; not starting with __)`);
    try {
      resolveDataType(t as DataTypeLike);
    } catch (e) {
      fail(`output ${name}: ${(e as Error).message}`);
    }
  }
  if (typeof v.fn !== "function") fail(`fn must be a function (or a${kind === "udtf" ? "n async" : ""} generator function)`);
  if (v.setup !== undefined && typeof v.setup !== "function") fail("setup must be a function");
  if (v.version !== undefined && (typeof v.version !== "string" || v.version.length === 0)) fail("version must be a non-empty string");
  if (v.memory !== undefined && (typeof v.memory !== "number" || !Number.isInteger(v.memory) || v.memory < 64 * 2 ** 20)) fail(`memory must be a number of bytes, at least 64 MiB (got ${JSON.stringify(v.memory)})`);
  resolveErrorPolicy(v.errorPolicy, `${where}: errorPolicy`);
  return v;
}

/** The declaration fields a binding records. */
interface TableFnDecl {
  readonly inputs: readonly string[];
  readonly outputs: Readonly<Record<string, DataTypeLike>>;
  readonly setup?: unknown;
  readonly version?: string;
  readonly errorPolicy?: unknown;
  readonly memory?: number;
  readonly batch?: boolean;
}

/** Bundles `ref` (MODULE#EXPORT) into view `t`'s store, loads it with `load`, and returns its binding fields. */
export async function bindTableFn<S extends TableFnDecl>(t: ResolvedTable, ref: string, kind: "chunker" | "udtf", load: (file: string, exportName: string, label: string) => Promise<S>): Promise<{ binding: TableFnBinding; spec: S }> {
  const { module, exportName } = parseUdfRef(ref);
  const { code, hash } = await bundleModule(module);
  const file = await storeBundle(t.storeDir, code, hash);
  const spec = await load(file, exportName, `${module}#${exportName}`);
  const outputs = Object.fromEntries(Object.entries(spec.outputs).map(([k, ty]) => [k, resolveDataType(ty).text]));
  const binding: TableFnBinding = {
    format: 1,
    kind,
    module,
    exportName,
    version: spec.version ?? hash.slice(0, 16),
    bundle: hash,
    inputs: [...spec.inputs],
    dataType: `struct<${Object.entries(outputs).map(([k, ty]) => `${k}: ${ty}`).join(", ")}>`,
    outputs,
    batch: kind === "udtf" || spec.batch === true,
    hasSetup: typeof spec.setup === "function",
    errorPolicy: resolveErrorPolicy(spec.errorPolicy, "errorPolicy").label,
    ...(spec.memory !== undefined ? { memory: spec.memory } : {}),
    boundAt: new Date().toISOString(),
  };
  return { binding, spec };
}

/** Reads a chunker's or UDTF's binding from field metadata key `key` of view column `column`. */
export function readTableFnBinding(metadata: Map<string, string> | undefined, key: string, kind: "chunker" | "udtf", view: string, column: string): TableFnBinding {
  const raw = metadata?.get(key);
  let b: Partial<TableFnBinding> | undefined;
  try {
    b = raw === undefined ? undefined : (JSON.parse(raw) as Partial<TableFnBinding>);
  } catch {
    b = undefined;
  }
  if (!b || b.kind !== kind || typeof b.bundle !== "string" || typeof b.exportName !== "string" || typeof b.outputs !== "object" || !Array.isArray(b.inputs)) {
    throw new ConfigError("UDF_INVALID", `view ${view} has no readable ${kind === "udtf" ? "UDTF" : "chunker"} binding (${key} on ${column}); rebind it with alterView(db, "${view}", { ${kind} })`, { table: view });
  }
  return b as TableFnBinding;
}

/**
 * What a view's rows were computed with: the export and its version. Two exports of one module share
 * a default version (the module's content hash), so the export's name is part of it: rebinding a view
 * to another export recomputes it.
 */
export function computedWith(b: Pick<Binding, "exportName" | "version">): string {
  return `${b.exportName}@${b.version}`;
}
