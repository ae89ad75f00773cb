/**
 * Batch UDTFs (N:M): a function from the rows of one partition of a source table to any number of
 * output rows — statistics per group, deduplicated records, clips of a video set. Declared like a
 * UDF, with `kind: "udtf"` and named, typed `outputs`:
 *
 * ```ts
 * export const langStats = {
 *   kind: "udtf", inputs: ["lang", "text"], outputs: { lang: "utf8", docs: "int64" }, partitionBy: "lang",
 *   async *fn(batches) { let n = 0n, lang = null; for await (const b of batches) { n += BigInt(b.numRows); lang ??= b.getChild("lang").get(0); } yield { lang, docs: n }; },
 * };
 * ```
 *
 * `fn(batches, ctx)` gets an async iterable of Arrow record batches (the inputs of one partition's
 * rows) and yields output objects, arrays of them, or Arrow tables / record batches; or returns an
 * array of output objects. It is bound to its view like a chunker: bundled in the view's store and
 * named in the field metadata of the view's `__partition` column under {@link UDTF_KEY}.
 */
import { ConfigError } from "../errors.ts";
import type { ResolvedTable } from "../table.ts";
import type { Binding } from "./binding.ts";
import { bundleModule, importBundle, parseUdfRef, storeBundle } from "./bundle.ts";
import { resolveErrorPolicy, type ErrorPolicySpec } from "./policy.ts";
import { resolveDataType, type DataTypeLike } from "./types.ts";
import type { UdfContext } from "./udf.ts";

/** Field metadata key (on `__partition`) holding a UDTF view's binding. */
export const UDTF_KEY = "lancet:udtf";

/** A batch UDTF declaration. */
export interface UdtfSpec<S = unknown> {
  readonly kind: "udtf";
  /** Source columns in the batches `fn` gets. */
  readonly inputs: readonly string[];
  /** Output columns: name → type. */
  readonly outputs: Readonly<Record<string, DataTypeLike>>;
  /** A source column: each of its distinct values is one partition, computed (and checkpointed) on its own. @default the whole source is one partition */
  readonly partitionBy?: string;
  fn(batches: AsyncIterable<unknown>, ctx: UdfContext<S>): unknown;
  readonly setup?: () => S | Promise<S>;
  /** Explicit version; a change recomputes the view at the next refresh. @default content hash of the bundled module */
  readonly version?: string;
  /** "fail" (default), "skip" (a failing partition contributes no rows; its error is recorded) or { retry: N }. */
  readonly errorPolicy?: ErrorPolicySpec;
  readonly memory?: number;
}

/** Declares a UDTF with type checking; returns its argument unchanged. */
export function udtf<S = unknown>(spec: UdtfSpec<S>): UdtfSpec<S> {
  return spec;
}

/** Checks that `value` (a module export) is a usable UDTF declaration. */
export function validateUdtfSpec(value: unknown, where: string): UdtfSpec {
  const fail = (what: string): never => {
    throw new ConfigError("UDF_INVALID", `${where} is not a valid UDTF: ${what}; export an object like { kind: "udtf", inputs: ["lang"], outputs: { lang: "utf8", n: "int64" }, partitionBy: "lang", async *fn(batches) { ... } }`);
  };
  if (typeof value !== "object" || value === null || (value as { kind?: unknown }).kind !== "udtf") fail(`expected an object with kind: "udtf"`);
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
  if (v.partitionBy !== undefined && (typeof v.partitionBy !== "string" || v.partitionBy.length === 0)) fail("partitionBy must be a column name");
  if (typeof v.fn !== "function") fail("fn must be a function (or an async generator function)");
  if (v.setup !== undefined && typeof v.setup !== "function") fail("setup must be a function");
  if (v.version !== undefined && (typeof v.version !== "string" || v.version.length === 0)) fail("version must be a non-empty string");
  if (v.memory !== undefined && (typeof v.memory !== "number" || !Number.isInteger(v.memory) || v.memory < 64 * 2 ** 20)) fail(`memory must be a number of bytes, at least 64 MiB (got ${JSON.stringify(v.memory)})`);
  resolveErrorPolicy(v.errorPolicy, `${where}: errorPolicy`);
  return value as UdtfSpec;
}

/** A UDTF view's binding: a {@link Binding} of kind `udtf` with its outputs and partition column. */
export interface UdtfBinding extends Binding {
  readonly kind: "udtf";
  readonly outputs: Readonly<Record<string, string>>;
  readonly partitionBy: string | null;
}

export async function loadUdtf(file: string, exportName: string, label: string): Promise<UdtfSpec> {
  const mod = await importBundle(file, exportName, label);
  return validateUdtfSpec(mod[exportName], `export "${exportName}" of ${label}`);
}

/** Bundles and stores UDTF `ref` (MODULE#EXPORT) in view `t`'s store; returns its binding. */
export async function bindUdtf(t: ResolvedTable, ref: string): Promise<{ binding: UdtfBinding; spec: UdtfSpec }> {
  const { module, exportName } = parseUdfRef(ref);
  const { code, hash } = await bundleModule(module);
  const file = await storeBundle(t.storeDir, code, hash);
  const spec = await loadUdtf(file, exportName, `${module}#${exportName}`);
  const outputs = Object.fromEntries(Object.entries(spec.outputs).map(([k, ty]) => [k, resolveDataType(ty).text]));
  const binding: UdtfBinding = {
    format: 1,
    kind: "udtf",
    module,
    exportName,
    version: spec.version ?? hash.slice(0, 16),
    bundle: hash,
    inputs: [...spec.inputs],
    dataType: `struct<${Object.entries(outputs).map(([k, ty]) => `${k}: ${ty}`).join(", ")}>`,
    outputs,
    partitionBy: spec.partitionBy ?? null,
    batch: true,
    hasSetup: typeof spec.setup === "function",
    errorPolicy: resolveErrorPolicy(spec.errorPolicy, "errorPolicy").label,
    ...(spec.memory !== undefined ? { memory: spec.memory } : {}),
    boundAt: new Date().toISOString(),
  };
  return { binding, spec };
}

/** Reads a UDTF view's binding from the field metadata of `__partition`. */
export function readUdtfBinding(metadata: Map<string, string> | undefined, view: string): UdtfBinding {
  const raw = metadata?.get(UDTF_KEY);
  let b: Partial<UdtfBinding> | undefined;
  try {
    b = raw === undefined ? undefined : (JSON.parse(raw) as Partial<UdtfBinding>);
  } catch {
    b = undefined;
  }
  if (!b || b.kind !== "udtf" || typeof b.bundle !== "string" || typeof b.exportName !== "string" || typeof b.outputs !== "object" || !Array.isArray(b.inputs)) {
    throw new ConfigError("UDF_INVALID", `view ${view} has no readable UDTF binding (${UDTF_KEY} on __partition); rebind it with alterView(db, "${view}", { udtf })`, { table: view });
  }
  return b as UdtfBinding;
}
