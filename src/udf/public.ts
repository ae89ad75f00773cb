/**
 * What a UDF module may import from "lancet". Bundling a UDF maps the `lancet` package to this file,
 * so a bound snapshot never drags the engine (or LanceDB's native module) into the bundle.
 */
export { udf } from "./udf.ts";
export type { UdfSpec, UdfContext } from "./udf.ts";
export type { DataTypeLike } from "./types.ts";
export type { BlobHandle } from "./blob.ts";
