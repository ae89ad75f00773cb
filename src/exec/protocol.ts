/**
 * Messages between the coordinator side of an executor and a worker process. Every executor (the
 * local pool now, a queue later) starts the same worker entry and speaks this protocol.
 */
import type { BatchRange } from "../checkpoint/store.ts";
import type { SerializedError } from "../errors.ts";
import type { ErrorPolicy } from "../udf/policy.ts";

/** Everything a worker needs to compute one column of one table. */
export interface WorkerConfig {
  readonly bundlePath: string;
  readonly exportName: string;
  /** Human label of the UDF, e.g. "/path/udfs.ts#wordCount". */
  readonly label: string;
  readonly dbDir: string;
  readonly table: string;
  readonly column: string;
  readonly dataType: string;
  readonly inputs: readonly string[];
  readonly checkpointRoot: string;
  readonly intraApplierConcurrency: number;
  /** Overrides the UDF's own error policy (from the backfill's `errorPolicy` option). */
  readonly errorPolicy?: ErrorPolicy;
  /** The table version whose binding of `column` names `bundlePath` (the job's pinned version); the worker process checks it before importing. @default the latest */
  readonly bindingVersion?: number;
  /** Set when the worker expands parents with a chunker into a chunk view (`table`; `column` is `__child_index`, which carries the binding) instead of computing a column. */
  readonly chunker?: ChunkerTaskConfig;
  /** Set when the worker computes partitions of a UDTF view (`table`; `column` is `__partition`, which carries the binding) into its staging table. */
  readonly udtf?: UdtfTaskConfig;
}

/** What a worker needs to compute UDTF partitions. */
export interface UdtfTaskConfig {
  readonly source: string;
  /** The view's filter on the source. */
  readonly where: string | null;
  readonly outputs: Readonly<Record<string, string>>;
  /** The staging table (in the LanceDB database `stageDir`) the partitions' rows go to, with their `__partition`. */
  readonly stageDir: string;
  readonly stageTable: string;
  /** Output rows buffered before they are appended to the staging table. */
  readonly maxRowsPerFragment: number;
}

/** What a worker needs to expand parents into a chunk view. */
export interface ChunkerTaskConfig {
  /** The source table (same database). */
  readonly source: string;
  /** Source columns inherited into every child. */
  readonly select: readonly string[];
  /** Source columns whose values make a parent's input hash, in order. */
  readonly hashColumns: readonly string[];
  /** Output column → canonical type. */
  readonly outputs: Readonly<Record<string, string>>;
  /** Children buffered before they are appended to the view. */
  readonly maxRowsPerFragment: number;
}

/** One task: gaps of one fragment's range to compute and checkpoint. */
export interface TaskSpec {
  readonly taskId: string;
  readonly fragmentId: number;
  /** Table version to read (the plan's pinned version). */
  readonly version: number;
  readonly globalOffset: number;
  readonly gaps: readonly BatchRange[];
  /** `""` = every row; else a SQL predicate selecting the rows to compute. */
  readonly selection: string;
  readonly batchKey: string;
  readonly checkpointSize: number;
  readonly maxCheckpointSize: number;
  /** A chunker task: the source row ids (ascending) of the parents to expand; `gaps` index into it and `version` is the source version. */
  readonly parents?: readonly number[];
  /** Write the fragment's column file (see `checkpoint/fragment-file.ts`) instead of batch checkpoints: the table's data storage version and the fragment's rows. The task's one gap ends at `rows`. */
  readonly file?: { readonly formatVersion: string; readonly rows: number };
  /** A UDTF task: the partition to compute (`key`: its value as JSON; `filter`: the SQL predicate selecting its rows, null for the whole source). */
  readonly partition?: { readonly key: string; readonly filter: string | null };
}

/** A row the UDF failed on and the error policy skipped (its value is null). */
export interface RowError {
  /** Offset in the fragment (live rows). */
  readonly rowOffset: number;
  /** The row's address (fragment << 32 | physical offset), as a decimal string. */
  readonly rowAddress: string;
  readonly name: string;
  readonly message: string;
  readonly stack: string;
  readonly attempt: number;
  /** How many times the batch was halved to isolate the row (batched UDFs). */
  readonly bisectDepth: number;
}

/** What a worker reports for each checkpointed batch. */
export interface BatchReport {
  readonly start: number;
  readonly end: number;
  readonly rowsComputed: number;
  /** Rows whose value is null because the error policy skipped them. */
  readonly rowsSkipped: number;
  /** The skipped rows' errors: one per skipped row. */
  readonly errors: readonly RowError[];
  readonly readMs: number;
  readonly udfMs: number;
  /** CPU time of the worker process while the UDF ran (user + system). */
  readonly udfCpuMs: number;
  /** Whether a call of the UDF returned a promise in this batch (an async UDF): the diagnosis's advice depends on it. */
  readonly udfAsync?: boolean;
  readonly checkpointMs: number;
  /** A chunker task: the parents this batch finished (their children are in the view), with their input hash (decimal) and child count. */
  readonly parents?: readonly ExpandedParent[];
  /** A UDTF task: the partition staged, with its row count. */
  readonly partition?: { readonly key: string; readonly rows: number };
}

/** A parent a chunker task expanded. */
export interface ExpandedParent {
  readonly id: number;
  readonly hash: string;
  readonly children: number;
}

export type ToWorker =
  | { readonly type: "init"; readonly config: WorkerConfig }
  | { readonly type: "task"; readonly id: number; readonly task: TaskSpec }
  /** Finish the batch in flight, checkpoint it, and end the task early. */
  | { readonly type: "stop"; readonly id: number }
  | { readonly type: "shutdown" };

export type FromWorker =
  | { readonly type: "ready" }
  | { readonly type: "initFailed"; readonly error: SerializedError }
  | { readonly type: "batch"; readonly id: number; readonly report: BatchReport }
  | { readonly type: "taskDone"; readonly id: number }
  | { readonly type: "taskFailed"; readonly id: number; readonly error: SerializedError };

/** The executor interface: run tasks somewhere, stream batch reports, close. */
export interface Executor {
  /**
   * Runs a task; rejects with the task's error (a WorkerCrashedError when its process died). When
   * `signal` aborts, the worker finishes and checkpoints its current batch and the task resolves early.
   */
  runTask(task: TaskSpec, onBatch: (r: BatchReport) => void, signal?: AbortSignal): Promise<void>;
  /** Stops every worker; idempotent. */
  close(): Promise<void>;
}
