/**
 * What a UDF module may import from "lancet". Bundling a UDF maps the `lancet` package to this file,
 * so a bound snapshot never drags the engine (or LanceDB's native module) into the bundle.
 */
export { udf } from "./udf.ts";
export type { UdfSpec, UdfContext } from "./udf.ts";
export type { DataTypeLike } from "./types.ts";
export type { BlobHandle } from "./blob.ts";
export type { ChunkerSpec, ChunkerContext } from "./chunker.ts";
export type { UdtfSpec } from "./udtf.ts";
import type { ChunkerSpec } from "./chunker.ts";
import type { UdtfSpec } from "./udtf.ts";

/** Declares a chunker with type checking; returns its argument unchanged (defined here, not imported, so a bundle stays small). */
export function chunker<S = unknown>(spec: ChunkerSpec<S>): ChunkerSpec<S> {
  return spec;
}

/** Declares a batch UDTF with type checking; returns its argument unchanged. */
export function udtf<S = unknown>(spec: UdtfSpec<S>): UdtfSpec<S> {
  return spec;
}
