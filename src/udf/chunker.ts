/**
 * Chunkers: UDFs that turn one source row (a parent) into any number of output rows (its children),
 * e.g. a document into passages or a video into clips. Declared like a UDF, with `kind: "chunker"`
 * and named, typed `outputs` instead of one `dataType`:
 *
 * ```ts
 * export const passages = {
 *   kind: "chunker", inputs: ["text"], outputs: { passage: "utf8", start: "int32" },
 *   *fn(text: string) { for (const [start, passage] of split(text)) yield { passage, start }; },
 * };
 * ```
 *
 * `fn` returns an array of output objects, or is a generator / async generator yielding them. With
 * `batch: true` it gets one Arrow vector per input for a batch of parents and returns one array of
 * output objects per parent. A chunker is bound to its view like a UDF to its column: bundled,
 * content-addressed in the view's Lancet store, and named (module, export, version, bundle hash) in
 * the field metadata of the view's `__child_index` column under {@link CHUNKER_KEY}.
 */
import { ConfigError } from "../errors.ts";
import type { ResolvedTable } from "../table.ts";
import type { Binding } from "./binding.ts";
import { bundleModule, importBundle, parseUdfRef, storeBundle } from "./bundle.ts";
import { resolveErrorPolicy, type ErrorPolicySpec } from "./policy.ts";
import { resolveDataType, type DataTypeLike } from "./types.ts";
import type { UdfContext } from "./udf.ts";

/** Field metadata key (on `__child_index`) holding a chunk view's chunker binding. */
export const CHUNKER_KEY = "lancet:chunker";

/** A chunker declaration. */
export interface ChunkerSpec<S = unknown> {
  readonly kind: "chunker";
  /** Source columns passed to `fn`, in this order. */
  readonly inputs: readonly string[];
  /** The children's columns: name → type (a type string or an apache-arrow DataType). */
  readonly outputs: Readonly<Record<string, DataTypeLike>>;
  /**
   * Per parent (default): `fn(...inputValues, ctx)` returns an array of output objects, an iterable,
   * or an async iterable (a generator). With `batch: true`: `fn(...inputVectors, ctx)` returns an
   * array (or a promise of one) holding, per parent, an array or iterable of output objects.
   */
  fn(...args: never[]): unknown;
  readonly batch?: boolean;
  readonly setup?: () => S | Promise<S>;
  /** Explicit version; a change regenerates every child at the next refresh. @default content hash of the bundled module */
  readonly version?: string;
  readonly errorPolicy?: ErrorPolicySpec;
  /** Memory each worker process may use, in bytes. */
  readonly memory?: number;
}

/** What `fn` gets as its last argument. */
export type ChunkerContext<S = unknown> = UdfContext<S>;

/** Declares a chunker with type checking; returns its argument unchanged. */
export function chunker<S = unknown>(spec: ChunkerSpec<S>): ChunkerSpec<S> {
  return spec;
}

export function isChunker(v: unknown): boolean {
  return typeof v === "object" && v !== null && (v as { kind?: unknown }).kind === "chunker";
}

/** Checks that `value` (a module export) is a usable chunker declaration. */
export function validateChunkerSpec(value: unknown, where: string): ChunkerSpec {
  const fail = (what: string): never => {
    throw new ConfigError("UDF_INVALID", `${where} is not a valid chunker: ${what}; export an object like { kind: "chunker", inputs: ["text"], outputs: { passage: "utf8" }, *fn(text) { yield { passage: text } } }`);
  };
  if (!isChunker(value)) fail(`expected an object with kind: "chunker"`);
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
  if (typeof v.fn !== "function") fail("fn must be a function (or a generator function)");
  if (v.batch !== undefined && typeof v.batch !== "boolean") fail("batch must be a boolean");
  if (v.setup !== undefined && typeof v.setup !== "function") fail("setup must be a function");
  if (v.version !== undefined && (typeof v.version !== "string" || v.version.length === 0)) fail("version must be a non-empty string");
  if (v.memory !== undefined && (typeof v.memory !== "number" || !Number.isInteger(v.memory) || v.memory < 64 * 2 ** 20)) fail(`memory must be a number of bytes, at least 64 MiB (got ${JSON.stringify(v.memory)})`);
  resolveErrorPolicy(v.errorPolicy, `${where}: errorPolicy`);
  return value as ChunkerSpec;
}

/** A chunk view's chunker binding: a {@link Binding} of kind `chunker` with its outputs' canonical types. */
export interface ChunkerBinding extends Binding {
  readonly kind: "chunker";
  readonly outputs: Readonly<Record<string, string>>;
}

/** Imports a stored bundle and returns the named export as a validated chunker. */
export async function loadChunker(file: string, exportName: string, label: string): Promise<ChunkerSpec> {
  const mod = await importBundle(file, exportName, label);
  return validateChunkerSpec(mod[exportName], `export "${exportName}" of ${label}`);
}

/** Bundles and stores the chunker `ref` (MODULE#EXPORT) in view `t`'s store; returns its binding. */
export async function bindChunker(t: ResolvedTable, ref: string): Promise<{ binding: ChunkerBinding; spec: ChunkerSpec }> {
  const { module, exportName } = parseUdfRef(ref);
  const { code, hash } = await bundleModule(module);
  const file = await storeBundle(t.storeDir, code, hash);
  const spec = await loadChunker(file, exportName, `${module}#${exportName}`);
  const outputs = Object.fromEntries(Object.entries(spec.outputs).map(([k, ty]) => [k, resolveDataType(ty).text]));
  const binding: ChunkerBinding = {
    format: 1,
    kind: "chunker",
    module,
    exportName,
    version: spec.version ?? hash.slice(0, 16),
    bundle: hash,
    inputs: [...spec.inputs],
    dataType: `struct<${Object.entries(outputs).map(([k, ty]) => `${k}: ${ty}`).join(", ")}>`,
    outputs,
    batch: spec.batch === true,
    hasSetup: typeof spec.setup === "function",
    errorPolicy: resolveErrorPolicy(spec.errorPolicy, "errorPolicy").label,
    ...(spec.memory !== undefined ? { memory: spec.memory } : {}),
    boundAt: new Date().toISOString(),
  };
  return { binding, spec };
}

/** Reads a chunk view's chunker binding from the field metadata of `__child_index`. */
export function readChunkerBinding(metadata: Map<string, string> | undefined, view: string): ChunkerBinding {
  const raw = metadata?.get(CHUNKER_KEY);
  let b: Partial<ChunkerBinding> | undefined;
  try {
    b = raw === undefined ? undefined : (JSON.parse(raw) as Partial<ChunkerBinding>);
  } catch {
    b = undefined;
  }
  if (!b || b.kind !== "chunker" || typeof b.bundle !== "string" || typeof b.exportName !== "string" || typeof b.outputs !== "object" || !Array.isArray(b.inputs)) {
    throw new ConfigError("UDF_INVALID", `view ${view} has no readable chunker binding (${CHUNKER_KEY} on __child_index); rebind it with alterView(db, "${view}", { chunker })`, { table: view });
  }
  return b as ChunkerBinding;
}
