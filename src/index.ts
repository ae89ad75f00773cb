/**
 * Lancet: computed columns for LanceDB tables. Bind a column to a TypeScript UDF, then backfill it —
 * planned per fragment, checkpointed, committed every few fragments, resumable.
 */
export { addColumns, alterColumns, columnStatus } from "./columns.ts";
export type { ColumnBindingResult, ColumnStatus } from "./columns.ts";
export { backfill } from "./jobs/backfill.ts";
export type { BackfillResult, PlanSummary } from "./jobs/backfill.ts";
export type { BackfillOptions, BackfillProgress } from "./options.ts";
export { udf } from "./udf/udf.ts";
export type { UdfSpec, UdfContext } from "./udf/udf.ts";
export type { DataTypeLike } from "./udf/types.ts";
export type { Binding } from "./udf/binding.ts";
export type { TableRef } from "./table.ts";
export {
  BackfillError,
  ConfigError,
  UdfError,
  WorkerCrashedError,
  CheckpointError,
  CommitError,
  CancelledError,
  isBackfillError,
} from "./errors.ts";
export type { ErrorCode, ErrorContext, SerializedError } from "./errors.ts";
export { stderrLogger, silentLogger } from "./log.ts";
export type { Logger } from "./log.ts";
