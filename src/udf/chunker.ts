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
import { importBundle } from "./bundle.ts";
import type { ErrorPolicySpec } from "./policy.ts";
import { bindTableFn, readTableFnBinding, validateTableFn, type TableFnBinding } from "./table-fn.ts";
import type { DataTypeLike } from "./types.ts";
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

/** Checks that `value` (a module export) is a usable chunker declaration. */
export function validateChunkerSpec(value: unknown, where: string): ChunkerSpec {
  const fail = (what: string): never => {
    throw new ConfigError("UDF_INVALID", `${where} is not a valid chunker: ${what}; export an object like { kind: "chunker", inputs: ["text"], outputs: { passage: "utf8" }, *fn(text) { yield { passage: text } } }`);
  };
  const v = validateTableFn(value, "chunker", where, fail);
  if (v.batch !== undefined && typeof v.batch !== "boolean") fail("batch must be a boolean");
  return value as ChunkerSpec;
}

/** A chunk view's chunker binding: a {@link Binding} of kind `chunker` with its outputs' canonical types. */
export interface ChunkerBinding extends TableFnBinding {
  readonly kind: "chunker";
}

/** Imports a stored bundle and returns the named export as a validated chunker. */
export async function loadChunker(file: string, exportName: string, label: string): Promise<ChunkerSpec> {
  const mod = await importBundle(file, exportName, label);
  return validateChunkerSpec(mod[exportName], `export "${exportName}" of ${label}`);
}

/** Bundles and stores the chunker `ref` (MODULE#EXPORT) in view `t`'s store; returns its binding. */
export async function bindChunker(t: ResolvedTable, ref: string): Promise<{ binding: ChunkerBinding; spec: ChunkerSpec }> {
  return (await bindTableFn(t, ref, "chunker", loadChunker)) as { binding: ChunkerBinding; spec: ChunkerSpec };
}

/** Reads a chunk view's chunker binding from the field metadata of `__child_index`. */
export function readChunkerBinding(metadata: Map<string, string> | undefined, view: string): ChunkerBinding {
  return readTableFnBinding(metadata, CHUNKER_KEY, "chunker", view, "__child_index") as ChunkerBinding;
}
