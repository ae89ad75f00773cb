/**
 * How a user declares a UDF: one plain object. A UDF module needs no import; the typed {@link udf}
 * helper only adds type checking and returns the same object.
 *
 * ```ts
 * export const doubled = { inputs: ["x"], dataType: "float64", fn: (x: number) => x * 2 };
 * export const embed = udf({
 *   inputs: ["text"], dataType: "fixed_size_list<float32>[384]", batch: true,
 *   setup: async () => loadModel(),
 *   fn: (texts, { state }) => state.embed(texts),
 * });
 * ```
 */
import { ConfigError } from "../errors.ts";
import type { DataTypeLike } from "./types.ts";
import { resolveErrorPolicy, type ErrorPolicySpec } from "./policy.ts";

/** What every call of a UDF gets as its last argument. */
export interface UdfContext<S = unknown> {
  /** The value `setup()` resolved to in this worker process (undefined without `setup`). */
  readonly state: S;
  /** Fragment whose rows are being computed. */
  readonly fragmentId: number;
  /** Aborted when the job is cancelled or the worker shuts down. */
  readonly signal: AbortSignal;
}

/** A UDF declaration. */
export interface UdfSpec<S = unknown> {
  /** Input column names, passed to `fn` in this order. */
  readonly inputs: readonly string[];
  /** Output type: an apache-arrow DataType or a type string such as `"float64"` or `"list<float32>"`. */
  readonly dataType: DataTypeLike;
  /**
   * The function. Scalar (default): called once per row with one JS value per input, then the
   * context; returns a value or a promise of one. With `batch: true`: called once per batch with one
   * Arrow vector per input, then the context; returns an Arrow vector or an array of the same length.
   */
  fn(...args: never[]): unknown;
  /** Vectorised UDF: Arrow columns in, a column out. @default false */
  readonly batch?: boolean;
  /** Runs once per worker process before the first call; its result is `ctx.state`. */
  readonly setup?: () => S | Promise<S>;
  /** Explicit version; a change makes the next backfill recompute every row. @default content hash of the bundled module */
  readonly version?: string;
  /** What to do when `fn` throws: "fail", "skip", { retry: N }, or a list of matchers (see policy.ts). @default "fail" */
  readonly errorPolicy?: ErrorPolicySpec;
  /** Per-call time limit for calls that return a promise (async scalar UDFs, async batches); a timeout is a `TimeoutError` for the error policy. */
  readonly timeoutMs?: number;
  /** Memory each worker process may use, in bytes: sets the worker's JavaScript heap limit. */
  readonly memory?: number;
  /** GPUs one worker slot needs: in distributed mode the UDF's tasks go only to workers that advertise a GPU (`lancet worker --resources gpu=1`). @default 0 */
  readonly numGpus?: number;
  /** CPUs one worker slot needs; distributed mode checks that a live worker advertises at least this many. @default unset */
  readonly numCpus?: number;
  /** Types the inputs must have, e.g. `{ text: "utf8" }`; checked when binding and before every backfill. */
  readonly inputTypes?: Readonly<Record<string, string>>;
}

/**
 * A UDF that is a SQL expression over the row's columns, e.g. `{ sql: "x * 2" }`. It is bound as a
 * LanceDB native computed column and filled by LanceDB's own refresh (native speed), inside the same
 * job model as other backfills.
 */
export interface SqlUdfSpec {
  readonly sql: string;
}

export function isSqlUdf(v: unknown): v is SqlUdfSpec {
  return typeof v === "object" && v !== null && typeof (v as { sql?: unknown }).sql === "string";
}

/** Declares a UDF with type checking; returns its argument unchanged. */
export function udf<S = unknown>(spec: UdfSpec<S>): UdfSpec<S> {
  return spec;
}

/** Checks that `value` (a module export) is a usable UDF declaration. */
export function validateUdfSpec(value: unknown, where: string): UdfSpec {
  const fail = (what: string): never => {
    throw new ConfigError("UDF_INVALID", `${where} is not a valid UDF: ${what}; export an object like { inputs: ["x"], dataType: "float64", fn: (x) => x * 2 }`);
  };
  if (typeof value !== "object" || value === null) fail(`expected an object, got ${value === null ? "null" : typeof value}`);
  const v = value as Record<string, unknown>;
  if (!Array.isArray(v.inputs) || v.inputs.length === 0 || !v.inputs.every((x) => typeof x === "string" && x.length > 0)) {
    fail("inputs must be a non-empty array of column names");
  }
  if (new Set(v.inputs as string[]).size !== (v.inputs as string[]).length) fail("inputs must not repeat a column");
  if (typeof v.dataType !== "string" && (typeof v.dataType !== "object" || v.dataType === null || typeof (v.dataType as { typeId?: unknown }).typeId !== "number")) {
    fail("dataType must be a type string or an apache-arrow DataType");
  }
  if (typeof v.fn !== "function") fail("fn must be a function");
  if (v.batch !== undefined && typeof v.batch !== "boolean") fail("batch must be a boolean");
  if (v.setup !== undefined && typeof v.setup !== "function") fail("setup must be a function");
  if (v.version !== undefined && (typeof v.version !== "string" || v.version.length === 0)) fail("version must be a non-empty string");
  if (v.timeoutMs !== undefined && (typeof v.timeoutMs !== "number" || !Number.isInteger(v.timeoutMs) || v.timeoutMs < 1)) fail(`timeoutMs must be a positive integer (got ${JSON.stringify(v.timeoutMs)})`);
  if (v.memory !== undefined && (typeof v.memory !== "number" || !Number.isInteger(v.memory) || v.memory < 64 * 2 ** 20)) fail(`memory must be a number of bytes, at least 64 MiB (got ${JSON.stringify(v.memory)})`);
  for (const k of ["numGpus", "numCpus"] as const) {
    const n = v[k];
    if (n !== undefined && (typeof n !== "number" || !Number.isFinite(n) || n < 0)) fail(`${k} must be a number >= 0 (got ${JSON.stringify(n)})`);
  }
  resolveErrorPolicy(v.errorPolicy, `${where}: errorPolicy`);
  if (v.inputTypes !== undefined) {
    if (typeof v.inputTypes !== "object" || v.inputTypes === null || Array.isArray(v.inputTypes)) fail("inputTypes must map input column names to type strings");
    for (const [k, t] of Object.entries(v.inputTypes as Record<string, unknown>)) {
      if (!(v.inputs as string[]).includes(k)) fail(`inputTypes names ${k}, which is not one of its inputs`);
      if (typeof t !== "string") fail(`inputTypes.${k} must be a type string`);
    }
  }
  return value as UdfSpec;
}
