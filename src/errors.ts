/**
 * Lancet's error taxonomy. Every error Lancet raises is a {@link BackfillError} with a stable string
 * `code`, a `retryable` flag and the ids of where it happened. Errors cross process boundaries as
 * plain objects ({@link serializeError}) and are rebuilt by `code` ({@link deserializeError}); branch
 * with {@link isBackfillError} rather than `instanceof`.
 */

/** Every code Lancet uses. */
export type ErrorCode =
  | "CONFIG_INVALID"
  | "TABLE_NOT_FOUND"
  | "DB_NOT_FOUND"
  | "COLUMN_NOT_FOUND"
  | "COLUMN_EXISTS"
  | "COLUMN_NOT_UDF"
  | "INPUT_COLUMN_NOT_FOUND"
  | "INPUT_COLUMN_TYPE"
  | "UDF_MODULE_NOT_FOUND"
  | "UDF_EXPORT_NOT_FOUND"
  | "UDF_INVALID"
  | "UDF_BUNDLE_FAILED"
  | "UDF_FAILED"
  | "UDF_OUTPUT_LENGTH"
  | "UDF_OUTPUT_TYPE"
  | "UDF_SETUP_FAILED"
  | "WORKER_CRASHED"
  | "WORKER_START_FAILED"
  | "CHECKPOINT_FAILED"
  | "COMMIT_FAILED"
  | "COMMIT_CONFLICT"
  | "WHERE_INVALID"
  | "TABLE_UNSUPPORTED"
  | "CANCELLED"
  | "JOB_ABANDONED"
  | "JOB_NOT_FOUND"
  | "TABLE_BUSY"
  | "TABLE_EXISTS"
  | "NO_WORKER"
  | "STORAGE_UNREACHABLE"
  /** An object-store request failed after its retries (503 SlowDown, resets, timeouts, a short read). */
  | "STORAGE_FAILED"
  | "QUEUE_UNAVAILABLE"
  | "INTERNAL";

/** Where an error happened; every field optional. */
export interface ErrorContext {
  jobId?: string;
  table?: string;
  column?: string;
  fragmentId?: number;
  /** First row (offset inside the fragment, live rows) of the range concerned. */
  rowOffset?: number;
  /** Number of rows in the range concerned. */
  rowCount?: number;
}

export interface BackfillErrorOptions extends ErrorContext {
  retryable?: boolean;
  cause?: unknown;
}

/** Base class of every error Lancet raises. */
export class BackfillError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly context: ErrorContext;

  constructor(code: ErrorCode, message: string, options: BackfillErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "BackfillError";
    this.code = code;
    this.retryable = options.retryable ?? false;
    const { retryable: _r, cause: _c, ...context } = options;
    this.context = context;
  }
}

/** Invalid options, arguments or references; never retryable. */
export class ConfigError extends BackfillError {
  constructor(code: ErrorCode, message: string, options: BackfillErrorOptions = {}) {
    super(code, message, options);
    this.name = "ConfigError";
  }
}

/** The user function failed or returned something unusable. */
export class UdfError extends BackfillError {
  constructor(code: ErrorCode, message: string, options: BackfillErrorOptions = {}) {
    super(code, message, options);
    this.name = "UdfError";
  }
}

/** A worker process died while running a task. Retryable on a fresh process. */
export class WorkerCrashedError extends BackfillError {
  constructor(message: string, options: BackfillErrorOptions = {}) {
    super("WORKER_CRASHED", message, { retryable: true, ...options });
    this.name = "WorkerCrashedError";
  }
}

export class CheckpointError extends BackfillError {
  constructor(message: string, options: BackfillErrorOptions = {}) {
    super("CHECKPOINT_FAILED", message, options);
    this.name = "CheckpointError";
  }
}

export class CommitError extends BackfillError {
  constructor(code: "COMMIT_FAILED" | "COMMIT_CONFLICT", message: string, options: BackfillErrorOptions = {}) {
    super(code, message, options);
    this.name = "CommitError";
  }
}

export class CancelledError extends BackfillError {
  constructor(message = "backfill was cancelled", options: BackfillErrorOptions = {}) {
    super("CANCELLED", message, options);
    this.name = "CancelledError";
  }
}

/** True when `e` is a Lancet error (optionally with the given code), across realms and copies. */
export function isBackfillError(e: unknown, code?: ErrorCode): e is BackfillError {
  if (typeof e !== "object" || e === null) return false;
  const c = (e as { code?: unknown }).code;
  if (typeof c !== "string" || !("context" in e)) return false;
  return code === undefined || c === code;
}

/** An error as a plain, structured-clone- and JSON-safe object. */
export interface SerializedError {
  name: string;
  message: string;
  code?: ErrorCode;
  retryable?: boolean;
  context?: ErrorContext;
  stack?: string;
}

export function serializeError(e: unknown): SerializedError {
  if (isBackfillError(e)) {
    const out: SerializedError = { name: e.name, message: e.message, code: e.code, retryable: e.retryable, context: e.context };
    if (e.stack !== undefined) out.stack = e.stack;
    return out;
  }
  if (e instanceof Error) {
    const out: SerializedError = { name: e.name, message: e.message };
    if (e.stack !== undefined) out.stack = e.stack;
    return out;
  }
  return { name: "Error", message: String(e) };
}

/** Rebuilds an error from {@link serializeError}'s output; unknown shapes become UDF_FAILED errors. */
export function deserializeError(s: SerializedError): BackfillError {
  const opts: BackfillErrorOptions = { ...(s.context ?? {}), retryable: s.retryable ?? false };
  let e: BackfillError;
  switch (s.code) {
    case undefined:
      e = new UdfError("UDF_FAILED", `${s.name}: ${s.message}`, opts);
      break;
    case "WORKER_CRASHED":
      e = new WorkerCrashedError(s.message, opts);
      break;
    case "CHECKPOINT_FAILED":
      e = new CheckpointError(s.message, opts);
      break;
    case "CANCELLED":
      e = new CancelledError(s.message, opts);
      break;
    default:
      e = new BackfillError(s.code, s.message, opts);
      e.name = s.name;
  }
  if (s.stack !== undefined) e.stack = s.stack;
  return e;
}

/** Formats "table t, column c, fragment 3, rows 0-99" from whatever context is known. */
export function describeWhere(ctx: ErrorContext): string {
  const parts: string[] = [];
  if (ctx.table !== undefined) parts.push(`table ${ctx.table}`);
  if (ctx.column !== undefined) parts.push(`column ${ctx.column}`);
  if (ctx.fragmentId !== undefined) parts.push(`fragment ${ctx.fragmentId}`);
  if (ctx.rowOffset !== undefined) {
    parts.push(ctx.rowCount === undefined ? `row ${ctx.rowOffset}` : `rows ${ctx.rowOffset}-${ctx.rowOffset + ctx.rowCount - 1}`);
  }
  return parts.join(", ");
}
