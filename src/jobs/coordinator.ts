/**
 * The machinery every job kind shares, once a planner has said what to do. A job runs in stages:
 *
 * 1. **plan** — the job kind's planner (e.g. `backfill.ts`): fragments to write, cut into tasks;
 * 2. **dispatch** — {@link runJob} sends the tasks to an {@link Executor} built by `exec/factory.ts`,
 *    a few lanes at a time, retrying a task whose worker died, recording each batch's metrics and
 *    skipped rows;
 * 3. **write** — when a fragment's last task is done it is ready; groups of `commitGranularity` ready
 *    fragments go to the job kind's {@link GroupWriter}, at most `writerConcurrency` at once, each fenced
 *    by the lock, and a failing group is retried fragment by fragment so that healthy ones commit;
 * 4. **commit** — the writer assembles the group and hands it to its `Committer`;
 * 5. **job record** — events, metrics, diagnosis, cancellation and the final status, through the
 *    {@link JobController}; {@link startJob} takes the lock and attaches the record to the jobs table.
 */
import { availableParallelism } from "node:os";
import * as path from "node:path";
import { BackfillError, CancelledError, CommitError, ConfigError, isBackfillError } from "../errors.ts";
import { createExecutor, type ExecutorChoice, type Resources } from "../exec/factory.ts";
import type { BatchReport, Executor, TaskSpec, WorkerConfig } from "../exec/protocol.ts";
import { redactRedisUrl } from "../exec/redis-url.ts";
import type { Logger } from "../log.ts";
import type { BackfillProgress, ResolvedBackfillOptions } from "../options.ts";
import { bindingBundlePath, type Binding } from "../udf/binding.ts";
import { gapsOf, type PlannedFragment, type PlannedTask } from "../plan/plan.ts";
import type { ResolvedTable } from "../table.ts";
import { diagnose, type UdfTraits } from "./diagnose.ts";
import { ErrorsWriter, type ErrorRecord } from "./errors-table.ts";
import type { JobController } from "./job.ts";
import { ColumnLock, REFRAGMENT_LOCK } from "./lock.ts";
import { JobsTable } from "./store.ts";

/** How long the extra lanes of a job on the local pool wait before starting (see the dispatch stage). */
const LOCAL_LANE_DELAY_MS = 250;

/** What a {@link GroupWriter} gets from the coordinator. */
export interface WriterContext {
  /** Skipped rows' records; flush them before committing the rows they describe. */
  readonly errorsWriter: ErrorsWriter;
  /** Recomputes the diagnosis and reports progress (`force`: now, not at the next status interval). */
  readonly refresh: (force?: boolean) => void;
}

/**
 * Writes and commits a group of complete fragments, recording its metrics and events. Throwing fails
 * the group: the coordinator then writes its fragments one by one, and a single fragment that fails
 * is recorded in `failedFragments` while the others go on.
 */
export type GroupWriter = (group: PlannedFragment[], ctx: WriterContext) => Promise<void>;

/** Where the tasks run and how. */
export interface DispatchSpec {
  readonly executor: ExecutorChoice;
  readonly config: WorkerConfig;
  readonly env: Readonly<Record<string, string>>;
  readonly taskTimeoutMs: number;
  readonly memoryMb?: number | undefined;
  readonly needs: Resources;
  /** Tasks in flight at once. */
  readonly concurrency: number;
  /** Whether the caller set `concurrency` (the queue event says how it was chosen). */
  readonly concurrencyGiven: boolean;
  readonly maxTaskAttempts: number;
  /** The pinned table version the tasks read. */
  readonly readVersion: number;
  readonly checkpointSize: number;
  readonly maxCheckpointSize: number;
  /** An executor the job kind started already (the embedded pool, while it planned): used instead of creating one; closed unused when there is nothing to run. */
  readonly prestarted?: Promise<Executor>;
}

export interface JobSpec {
  readonly ctl: JobController;
  readonly log: Logger;
  /** The column's lock, held (see {@link startJob}): every group is fenced by it before it is written. */
  readonly lock: ColumnLock;
  /** What the job is, in messages that tell the user to run it again ("backfill"). */
  readonly noun: string;
  /** The database directory (the errors table lives there). */
  readonly dbDir: string;
  readonly table: string;
  readonly column: string;
  /** The UDF, as the errors table names it. */
  readonly udf: { readonly label: string; readonly version: string };
  readonly plan: { readonly fragments: readonly PlannedFragment[]; readonly tasks: readonly PlannedTask[]; readonly commitGranularity: number };
  readonly dispatch: DispatchSpec;
  /** `writerConcurrency` as the caller set it (the coordinator caps it at the number of fragments). */
  readonly writerConcurrency: number;
  /** What the diagnosis knows of the machine: the live workers' slots in distributed mode. */
  readonly cores: number;
  readonly udfTraits: UdfTraits;
  /** The first two events of the job. */
  readonly events: { readonly started: string; readonly planned: string };
  readonly setPhase: (p: BackfillProgress["phase"]) => void;
  readonly writeGroup: GroupWriter;
  /** Sees every batch report (a chunker's reports name the parents it finished). */
  readonly onBatch?: (task: PlannedTask, report: BatchReport) => void;
  /** After every planned fragment is committed, before the job is recorded finished. */
  readonly afterSuccess?: () => Promise<void>;
}

/**
 * Runs a planned job to its end: dispatch, writers, commits, and its final record. Resolves when the
 * job finished; rejects with its error (CANCELLED when cancelled, COMMIT_FAILED when fragments could
 * not be committed). Complete fragments are committed even when the job fails or is cancelled.
 */
export async function runJob(spec: JobSpec): Promise<void> {
  const { ctl, log, lock, plan, table, column } = spec;
  const rec = ctl.record;
  const m = ctl.metrics;
  const d = spec.dispatch;
  ctl.event("started", spec.events.started);
  ctl.event("planned", spec.events.planned);
  spec.setPhase("running");
  ctl.setStatus("running");

  const writerConcurrency = Math.max(1, Math.min(spec.writerConcurrency, plan.commitGranularity > 0 ? plan.fragments.length || 1 : 1));
  const diagContext = { concurrency: d.concurrency, intraApplierConcurrency: d.config.intraApplierConcurrency, writerConcurrency: spec.writerConcurrency, cores: spec.cores, udf: spec.udfTraits };
  const refresh = (force = false): void => {
    rec.diagnosis = diagnose(m, diagContext);
    ctl.changed(force);
  };
  let failure: unknown;
  // One record per skipped row, streamed to the errors table; failing to record them fails the job.
  const errorsWriter = new ErrorsWriter(spec.dbDir, { jobId: rec.id, table, column, onFailure: (e) => (failure ??= e) });
  const writerContext: WriterContext = { errorsWriter, refresh };

  // ---- writers: each ready group of fragments is written and committed -------------------------
  const remaining = new Map<number, number>(plan.fragments.map((f) => [f.id, f.tasks.length]));
  const byId = new Map<number, PlannedFragment>(plan.fragments.map((f) => [f.id, f]));
  const ready: PlannedFragment[] = plan.fragments.filter((f) => f.tasks.length === 0);
  const writing = new Set<Promise<void>>();
  let writerWaiters: (() => void)[] = [];

  /**
   * Writes a group; when that fails, writes its fragments one by one, so a fragment another writer
   * changed since the plan (compacted, deleted, rewritten) fails alone and the healthy ones commit.
   */
  const writeGracefully = async (group: PlannedFragment[]): Promise<void> => {
    await lock.assertHeld(); // fencing: no commit once another job holds the column
    try {
      await spec.writeGroup(group, writerContext);
      return;
    } catch (e) {
      if (group.length === 1) {
        const reason = (e as Error).message;
        rec.failedFragments.push({ id: group[0]!.id, reason });
        m.fragmentsFailed++;
        ctl.event("commit-failed", `fragment ${group[0]!.id} could not be committed: ${reason}`);
        refresh(true);
        return;
      }
    }
    for (const f of group) await writeGracefully([f]);
  };

  /** Starts writers for ready groups, up to writerConcurrency at once; `force` also flushes a partial group. */
  const pumpWriters = (force: boolean): void => {
    while (ready.length > 0 && writing.size < writerConcurrency && (force || ready.length >= plan.commitGranularity)) {
      const group = ready.splice(0, plan.commitGranularity);
      const p: Promise<void> = writeGracefully(group)
        .catch((e: unknown) => {
          failure ??= e;
        })
        .finally(() => {
          writing.delete(p);
          for (const w of writerWaiters.splice(0)) w();
          pumpWriters(force);
        });
      writing.add(p);
    }
  };
  const drainWriters = async (): Promise<void> => {
    pumpWriters(true);
    while (writing.size > 0) {
      await new Promise<void>((r) => writerWaiters.push(r));
      pumpWriters(true);
    }
  };
  pumpWriters(false);

  // ---- dispatch: tasks go to the executor, a few lanes at a time ---------------------------------
  let executor: Executor | undefined;
  try {
    if (plan.tasks.length === 0) void d.prestarted?.then((x) => x.close(), () => {});
    if (plan.tasks.length > 0) {
      const inFlight = Math.min(d.concurrency, plan.tasks.length);
      const created = d.prestarted ? { executor: await d.prestarted, queueName: "" } : await createExecutor({
        choice: d.executor,
        config: d.config,
        size: inFlight,
        env: d.env,
        taskTimeoutMs: d.taskTimeoutMs,
        memoryMb: d.memoryMb,
        jobId: rec.id,
        needs: d.needs,
        supersedes: lock.previousJobId,
        onEvent: (kind, message) => {
          ctl.event(kind, message);
          log.warn(message); // the CLI prints warnings: a wait for workers is never silent
          refresh(true);
        },
      });
      executor = created.executor;
      if (d.executor !== "local") {
        ctl.event("queue", `tasks go to queue ${created.queueName} on ${redactRedisUrl(d.executor.redis)}, up to ${inFlight} in flight${d.concurrencyGiven ? "" : " (the live workers' slots, at least 8; set concurrency to change it)"}`);
      }
      const ex = executor;
      const queue: PlannedTask[] = [...plan.tasks];
      const runOne = async (task: PlannedTask): Promise<boolean> => {
        const doneRanges: { start: number; end: number }[] = [];
        for (let attempt = 1; ; attempt++) {
          const gaps = task.gaps.flatMap((g) => gapsOf(g.start, g.end, doneRanges));
          if (gaps.length === 0) return true;
          if (ctl.signal.aborted) return false;
          const taskSpec: TaskSpec = {
            taskId: task.id,
            fragmentId: task.fragmentId,
            version: d.readVersion,
            globalOffset: task.globalOffset,
            gaps,
            selection: task.selection,
            batchKey: task.batchKey,
            checkpointSize: d.checkpointSize,
            maxCheckpointSize: d.maxCheckpointSize,
            ...(task.parents ? { parents: task.parents } : {}),
            ...(task.partition ? { partition: task.partition } : {}),
            ...(task.file ? { file: task.file } : {}),
          };
          try {
            m.workersActive++;
            await ex.runTask(
              taskSpec,
              (r: BatchReport) => {
                doneRanges.push({ start: r.start, end: r.end });
                spec.onBatch?.(task, r);
                m.rowsProcessed += r.end - r.start;
                m.rowsComputed += r.rowsComputed;
                m.rowsCheckpointed += r.rowsComputed;
                if (r.rowsSkipped > 0) {
                  m.rowsSkipped += r.rowsSkipped;
                  const at = new Date().toISOString();
                  errorsWriter.add(r.errors.map((e): ErrorRecord => ({ jobId: rec.id, table, column, udf: spec.udf.label, udfVersion: spec.udf.version, fragment: task.fragmentId, rowAddress: e.rowAddress, rowOffset: e.rowOffset, name: e.name, message: e.message, stack: e.stack, attempt: e.attempt, bisectDepth: e.bisectDepth, at })));
                }
                m.udfMs += r.udfMs;
                m.udfCpuMs += r.udfCpuMs;
                // Async or not, as the UDF's calls show it (the advice for a waiting UDF depends on it).
                if (r.udfAsync !== undefined && diagContext.udf.async !== true) diagContext.udf = { ...diagContext.udf, async: r.udfAsync };
                m.readMs += r.readMs;
                m.checkpointMs += r.checkpointMs;
                refresh();
              },
              ctl.signal,
            );
          } catch (e) {
            if (isBackfillError(e, "WORKER_CRASHED") && attempt < d.maxTaskAttempts && !ctl.signal.aborted) {
              m.workerCrashes++;
              ctl.event("worker-died", `${(e as Error).message}; retrying on a fresh process (attempt ${attempt + 1} of ${d.maxTaskAttempts})`);
              refresh(true);
              continue;
            }
            if (isBackfillError(e, "WORKER_CRASHED")) {
              m.workerCrashes++;
              ctl.event("worker-died", (e as Error).message);
              throw new BackfillError("WORKER_CRASHED", `${(e as Error).message} (table ${table}, column ${column}); the task failed ${attempt} time(s), which is options.maxTaskAttempts`, { table, column, fragmentId: task.fragmentId, cause: e });
            }
            throw e;
          } finally {
            m.workersActive--;
          }
        }
      };
      const lane = async (): Promise<void> => {
        while (failure === undefined && !ctl.signal.aborted) {
          const task = queue.shift();
          if (!task) return;
          let complete: boolean;
          try {
            complete = await runOne(task);
            await errorsWriter.ready(); // backpressure: no new task while error records wait
          } catch (e) {
            failure ??= e;
            return;
          }
          if (!complete) continue; // stopped by a cancel: its fragment is not complete
          m.tasksDone++;
          const left = remaining.get(task.fragmentId)! - 1;
          remaining.set(task.fragmentId, left);
          if (left === 0) {
            ready.push(byId.get(task.fragmentId)!);
            pumpWriters(false);
          }
          refresh();
        }
      };
      // A local worker costs a process start (~0.2 s of a core). The first lane starts at once; the
      // others only if tasks are still queued a moment later, so a job the first worker finishes
      // quickly (a small incremental refresh) does not start processes it has no use for. Remote
      // workers are running already: every lane starts at once.
      let grow: () => void = () => {};
      const grown = new Promise<void>((r) => (grow = r));
      // A plan of many tasks for each lane is not a small job: every lane starts at once.
      const timer = setTimeout(grow, d.executor === "local" && plan.tasks.length <= 4 * inFlight ? LOCAL_LANE_DELAY_MS : 0);
      const later = async (): Promise<void> => {
        await grown;
        if (queue.length > 0) await lane();
      };
      try {
        await Promise.all(Array.from({ length: inFlight }, (_, i) => (i === 0 ? lane().finally(grow) : later())));
      } finally {
        clearTimeout(timer);
      }
    }
  } catch (e) {
    failure ??= e;
  } finally {
    await executor?.close();
  }

  // ---- commit what is complete — healthy fragments too when the job failed or was cancelled ------
  spec.setPhase("committing");
  await drainWriters();
  await errorsWriter.flush().catch((e: unknown) => (failure ??= e));

  // ---- job record ----------------------------------------------------------------------------------
  if (m.rowsSkipped > 0) ctl.event("skipped", `${m.rowsSkipped} row(s) were skipped by the error policy and left null; see \`lancet errors --job ${rec.id}\`; a re-run retries them`);
  refresh(true);
  if (failure !== undefined) {
    ctl.event("failed", `failed: ${(failure as Error).message}`);
    throw failure;
  }
  if (rec.failedFragments.length > 0) {
    const list = rec.failedFragments.map((f) => `fragment ${f.id}: ${f.reason}`).join("; ");
    const err = new CommitError("COMMIT_FAILED", `${rec.failedFragments.length} fragment(s) of table ${table} could not be committed (${m.fragmentsCommitted} were): ${list}. Run the ${spec.noun} again to fill them`, { table, column, jobId: rec.id });
    ctl.event("failed", `failed: ${err.message}`);
    throw err;
  }
  if (ctl.signal.aborted) {
    const unfinished = plan.fragments.length - m.fragmentsCommitted;
    ctl.event("cancelled", `cancelled: ${m.fragmentsCommitted} fragment(s) committed, ${unfinished} left for the next run (their checkpoints are kept)`);
    throw new CancelledError(`job ${rec.id} was cancelled: ${m.fragmentsCommitted} of ${plan.fragments.length} fragment(s) committed; run the ${spec.noun} again to finish (checkpointed batches are not recomputed)`, { jobId: rec.id, table, column });
  }
  await spec.afterSuccess?.();
  ctl.event("finished", `finished: ${m.rowsComputed} rows computed, ${m.rowsCommitted} committed in ${m.commits} commit(s)`);
  spec.setPhase("finished");
  await ctl.finish("finished");
}

/**
 * What a worker process needs to run `binding` for `column` of table `t`: its bundle in the table's
 * store (checked by the worker against the column's binding at `bindingVersion`), the job's options,
 * and, for a view's chunker or UDTF, the task kind.
 */
export function workerConfig(t: ResolvedTable, column: string, binding: Binding, opts: Pick<ResolvedBackfillOptions, "intraApplierConcurrency" | "errorPolicy">, bindingVersion: number, task: Pick<WorkerConfig, "chunker" | "udtf"> = {}): WorkerConfig {
  return {
    bundlePath: bindingBundlePath(t, binding),
    exportName: binding.exportName,
    label: `${binding.module}#${binding.exportName}`,
    dbDir: t.dbDir,
    table: t.name,
    column,
    dataType: binding.dataType,
    inputs: binding.inputs,
    checkpointRoot: path.join(t.storeDir, "ckp"),
    intraApplierConcurrency: opts.intraApplierConcurrency,
    ...(opts.errorPolicy ? { errorPolicy: opts.errorPolicy } : {}),
    bindingVersion,
    ...task,
  };
}

/** The diagnosis's idea of the cores that run the workers: this machine's, or the live workers' slots. */
export function coresFor(executor: ExecutorChoice, clusterSlots: number, concurrency: number): number {
  return executor === "local" ? availableParallelism() : clusterSlots || concurrency;
}

/** Takes the column's lock and starts recording the job in the jobs table. */
export async function startJob(t: ResolvedTable, column: string, ctl: JobController, opened?: JobsTable): Promise<{ jobs: JobsTable; lock: ColumnLock }> {
  const jobs = opened ?? (await JobsTable.open(t.dbDir));
  const lock = await ColumnLock.acquire(t.storeDir, t.name, column, ctl.record.id, jobs);
  // A refragment rewrites every fragment: never at the same time (it checks column locks after taking its own).
  const refragmenting = await ColumnLock.holder(t.storeDir, REFRAGMENT_LOCK, undefined).catch(async (e: unknown) => {
    await lock.release();
    throw e;
  });
  if (refragmenting) {
    await lock.release();
    throw new ConfigError("TABLE_BUSY", `table ${t.name} is being refragmented (pid ${refragmenting.pid} on ${refragmenting.host}, since ${refragmenting.since}); run the backfill when it has finished`, { table: t.name, column });
  }
  ctl.attach(jobs, t.dbDir);
  return { jobs, lock };
}
