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
import { importBundle } from "./bundle.ts";
import type { ErrorPolicySpec } from "./policy.ts";
import { bindTableFn, readTableFnBinding, validateTableFn, type TableFnBinding } from "./table-fn.ts";
import type { DataTypeLike } from "./types.ts";
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
  const v = validateTableFn(value, "udtf", where, fail);
  if (v.partitionBy !== undefined && (typeof v.partitionBy !== "string" || v.partitionBy.length === 0)) fail("partitionBy must be a column name");
  return value as UdtfSpec;
}

/** A UDTF view's binding: a {@link Binding} of kind `udtf` with its outputs and partition column. */
export interface UdtfBinding extends TableFnBinding {
  readonly kind: "udtf";
  readonly partitionBy: string | null;
}

export async function loadUdtf(file: string, exportName: string, label: string): Promise<UdtfSpec> {
  const mod = await importBundle(file, exportName, label);
  return validateUdtfSpec(mod[exportName], `export "${exportName}" of ${label}`);
}

/** Bundles and stores UDTF `ref` (MODULE#EXPORT) in view `t`'s store; returns its binding. */
export async function bindUdtf(t: ResolvedTable, ref: string): Promise<{ binding: UdtfBinding; spec: UdtfSpec }> {
  const { binding, spec } = await bindTableFn(t, ref, "udtf", loadUdtf);
  return { binding: { ...binding, kind: "udtf", partitionBy: spec.partitionBy ?? null }, spec };
}

/** Reads a UDTF view's binding from the field metadata of `__partition`. */
export function readUdtfBinding(metadata: Map<string, string> | undefined, view: string): UdtfBinding {
  const b = readTableFnBinding(metadata, UDTF_KEY, "udtf", view, "__partition") as UdtfBinding;
  return { ...b, partitionBy: b.partitionBy ?? null };
}
