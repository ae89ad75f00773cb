/**
 * A view's worker job: chunk views expand parents and UDTF views compute partitions as jobs of their
 * own (kind `chunk` / `udtf`) on the shared coordinator (`runJob`): one work item per "fragment", a
 * task each, dispatched to the executor the refresh uses, with retries of dead workers, events, the
 * errors table and cancellation (cancelling the refresh cancels it). What a finished group of items
 * means — parents recorded, partitions marked done — is the caller's `writeGroup`.
 */
import type { BatchReport, WorkerConfig } from "../exec/protocol.ts";
import { isBackfillError } from "../errors.ts";
import { coresFor, runJob, workerConfig, type GroupWriter } from "../jobs/coordinator.ts";
import { JobController } from "../jobs/job.ts";
import type { ColumnLock } from "../jobs/lock.ts";
import type { JobRecord } from "../jobs/record.ts";
import { JobsTable } from "../jobs/store.ts";
import type { Logger } from "../log.ts";
import type { ResolvedBackfillOptions } from "../options.ts";
import type { PlannedFragment, PlannedTask } from "../plan/plan.ts";
import { resolveTable } from "../table.ts";
import type { Binding } from "../udf/binding.ts";
import { connectDb } from "../storage/location.ts";

export interface ViewJobSpec {
  readonly jobId: string;
  readonly kind: "chunk" | "udtf";
  readonly dbDir: string;
  /** The view. */
  readonly table: string;
  /** The view column that carries the binding (`__child_index`, `__partition`). */
  readonly column: string;
  readonly binding: Binding;
  readonly config: WorkerConfig;
  /** One task per work item, `fragmentId` = the item's index. */
  readonly tasks: readonly PlannedTask[];
  /** The source version the tasks read. */
  readonly readVersion: number;
  readonly options: Record<string, unknown>;
  readonly opts: ResolvedBackfillOptions;
  readonly lock: ColumnLock;
  /** The refresh job: cancelling it cancels this one; this job's counters are added to it. */
  readonly refresh: JobController;
  readonly log: Logger;
  readonly events: { readonly started: string; readonly planned: string };
  readonly onBatch: (task: PlannedTask, report: BatchReport) => void;
  readonly writeGroup: GroupWriter;
}

/**
 * The worker configuration of a view's job: the bound bundle of `binding` in the view's store,
 * checked by the workers against `column`'s binding at the view's current version, and `task` — what
 * the workers do (expand parents, compute partitions).
 */
export async function viewWorkerConfig(dbDir: string, view: string, column: string, binding: Binding, opts: ResolvedBackfillOptions, task: Pick<WorkerConfig, "chunker" | "udtf">): Promise<WorkerConfig> {
  const version = await (await (await connectDb(dbDir, { readConsistencyInterval: 0 })).openTable(view)).version();
  return workerConfig(resolveTable({ db: dbDir, table: view }), column, binding, opts, version, task);
}

/** Runs a view's worker job to its end; rejects with its error (after recording it failed or cancelled). */
export async function runViewJob(s: ViewJobSpec): Promise<JobRecord> {
  const fragments: PlannedFragment[] = s.tasks.map((t) => ({ id: t.fragmentId, liveRows: t.end - t.start, globalOffset: 0, selection: "", batchKey: t.batchKey, covered: [], done: false, tasks: [t], rowsToCompute: t.end - t.start }));
  const ctl = new JobController({ id: s.jobId, kind: s.kind, table: s.table, column: s.column, options: s.options, statusIntervalMs: s.opts.statusIntervalMs, log: s.log });
  ctl.record.binding = s.binding;
  ctl.record.udfVersion = s.binding.version;
  ctl.attach(await JobsTable.open(s.dbDir), s.dbDir);
  const stop = (): void => ctl.requestCancel(`refresh ${s.refresh.record.id}`);
  s.refresh.signal.addEventListener("abort", stop);
  const memoryMb = s.opts.workerMemoryMb ?? (s.binding.memory !== undefined ? Math.ceil(s.binding.memory / 2 ** 20) : undefined);
  try {
    await runJob({
      ctl,
      log: s.log,
      lock: s.lock,
      noun: "refresh",
      dbDir: s.dbDir,
      table: s.table,
      column: s.column,
      udf: { label: s.config.label, version: s.binding.version },
      plan: { fragments, tasks: s.tasks, commitGranularity: s.opts.commitGranularity ?? Math.min(64, Math.max(1, Math.ceil(fragments.length / 20))) },
      dispatch: {
        executor: s.opts.executor,
        config: s.config,
        env: s.opts.env,
        taskTimeoutMs: s.opts.taskTimeoutMs,
        memoryMb,
        needs: memoryMb !== undefined ? { memory: memoryMb } : {},
        concurrency: s.opts.concurrency,
        concurrencyGiven: s.opts.concurrencyGiven,
        maxTaskAttempts: s.opts.maxTaskAttempts,
        readVersion: s.readVersion,
        checkpointSize: 1,
        maxCheckpointSize: 1,
      },
      writerConcurrency: 1,
      cores: coresFor(s.opts.executor, 0, s.opts.concurrency),
      udfTraits: { batch: s.binding.batch },
      events: s.events,
      setPhase: () => {},
      onBatch: s.onBatch,
      writeGroup: async (group, wctx) => {
        await s.writeGroup(group, wctx);
        ctl.metrics.fragmentsCommitted += group.length;
        ctl.metrics.commits++;
      },
    });
    return ctl.snapshot();
  } catch (e) {
    await ctl.finish(isBackfillError(e, "CANCELLED") ? "cancelled" : "failed", e);
    throw e;
  } finally {
    s.refresh.signal.removeEventListener("abort", stop);
    for (const [k, v] of Object.entries(ctl.metrics)) {
      // rowsComputed stays the refresh's count of UDF values: the rows a chunker or UDTF wrote are its rowsAdded.
      if (k === "elapsedMs" || k === "rowsPerSec" || k === "rowsComputed" || k === "rowsCheckpointed" || typeof v !== "number") continue;
      (s.refresh.metrics as unknown as Record<string, number>)[k] = ((s.refresh.metrics as unknown as Record<string, number>)[k] ?? 0) + v;
    }
  }
}
