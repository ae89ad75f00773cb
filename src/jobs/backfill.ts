/**
 * The coordinator of a backfill: check the binding, pin a version, plan, dispatch tasks to the
 * executor, have each finished fragment's writer assemble it from its checkpoints and commit it, every
 * `commitGranularity` fragments. Everything a run computes is checkpointed before it is committed, so
 * a killed run loses at most its in-flight batches. The job is tracked by a {@link JobController}:
 * a record in the jobs table, progress, events, cancellation.
 */
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { availableParallelism } from "node:os";
import * as path from "node:path";
import { batchKey, deletionIdentity, inputIdentity, markerName, markerNamespace, type DoneMarker } from "../checkpoint/keys.ts";
import { FileCheckpointStore } from "../checkpoint/store.ts";
import { sweepBatches } from "../checkpoint/sweep.ts";
import { checkInputs, RESERVED_COLUMNS, withoutReservedColumns } from "../columns.ts";
import type { Committer, FragmentSource } from "../commit/committer.ts";
import { createCommitter } from "../commit/auto.ts";
import { failpoint } from "../failpoints.ts";
import { assembleFragment } from "../commit/writer.ts";
import { BackfillError, CancelledError, CommitError, ConfigError, isBackfillError } from "../errors.ts";
import { LocalPool } from "../exec/pool.ts";
import { liveSlots, QueueExecutor, stopQueuedJob } from "../exec/bullmq/executor.ts";
import { redactRedisUrl, type Resources } from "../exec/bullmq/queue.ts";
import type { BatchReport, Executor, TaskSpec, WorkerConfig } from "../exec/protocol.ts";
import { silentLogger } from "../log.ts";
import { resolveBackfillOptions, type BackfillOptions, type BackfillProgress, type ResolvedBackfillOptions } from "../options.ts";
import { gapsOf, planBackfill, selectionFilter, type PlanFragmentInput, type PlannedFragment, type PlannedTask } from "../plan/plan.ts";
import { fieldIdsOf, readManifest } from "../read/manifest.ts";
import { openLanceTable, resolveTable, type ResolvedTable, type TableRef } from "../table.ts";
import { bindingBundlePath, readBinding, type Binding } from "../udf/binding.ts";
import { formatDataType } from "../udf/types.ts";
import { diagnose, type UdfTraits } from "./diagnose.ts";
import { BackfillJob, JobController } from "./job.ts";
import type { JobRecord, PlanSummary } from "./record.ts";
import { JobsTable } from "./store.ts";
import { ColumnLock, mayBeAlive, REFRAGMENT_LOCK } from "./lock.ts";
import { ErrorsWriter, type ErrorRecord } from "./errors-table.ts";

async function checkColumn(t: ResolvedTable, column: string, where: string | undefined) {
  if (typeof column !== "string" || column.length === 0) throw new ConfigError("CONFIG_INVALID", `column must be a column name (got ${JSON.stringify(column)})`);
  const { table } = await openLanceTable(t);
  const schema = await table.schema();
  const field = schema.fields.find((f) => f.name === column);
  const userCols = schema.fields.map((f) => f.name).filter((n) => !RESERVED_COLUMNS.has(n));
  if (!field) throw new ConfigError("COLUMN_NOT_FOUND", `table ${t.name} has no column ${column}; its columns are ${userCols.join(", ")}. Add it with add-column`, { table: t.name, column });
  const binding = readBinding(field.metadata, t.name, column);
  if (!binding) {
    throw new ConfigError("COLUMN_NOT_UDF", `column ${column} of table ${t.name} is a data column, not bound to a UDF, so there is nothing to backfill; add a UDF column with add-column (alter-column --force would bind a UDF to ${column} and overwrite its values)`, { table: t.name, column });
  }
  checkInputs(t, column, binding, schema);
  const have = formatDataType(field.type);
  if (have !== binding.dataType) {
    throw new ConfigError("UDF_OUTPUT_TYPE", `column ${column} of table ${t.name} is ${have} but its UDF returns ${binding.dataType}; rebind it with alter-column`, { table: t.name, column });
  }
  if (binding.kind !== "sql" && !existsSync(bindingBundlePath(t, binding))) {
    throw new ConfigError("UDF_MODULE_NOT_FOUND", `the bound UDF snapshot of column ${column} (${bindingBundlePath(t, binding)}) is missing; rebind it with alter-column`, { table: t.name, column });
  }
  if (where !== undefined) {
    try {
      await table.query().where(where).select(["_rowaddr"]).limit(1).toArray();
    } catch (e) {
      throw new ConfigError("WHERE_INVALID", `options.where ${JSON.stringify(where)} is not a valid filter on table ${t.name}: ${withoutReservedColumns((e as Error).message.split("\n")[0]!)}`, { table: t.name, column, cause: e });
    }
  }
  return { table, binding };
}

function serializableOptions(o: ResolvedBackfillOptions): Record<string, unknown> {
  const { onProgress: _p, logger: _l, env, ...rest } = o;
  // Environment values may be secrets (API keys): the record keeps their names only.
  const out: Record<string, unknown> = Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== undefined));
  if (Object.keys(env).length > 0) out.env = Object.keys(env);
  // Nor does it keep a Redis password.
  if (rest.executor !== "local") out.executor = { ...rest.executor, redis: redactRedisUrl(rest.executor.redis) };
  return out;
}

function toProgress(r: JobRecord, phase: BackfillProgress["phase"]): BackfillProgress {
  return { ...r.metrics, phase, status: r.status, diagnosis: r.diagnosis };
}

/**
 * Starts a backfill of `column` and returns its handle at once (status `pending`, then `running`).
 * Invalid options throw here; every other problem is reported by `wait()` and the job record.
 */
export function backfillAsync(ref: TableRef, column: string, options: BackfillOptions = {}): BackfillJob {
  const opts = resolveBackfillOptions(options);
  const log = (opts.logger ?? silentLogger).child({ table: ref?.table, column });
  const ctl = new JobController({ id: randomUUID(), table: String(ref?.table), column, options: serializableOptions(opts), statusIntervalMs: opts.statusIntervalMs, log });
  let phase: BackfillProgress["phase"] = "planning";
  if (opts.onProgress) {
    const cb = opts.onProgress;
    ctl.onChange = (r) => cb(toProgress(r, FINAL_PHASE[r.status] ?? phase));
  }
  const setPhase = (p: BackfillProgress["phase"]): void => {
    phase = p;
  };
  setImmediate(() => {
    runBackfill(ref, column, opts, ctl, setPhase).catch((e: unknown) => {
      const cancelled = isBackfillError(e, "CANCELLED");
      void ctl.finish(cancelled ? "cancelled" : "failed", e);
    });
  });
  return new BackfillJob(ctl);
}

const FINAL_PHASE: Partial<Record<JobRecord["status"], BackfillProgress["phase"]>> = { finished: "finished", failed: "failed", cancelled: "cancelled" };

/**
 * Computes `column` for the rows that need it and commits the values: {@link backfillAsync} + wait.
 * Resolves with the final job record; rejects with the job's error (a BackfillError; CANCELLED when
 * cancelled). Fragments completed before a failure are committed, and every checkpoint is kept.
 */
export async function backfill(ref: TableRef, column: string, options: BackfillOptions = {}): Promise<JobRecord> {
  return backfillAsync(ref, column, options).wait();
}

async function runBackfill(ref: TableRef, column: string, opts: ResolvedBackfillOptions, ctl: JobController, setPhase: (p: BackfillProgress["phase"]) => void): Promise<void> {
  const t = resolveTable(ref);
  const log = (opts.logger ?? silentLogger).child({ table: t.name, column, jobId: ctl.record.id });
  const { table, binding } = await checkColumn(t, column, opts.where);
  const rec = ctl.record;
  rec.binding = binding;
  rec.udfVersion = binding.version;
  const m = ctl.metrics;
  const readVersion = await table.version();
  if (binding.kind === "sql") return runSqlRefresh(t, table, column, binding, opts, ctl, setPhase, readVersion);

  const memoryMb = opts.workerMemoryMb ?? (binding.memory !== undefined ? Math.ceil(binding.memory / 2 ** 20) : undefined);
  const needs: Resources = { ...(binding.numGpus ? { gpu: binding.numGpus } : {}), ...(binding.numCpus !== undefined ? { cpu: binding.numCpus } : {}), ...(memoryMb !== undefined ? { memory: memoryMb } : {}) };
  let concurrency = opts.concurrency;
  /** Distributed: the live workers' task slots at the start (what "cores" means to the diagnosis). */
  let clusterSlots = 0;
  /** Opened early in distributed mode (to find a dead coordinator's job); reused by startJob. */
  let jobsTable: JobsTable | undefined;
  if (opts.executor !== "local") {
    // Fails fast, before planning, when Redis is not there; sizes the job to the live workers.
    const where = { table: t.name, column, jobId: rec.id };
    clusterSlots = await liveSlots(opts.executor.redis, opts.executor.queue, needs, where);
    // A dead coordinator's tasks may still run on the workers: stop them before planning, so the plan
    // sees everything they checkpoint.
    jobsTable = opts.planOnly ? undefined : await JobsTable.open(t.dbDir);
    const dead = jobsTable && (await ColumnLock.goneHolder(t.storeDir, column, jobsTable));
    if (dead !== undefined) await stopQueuedJob(opts.executor.redis, opts.executor.queue, needs, dead, where);
    if (!opts.concurrencyGiven) concurrency = Math.max(concurrency, clusterSlots);
  }

  // ---- plan -------------------------------------------------------------------------------
  const manifest = await readManifest(t.tableDir, readVersion);
  const inputIds = binding.inputs.flatMap((i) => fieldIdsOf(manifest, i));
  const outputIds = fieldIdsOf(manifest, column);
  const store = new FileCheckpointStore(path.join(t.storeDir, "ckp"));
  const ns = markerNamespace(column, opts.where);
  const markers = await store.listMarkers(ns);
  // A fragment whose marker records skipped rows is not done: the next run retries its null rows.
  const markerNames = new Set(markers.filter((x) => !((x.value as DoneMarker).rowsSkipped! > 0)).map((x) => x.name));
  const versionChanged = opts.where === undefined && markers.some((x) => (x.value as DoneMarker).udfVersion !== binding.version);
  const nullSelection = `\`${column}\` IS NULL`;
  const fragments: (PlanFragmentInput & { identity: string })[] = [];
  let offset = 0;
  for (const f of manifest.fragments) {
    const globalOffset = offset;
    offset += f.liveRows;
    if (f.liveRows === 0) continue;
    const identity = inputIdentity(f, inputIds);
    const done = markerNames.has(markerName(f.id, binding.version, identity, t.name));
    const hasValues = f.files.some((d) => d.fields.some((id) => outputIds.includes(id)));
    const selection = opts.where ?? (versionChanged || !hasValues ? "" : nullSelection);
    const key = batchKey({ table: t.name, column, udfVersion: binding.version, selection, fragmentId: f.id, inputIdentity: identity, deletionIdentity: deletionIdentity(f) });
    fragments.push({ id: f.id, liveRows: f.liveRows, globalOffset, selection, batchKey: key, covered: done ? [] : await store.listBatches(key), done, identity });
  }
  const plan = planBackfill({
    fragments,
    concurrency,
    intraApplierConcurrency: opts.intraApplierConcurrency,
    taskSize: opts.taskSize,
    commitGranularity: opts.commitGranularity,
    numFrags: opts.numFrags,
  });
  // A selection (the where, or IS NULL) may match far fewer rows than the planned ranges: count them.
  const selected = await countSelected(t, readVersion, plan.fragments);
  const selectionText = opts.where ?? (versionChanged ? "all rows (the UDF version changed)" : "rows not yet computed");
  const summary: PlanSummary = {
    readVersion,
    fragmentsTotal: fragments.length,
    fragmentsToWrite: plan.fragments.length,
    fragmentsDone: plan.fragmentsDone,
    fragmentsDeferred: plan.fragmentsDeferred,
    tasks: plan.tasks.length,
    rowsPlanned: selected.total,
    taskSize: plan.taskSize,
    commitGranularity: plan.commitGranularity,
    selection: opts.where !== undefined ? `${selectionText} (matches ${selected.total} of the ${plan.rowsPlanned} rows to scan)` : selectionText,
    fragments: plan.fragments.map((f) => ({ id: f.id, liveRows: f.liveRows, rowsToCompute: selected.byFragment.get(f.id) ?? f.rowsToCompute, tasks: f.tasks.length, selection: f.selection === "" ? "all" : f.selection })),
  };
  rec.plan = summary;
  m.fragmentsPlanned = plan.fragments.length;
  m.tasksTotal = plan.tasks.length;
  m.rowsPlanned = plan.rowsPlanned;
  if (opts.planOnly) {
    await ctl.finish("finished");
    return;
  }

  // ---- run --------------------------------------------------------------------------------
  const { jobs, lock } = await startJob(t, column, ctl, jobsTable);
  try {
    ctl.event("started", `backfill of ${t.name}.${column} started (UDF ${binding.exportName}, version ${binding.version}) at table version ${readVersion}`);
    ctl.event("planned", `plan: ${summary.fragmentsToWrite} fragment(s) to write, ${summary.fragmentsDone} already complete, ${summary.tasks} task(s), up to ${summary.rowsPlanned} rows; ${summary.selection}`);
    setPhase("running");
    ctl.setStatus("running");

    const writerConcurrency = Math.max(1, Math.min(opts.writerConcurrency, plan.commitGranularity > 0 ? plan.fragments.length || 1 : 1));
    const diagContext = { concurrency, intraApplierConcurrency: opts.intraApplierConcurrency, writerConcurrency: opts.writerConcurrency, cores: opts.executor === "local" ? availableParallelism() : clusterSlots || concurrency, udf: { batch: binding.batch } as UdfTraits };
    const refresh = (force = false): void => {
      rec.diagnosis = diagnose(m, diagContext);
      ctl.changed(force);
    };
    const committer: Committer = createCommitter(opts.commitMode, t, column, binding.dataType, {
      logger: log,
      // A job whose process on this host is gone is not running, whatever its record says yet.
      otherJobsRunning: async () => (await jobs.list({ table: t.name })).find((j) => j.id !== rec.id && (j.status === "running" || j.status === "pending") && mayBeAlive(j.pid, j.host))?.id,
      // Fencing right before each publication, not only before a group is assembled and staged.
      fence: () => lock.assertHeld(),
    });
    // One record per skipped row, streamed to the errors table; failing to record them fails the job.
    const errorsWriter = new ErrorsWriter(t.dbDir, { jobId: rec.id, table: t.name, column, onFailure: (e) => (failure ??= e) });
    const udfLabel = `${binding.module}#${binding.exportName}`;
    const identities = new Map(fragments.map((f) => [f.id, f.identity]));
    const remaining = new Map<number, number>(plan.fragments.map((f) => [f.id, f.tasks.length]));
    const byId = new Map<number, PlannedFragment>(plan.fragments.map((f) => [f.id, f]));
    const ready: PlannedFragment[] = plan.fragments.filter((f) => f.tasks.length === 0);
    let failure: unknown;
    const writing = new Set<Promise<void>>();
    let writerWaiters: (() => void)[] = [];

    const writeGroup = async (group: PlannedFragment[]): Promise<void> => {
      const w0 = performance.now();
      // Each fragment's writer assembles it from its checkpoints when the committer asks for it.
      let assembleMs = 0;
      const loaded = new Map<number, { rows: number; skipped: number }>();
      const sources: FragmentSource[] = group.map((f) => ({
        fragmentId: f.id,
        load: async () => {
          const a0 = performance.now();
          const v = await assembleFragment(store, f, binding.dataType, { table: t.name, column });
          assembleMs += performance.now() - a0;
          loaded.set(f.id, { rows: v.rowAddrs.length, skipped: v.rowsSkipped });
          return v;
        },
      }));
      // The skipped rows' records are written before their fragments commit: a crash between the two
      // can then lose no record of a committed row (the done marker would hide the rows from a re-run).
      await errorsWriter.flush();
      await committer.prepare(table);
      const r = await committer.commit(sources);
      for (const fb of r.fallbacks ?? []) ctl.event("commit-fallback", `fragment ${fb.fragmentId} was written through mergeInsert: the graft refused it (${fb.reason})`);
      failpoint("commit.before-marker");
      for (const f of group) {
        const name = markerName(f.id, binding.version, identities.get(f.id)!, t.name);
        const v = loaded.get(f.id) ?? { rows: 0, skipped: 0 };
        const marker: DoneMarker = { fragmentId: f.id, udfVersion: binding.version, inputIdentity: identities.get(f.id)!, rowsWritten: v.rows, rowsSkipped: v.skipped, committedVersion: r.version, at: new Date().toISOString() };
        await store.putMarker(ns, name, marker);
        for (const x of markers) if (x.name.startsWith(`${f.id}-`) && x.name !== name) await store.deleteMarker(ns, x.name);
        await store.deleteBatches(f.batchKey);
      }
      const total = performance.now() - w0;
      m.writeMs += assembleMs + r.writeMs;
      m.commitMs += Math.max(0, total - assembleMs - r.writeMs);
      m.rowsCommitted += r.rowsWritten;
      m.fragmentsWritten += group.length;
      m.fragmentsCommitted += group.length;
      m.commits += r.commits;
      m.commitRetries += r.retries;
      rec.committedVersion = Math.max(rec.committedVersion ?? 0, r.version);
      if (r.retries > 0) ctl.event("retry", `commit of fragment(s) ${group.map((f) => f.id).join(", ")} retried ${r.retries} time(s) after conflicts`);
      ctl.event("commit", `committed fragment(s) ${group.map((f) => f.id).join(", ")} (${r.rowsWritten} rows) as version ${r.version}`);
      refresh(true);
    };

    /**
     * Writes a group; when that fails, writes its fragments one by one, so a fragment another writer
     * changed since the plan (compacted, deleted, rewritten) fails alone and the healthy ones commit.
     */
    const writeGracefully = async (group: PlannedFragment[]): Promise<void> => {
      await lock.assertHeld(); // fencing: no commit once another job holds the column
      try {
        await writeGroup(group);
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

    let executor: Executor | undefined;
    try {
      if (plan.tasks.length > 0) {
        const config: WorkerConfig = {
          bundlePath: bindingBundlePath(t, binding),
          exportName: binding.exportName,
          label: `${binding.module}#${binding.exportName}`,
          dbDir: t.dbDir,
          table: t.name,
          column,
          dataType: binding.dataType,
          inputs: binding.inputs,
          checkpointRoot: store.root,
          intraApplierConcurrency: opts.intraApplierConcurrency,
          ...(opts.errorPolicy ? { errorPolicy: opts.errorPolicy } : {}),
          bindingVersion: readVersion,
        };
        if (opts.executor === "local") {
          executor = await LocalPool.create({
            size: Math.min(concurrency, plan.tasks.length),
            config,
            env: opts.env,
            taskTimeoutMs: opts.taskTimeoutMs,
            ...(memoryMb !== undefined ? { memoryMb } : {}),
          });
        } else {
          const q = await QueueExecutor.create({
            ...opts.executor,
            jobId: rec.id,
            config,
            pool: { taskTimeoutMs: opts.taskTimeoutMs, env: opts.env, ...(memoryMb !== undefined ? { memoryMb } : {}) },
            needs,
            ...(lock.previousJobId ? { supersedes: lock.previousJobId } : {}),
            onEvent: (kind, message) => {
              ctl.event(kind, message);
              log.warn(message); // the CLI prints warnings: a wait for workers is never silent
              refresh(true);
            },
          });
          executor = q;
          ctl.event("queue", `tasks go to queue ${q.queueName} on ${redactRedisUrl(opts.executor.redis)}, up to ${Math.min(concurrency, plan.tasks.length)} in flight${opts.concurrencyGiven ? "" : " (the live workers' slots, at least 8; set concurrency to change it)"}`);
        }
        const ex = executor;
        const queue: PlannedTask[] = [...plan.tasks];
        const runOne = async (task: PlannedTask): Promise<boolean> => {
          const doneRanges: { start: number; end: number }[] = [];
          for (let attempt = 1; ; attempt++) {
            const gaps = task.gaps.flatMap((g) => gapsOf(g.start, g.end, doneRanges));
            if (gaps.length === 0) return true;
            if (ctl.signal.aborted) return false;
            const spec: TaskSpec = {
              taskId: task.id,
              fragmentId: task.fragmentId,
              version: readVersion,
              globalOffset: task.globalOffset,
              gaps,
              selection: task.selection,
              batchKey: task.batchKey,
              checkpointSize: opts.checkpointSize,
              maxCheckpointSize: opts.maxCheckpointSize,
            };
            try {
              m.workersActive++;
              await ex.runTask(
                spec,
                (r: BatchReport) => {
                  doneRanges.push({ start: r.start, end: r.end });
                  m.rowsProcessed += r.end - r.start;
                  m.rowsComputed += r.rowsComputed;
                  m.rowsCheckpointed += r.rowsComputed;
                  if (r.rowsSkipped > 0) {
                    m.rowsSkipped += r.rowsSkipped;
                    const at = new Date().toISOString();
                    errorsWriter.add(r.errors.map((e): ErrorRecord => ({ jobId: rec.id, table: t.name, column, udf: udfLabel, udfVersion: binding.version, fragment: task.fragmentId, rowAddress: e.rowAddress, rowOffset: e.rowOffset, name: e.name, message: e.message, stack: e.stack, attempt: e.attempt, bisectDepth: e.bisectDepth, at })));
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
              if (isBackfillError(e, "WORKER_CRASHED") && attempt < opts.maxTaskAttempts && !ctl.signal.aborted) {
                m.workerCrashes++;
                ctl.event("worker-died", `${(e as Error).message}; retrying on a fresh process (attempt ${attempt + 1} of ${opts.maxTaskAttempts})`);
                refresh(true);
                continue;
              }
              if (isBackfillError(e, "WORKER_CRASHED")) {
                m.workerCrashes++;
                ctl.event("worker-died", (e as Error).message);
                throw new BackfillError("WORKER_CRASHED", `${(e as Error).message} (table ${t.name}, column ${column}); the task failed ${attempt} time(s), which is options.maxTaskAttempts`, { table: t.name, column, fragmentId: task.fragmentId, cause: e });
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
        await Promise.all(Array.from({ length: Math.min(concurrency, plan.tasks.length) }, lane));
      }
    } catch (e) {
      failure ??= e;
    } finally {
      await executor?.close();
    }
    // Write what is complete — healthy fragments too when the job failed or was cancelled.
    setPhase("committing");
    await drainWriters();
    await errorsWriter.flush().catch((e: unknown) => (failure ??= e));
    if (m.rowsSkipped > 0) ctl.event("skipped", `${m.rowsSkipped} row(s) were skipped by the error policy and left null; see \`lancet errors --job ${rec.id}\`; a re-run retries them`);
    refresh(true);
    if (failure !== undefined) {
      ctl.event("failed", `failed: ${(failure as Error).message}`);
      throw failure;
    }
    if (rec.failedFragments.length > 0) {
      const list = rec.failedFragments.map((f) => `fragment ${f.id}: ${f.reason}`).join("; ");
      const err = new CommitError("COMMIT_FAILED", `${rec.failedFragments.length} fragment(s) of table ${t.name} could not be committed (${m.fragmentsCommitted} were): ${list}. Run the backfill again to fill them`, { table: t.name, column, jobId: rec.id });
      ctl.event("failed", `failed: ${err.message}`);
      throw err;
    }
    if (ctl.signal.aborted) {
      const unfinished = plan.fragments.length - m.fragmentsCommitted;
      ctl.event("cancelled", `cancelled: ${m.fragmentsCommitted} fragment(s) committed, ${unfinished} left for the next run (their checkpoints are kept)`);
      throw new CancelledError(`job ${rec.id} was cancelled: ${m.fragmentsCommitted} of ${plan.fragments.length} fragment(s) committed; run the backfill again to finish (checkpointed batches are not recomputed)`, { jobId: rec.id, table: t.name, column });
    }
    if (opts.where === undefined) {
      // Every fragment is now complete but deferred ones: batches under their other keys (a run killed
      // after a commit, before deleting them) and those of fragments gone from the table are garbage.
      const complete = new Set([...fragments.filter((f) => f.done).map((f) => f.id), ...plan.fragments.map((f) => f.id)]);
      await sweepBatches(store, column, { complete, existing: new Set(manifest.fragments.map((f) => f.id)) }).then(
        (keys) => keys.length > 0 && log.info(`removed ${keys.length} leftover checkpoint key(s) of column ${column}`),
        (e: unknown) => log.warn(`could not remove leftover checkpoints of column ${column}: ${(e as Error).message}`),
      );
    }
    ctl.event("finished", `finished: ${m.rowsComputed} rows computed, ${m.rowsCommitted} committed in ${m.commits} commit(s)`);
    setPhase("finished");
    await ctl.finish("finished");
  } finally {
    await lock.release();
  }
}


/**
 * Rows the planned fragments' selections match at the pinned version (at most each fragment's planned
 * rows): counted per fragment up to 64 fragments, else one count per distinct selection.
 */
async function countSelected(t: ResolvedTable, version: number, fragments: readonly PlannedFragment[]): Promise<{ total: number; byFragment: Map<number, number> }> {
  const byFragment = new Map<number, number>();
  let total = 0;
  const selective = new Map<string, PlannedFragment[]>();
  for (const f of fragments) {
    if (f.selection === "" || f.rowsToCompute === 0) total += f.rowsToCompute;
    else selective.set(f.selection, [...(selective.get(f.selection) ?? []), f]);
  }
  if (selective.size === 0) return { total, byFragment };
  const { table } = await openLanceTable(t);
  await table.checkout(version);
  const perFragment = fragments.length <= 64;
  for (const [selection, group] of selective) {
    if (perFragment) {
      for (const f of group) {
        const n = Math.min(f.rowsToCompute, await table.countRows(selectionFilter(selection, [f.id])));
        byFragment.set(f.id, n);
        total += n;
      }
    } else {
      const upTo = group.reduce((s, f) => s + f.rowsToCompute, 0);
      total += Math.min(upTo, await table.countRows(selectionFilter(selection, group.map((f) => f.id))));
    }
  }
  return { total, byFragment };
}

/** Takes the column's lock and starts recording the job in the jobs table. */
async function startJob(t: ResolvedTable, column: string, ctl: JobController, opened?: JobsTable): Promise<{ jobs: JobsTable; lock: ColumnLock }> {
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

/**
 * A SQL UDF is a LanceDB native computed column: LanceDB's own refresh fills it (rows not yet filled
 * and rows whose inputs changed) in one DataReplacement, at native speed. Lancet runs it as a job —
 * record, lock, events, metrics — like any other backfill.
 */
async function runSqlRefresh(
  t: ResolvedTable,
  table: Awaited<ReturnType<typeof openLanceTable>>["table"],
  column: string,
  binding: Binding,
  opts: ResolvedBackfillOptions,
  ctl: JobController,
  setPhase: (p: BackfillProgress["phase"]) => void,
  readVersion: number,
): Promise<void> {
  if (opts.where !== undefined || opts.numFrags !== undefined) {
    throw new ConfigError("CONFIG_INVALID", `options.${opts.where !== undefined ? "where" : "numFrags"} is not supported for column ${column} of table ${t.name}: it is a SQL UDF that LanceDB refreshes as a whole (rows not yet filled, and rows whose inputs changed)`, { table: t.name, column });
  }
  const rec = ctl.record;
  const m = ctl.metrics;
  const manifest = await readManifest(t.tableDir, readVersion);
  const rows = manifest.fragments.reduce((s, f) => s + f.liveRows, 0);
  rec.plan = { readVersion, fragmentsTotal: manifest.fragments.length, fragmentsToWrite: manifest.fragments.length, fragmentsDone: 0, fragmentsDeferred: 0, tasks: 1, rowsPlanned: rows, taskSize: rows, commitGranularity: manifest.fragments.length, selection: "rows LanceDB's refresh fills (unfilled, or inputs changed)", fragments: [] };
  m.rowsPlanned = rows;
  m.fragmentsPlanned = manifest.fragments.length;
  m.tasksTotal = 1;
  if (opts.planOnly) {
    await ctl.finish("finished");
    return;
  }
  const { lock } = await startJob(t, column, ctl);
  try {
    ctl.event("started", `refresh of SQL column ${t.name}.${column} = ${binding.sql} started at table version ${readVersion}`);
    setPhase("running");
    ctl.setStatus("running");
    const t0 = performance.now();
    await lock.assertHeld();
    const r = await table.refreshColumn(column);
    const ms = performance.now() - t0;
    m.rowsProcessed = rows;
    m.rowsComputed = r.rowsFilled;
    m.rowsCheckpointed = r.rowsFilled;
    m.rowsCommitted = r.rowsFilled;
    m.udfMs = ms;
    m.udfCpuMs = ms;
    m.tasksDone = 1;
    m.fragmentsWritten = m.fragmentsCommitted = r.rowsFilled > 0 ? manifest.fragments.length : 0;
    m.commits = r.rowsFilled > 0 ? 1 : 0;
    if (r.version > readVersion) rec.committedVersion = r.version;
    ctl.event("commit", `LanceDB refreshed ${r.rowsFilled} row(s) as version ${r.version}`);
    ctl.event("finished", `finished: ${r.rowsFilled} rows computed natively by LanceDB`);
    setPhase("finished");
    ctl.changed(true);
    await ctl.finish("finished");
  } finally {
    await lock.release();
  }
}
