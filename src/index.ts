/**
 * Lancet: computed columns for LanceDB tables. Bind a column to a TypeScript UDF, then backfill it —
 * planned per fragment, checkpointed, committed every few fragments, resumable.
 */
import "../bin/node-version.mjs"; // first: fails fast, saying what to do, on a Node Lancet cannot run on
export { addColumns, alterColumns, columnStatus, internalColumns } from "./columns.ts";
export type { AlterColumnsOptions, ColumnBindingResult, ColumnStatus, InternalColumn } from "./columns.ts";
export { backfill, backfillAsync } from "./jobs/backfill.ts";
export { BackfillJob } from "./jobs/job.ts";
export { getJob, listJobs, cancelJob } from "./jobs/api.ts";
export { diagnose } from "./jobs/diagnose.ts";
export { refragment } from "./commit/refragment.ts";
export { createView, readView, listViews, alterView } from "./views/view.ts";
export type { ViewOptions, ViewDefinition, ViewWatermark, ViewInfo, AlterViewOptions } from "./views/view.ts";
export { chunker } from "./udf/chunker.ts";
export { udtf } from "./udf/udtf.ts";
export type { UdtfSpec } from "./udf/udtf.ts";
export type { ChunkerSpec, ChunkerContext } from "./udf/chunker.ts";
export { syncView } from "./views/sync.ts";
export type { SyncViewOptions, SyncViewResult } from "./views/sync.ts";
export { refreshView, refreshViewAsync } from "./views/refresh.ts";
export type { RefreshViewOptions, RefreshViewResult } from "./views/refresh.ts";
export { listErrors } from "./jobs/errors-table.ts";
export type { ErrorRecord } from "./jobs/errors-table.ts";
export type { ErrorPolicySpec, PolicyRule } from "./udf/policy.ts";
export type { RefragmentOptions, RefragmentProgress, RefragmentResult } from "./commit/refragment.ts";
export type { JobRecord, JobStatus, JobMetrics, JobEvent, JobHistory, Diagnosis, Stage, PlanSummary, RefreshSummary } from "./jobs/record.ts";
export type { BackfillOptions, BackfillProgress, QueueExecutorSpec } from "./options.ts";
export { LancetWorker } from "./exec/bullmq/worker.ts";
export type { LancetWorkerOptions } from "./exec/bullmq/worker.ts";
export type { Resources, StallSettings } from "./exec/bullmq/queue.ts";
export { udf } from "./udf/udf.ts";
export type { UdfSpec, UdfContext } from "./udf/udf.ts";
export type { DataTypeLike } from "./udf/types.ts";
export type { BlobHandle } from "./udf/blob.ts";
export type { Binding } from "./udf/binding.ts";
export type { TableRef } from "./table.ts";
export { useStorage } from "./storage/location.ts";
export type { StorageOptions } from "./storage/object-store.ts";
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
