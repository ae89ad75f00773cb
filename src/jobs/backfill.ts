/**
 * The coordinator of a backfill: check the binding, pin a version, plan, dispatch tasks to the
 * executor, assemble each finished fragment from its checkpoints (one serial writer per fragment) and
 * commit every `commitGranularity` fragments. Everything a run computes is checkpointed before it is
 * committed, so a killed run loses at most its in-flight batches.
 */
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import * as path from "node:path";
import { performance } from "node:perf_hooks";
import { batchKey, deletionIdentity, inputIdentity, markerName, markerNamespace, type DoneMarker } from "../checkpoint/keys.ts";
import { FileCheckpointStore } from "../checkpoint/store.ts";
import { RESERVED_COLUMNS } from "../columns.ts";
import { MergeInsertCommitter } from "../commit/merge-insert.ts";
import type { Committer, FragmentValues } from "../commit/committer.ts";
import { assembleFragment } from "../commit/writer.ts";
import { BackfillError, ConfigError, isBackfillError } from "../errors.ts";
import { LocalPool } from "../exec/local/pool.ts";
import type { BatchReport, Executor, TaskSpec } from "../exec/protocol.ts";
import { silentLogger } from "../log.ts";
import { resolveBackfillOptions, type BackfillOptions, type BackfillProgress } from "../options.ts";
import { gapsOf, planBackfill, type Plan, type PlannedFragment, type PlannedTask } from "../plan/plan.ts";
import { fieldIdsOf, readManifest } from "../read/manifest.ts";
import { openLanceTable, resolveTable, type TableRef } from "../table.ts";
import { bindingBundlePath, readBinding, type Binding } from "../udf/binding.ts";
import { formatDataType } from "../udf/types.ts";

/** A plan as reported to users. */
export interface PlanSummary {
  readonly readVersion: number;
  readonly fragmentsTotal: number;
  readonly fragmentsToWrite: number;
  readonly fragmentsDone: number;
  readonly fragmentsDeferred: number;
  readonly tasks: number;
  readonly rowsPlanned: number;
  readonly taskSize: number;
  readonly commitGranularity: number;
  /** How rows are selected: "all rows", "rows where <col> IS NULL", or the user's where. */
  readonly selection: string;
  readonly fragments: readonly { id: number; liveRows: number; rowsToCompute: number; tasks: number; selection: string }[];
}

export interface BackfillResult {
  readonly jobId: string;
  /** `planned` for a plan-only run. */
  readonly status: "finished" | "planned";
  readonly table: string;
  readonly column: string;
  readonly udfVersion: string;
  readonly plan: PlanSummary;
  readonly rowsPlanned: number;
  readonly rowsComputed: number;
  readonly rowsCheckpointed: number;
  readonly rowsCommitted: number;
  readonly fragmentsCommitted: number;
  readonly commits: number;
  /** Worker processes that died and whose tasks were retried. */
  readonly workerCrashes: number;
  readonly readVersion: number;
  readonly finalVersion: number;
  readonly durationMs: number;
  readonly udfMs: number;
  readonly readMs: number;
  readonly checkpointMs: number;
  readonly commitMs: number;
}

interface Loaded {
  binding: Binding;
}

async function checkColumn(ref: TableRef, column: string, where: string | undefined): Promise<Loaded & { t: ReturnType<typeof resolveTable>; table: Awaited<ReturnType<typeof openLanceTable>>["table"] }> {
  const t = resolveTable(ref);
  if (typeof column !== "string" || column.length === 0) throw new ConfigError("CONFIG_INVALID", `column must be a column name (got ${JSON.stringify(column)})`);
  const { table } = await openLanceTable(t);
  const schema = await table.schema();
  const field = schema.fields.find((f) => f.name === column);
  const userCols = schema.fields.map((f) => f.name).filter((n) => !RESERVED_COLUMNS.has(n));
  if (!field) throw new ConfigError("COLUMN_NOT_FOUND", `table ${t.name} has no column ${column}; its columns are ${userCols.join(", ")}. Add it with add-column`, { table: t.name, column });
  const binding = readBinding(field.metadata, t.name, column);
  if (!binding) {
    throw new ConfigError("COLUMN_NOT_UDF", `column ${column} of table ${t.name} is not bound to a UDF, so there is nothing to backfill; bind it with alter-column --udf MODULE#EXPORT`, { table: t.name, column });
  }
  const missing = binding.inputs.filter((i) => !userCols.includes(i));
  if (missing.length > 0) {
    throw new ConfigError("INPUT_COLUMN_NOT_FOUND", `UDF ${binding.module}#${binding.exportName} bound to column ${column} needs input column(s) ${missing.join(", ")}, which table ${t.name} no longer has; its columns are ${userCols.join(", ")}`, { table: t.name, column });
  }
  const have = formatDataType(field.type);
  if (have !== binding.dataType) {
    throw new ConfigError("UDF_OUTPUT_TYPE", `column ${column} of table ${t.name} is ${have} but its UDF returns ${binding.dataType}; rebind it with alter-column`, { table: t.name, column });
  }
  if (!existsSync(bindingBundlePath(t, binding))) {
    throw new ConfigError("UDF_MODULE_NOT_FOUND", `the bound UDF snapshot of column ${column} (${bindingBundlePath(t, binding)}) is missing; rebind it with alter-column`, { table: t.name, column });
  }
  if (where !== undefined) {
    try {
      await table.query().where(where).select(["_rowaddr"]).limit(1).toArray();
    } catch (e) {
      throw new ConfigError("WHERE_INVALID", `options.where ${JSON.stringify(where)} is not a valid filter on table ${t.name}: ${(e as Error).message.split("\n")[0]}`, { table: t.name, column, cause: e });
    }
  }
  return { t, table, binding };
}

/**
 * Computes `column` for the rows that need it and commits the values. Resolves when the job finished;
 * rejects with the job's error (a BackfillError) otherwise — fragments completed before the failure
 * are committed, and everything checkpointed is kept for the next run.
 */
export async function backfill(ref: TableRef, column: string, options: BackfillOptions = {}): Promise<BackfillResult> {
  const started = performance.now();
  const opts = resolveBackfillOptions(options);
  const log = (opts.logger ?? silentLogger).child({ table: ref?.table, column });
  const { t, table, binding } = await checkColumn(ref, column, opts.where);
  const jobId = randomUUID();
  const committer: Committer = new MergeInsertCommitter(t, column, { logger: log });
  let prepared = false;
  const readVersion = await table.version();

  // ---- plan -------------------------------------------------------------------------------
  const manifest = await readManifest(t.tableDir, readVersion);
  const inputIds = binding.inputs.flatMap((i) => fieldIdsOf(manifest, i));
  const outputIds = fieldIdsOf(manifest, column);
  const store = new FileCheckpointStore(path.join(t.storeDir, "ckp"));
  const ns = markerNamespace(column, opts.where);
  const markers = await store.listMarkers(ns);
  const markerNames = new Set(markers.map((m) => m.name));
  const versionChanged = opts.where === undefined && markers.some((m) => (m.value as DoneMarker).udfVersion !== binding.version);
  const nullSelection = `\`${column}\` IS NULL`;
  const selectionLabel = opts.where ?? (versionChanged ? "all rows (the UDF version changed)" : "rows not yet computed");
  const fragments = [];
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
  const plan: Plan = planBackfill({
    fragments,
    concurrency: opts.concurrency,
    intraApplierConcurrency: opts.intraApplierConcurrency,
    taskSize: opts.taskSize,
    commitGranularity: opts.commitGranularity,
    numFrags: opts.numFrags,
  });
  const summary: PlanSummary = {
    readVersion,
    fragmentsTotal: fragments.length,
    fragmentsToWrite: plan.fragments.length,
    fragmentsDone: plan.fragmentsDone,
    fragmentsDeferred: plan.fragmentsDeferred,
    tasks: plan.tasks.length,
    rowsPlanned: plan.rowsPlanned,
    taskSize: plan.taskSize,
    commitGranularity: plan.commitGranularity,
    selection: selectionLabel,
    fragments: plan.fragments.map((f) => ({ id: f.id, liveRows: f.liveRows, rowsToCompute: f.rowsToCompute, tasks: f.tasks.length, selection: f.selection === "" ? "all" : f.selection })),
  };
  log.info("plan", { fragments: summary.fragmentsToWrite, tasks: summary.tasks, rows: summary.rowsPlanned });

  const counters = { rowsProcessed: 0, rowsComputed: 0, rowsCheckpointed: 0, rowsCommitted: 0, fragmentsCommitted: 0, tasksDone: 0, commits: 0, crashes: 0, udfMs: 0, readMs: 0, checkpointMs: 0, commitMs: 0 };
  let phase: BackfillProgress["phase"] = "planning";
  const progress = (): BackfillProgress => ({
    phase,
    rowsPlanned: plan.rowsPlanned,
    rowsProcessed: counters.rowsProcessed,
    rowsComputed: counters.rowsComputed,
    rowsCheckpointed: counters.rowsCheckpointed,
    rowsCommitted: counters.rowsCommitted,
    fragmentsPlanned: plan.fragments.length,
    fragmentsCommitted: counters.fragmentsCommitted,
    tasksTotal: plan.tasks.length,
    tasksDone: counters.tasksDone,
    elapsedMs: performance.now() - started,
  });
  const emit = (): void => opts.onProgress?.(progress());
  emit();

  const result = (finalVersion: number, status: BackfillResult["status"]): BackfillResult => ({
    jobId,
    status,
    table: t.name,
    column,
    udfVersion: binding.version,
    plan: summary,
    rowsPlanned: plan.rowsPlanned,
    rowsComputed: counters.rowsComputed,
    rowsCheckpointed: counters.rowsCheckpointed,
    rowsCommitted: counters.rowsCommitted,
    fragmentsCommitted: counters.fragmentsCommitted,
    commits: counters.commits,
    workerCrashes: counters.crashes,
    readVersion,
    finalVersion,
    durationMs: performance.now() - started,
    udfMs: counters.udfMs,
    readMs: counters.readMs,
    checkpointMs: counters.checkpointMs,
    commitMs: counters.commitMs,
  });
  if (opts.planOnly) return result(readVersion, "planned");

  // ---- run --------------------------------------------------------------------------------
  phase = "running";
  const identities = new Map(fragments.map((f) => [f.id, f.identity]));
  const remaining = new Map<number, number>(plan.fragments.map((f) => [f.id, f.tasks.length]));
  const byId = new Map<number, PlannedFragment>(plan.fragments.map((f) => [f.id, f]));
  const ready: PlannedFragment[] = plan.fragments.filter((f) => f.tasks.length === 0);
  let failure: unknown;
  let finalVersion = readVersion;
  let commitChain: Promise<void> = Promise.resolve();

  const commitReady = (force: boolean): void => {
    while (ready.length > 0 && (force || ready.length >= plan.commitGranularity)) {
      const group = ready.splice(0, plan.commitGranularity);
      commitChain = commitChain.then(async () => {
        const c0 = performance.now();
        phase = "committing";
        if (!prepared) {
          await committer.prepare(table);
          prepared = true;
        }
        const values: FragmentValues[] = [];
        for (const f of group) values.push(await assembleFragment(store, f, binding.dataType, { table: t.name, column }));
        const r = await committer.commit(values);
        finalVersion = r.version;
        for (const f of group) {
          const name = markerName(f.id, binding.version, identities.get(f.id)!, t.name);
          const marker: DoneMarker = { fragmentId: f.id, udfVersion: binding.version, inputIdentity: identities.get(f.id)!, rowsWritten: values.find((v) => v.fragmentId === f.id)!.rowAddrs.length, committedVersion: r.version, at: new Date().toISOString() };
          await store.putMarker(ns, name, marker);
          for (const m of markers) if (m.name.startsWith(`${f.id}-`) && m.name !== name) await store.deleteMarker(ns, m.name);
          await store.deleteBatches(f.batchKey);
        }
        counters.rowsCommitted += r.rowsWritten;
        counters.fragmentsCommitted += group.length;
        counters.commits += r.commits;
        counters.commitMs += performance.now() - c0;
        phase = failure === undefined ? "running" : "failed";
        emit();
      });
      commitChain = commitChain.catch((e: unknown) => {
        failure ??= e;
      });
    }
  };
  commitReady(false);

  let executor: Executor | undefined;
  try {
    if (plan.tasks.length > 0) {
      executor = await LocalPool.create({
        size: Math.min(opts.concurrency, plan.tasks.length),
        config: {
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
        },
      });
      const queue: PlannedTask[] = [...plan.tasks];
      const runOne = async (task: PlannedTask): Promise<void> => {
        const doneRanges: { start: number; end: number }[] = [];
        for (let attempt = 1; ; attempt++) {
          const gaps = task.gaps.flatMap((g) => gapsOf(g.start, g.end, doneRanges));
          if (gaps.length === 0) return;
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
            await executor!.runTask(spec, (r: BatchReport) => {
              doneRanges.push({ start: r.start, end: r.end });
              counters.rowsProcessed += r.end - r.start;
              counters.rowsComputed += r.rowsComputed;
              counters.rowsCheckpointed += r.rowsComputed;
              counters.udfMs += r.udfMs;
              counters.readMs += r.readMs;
              counters.checkpointMs += r.checkpointMs;
              emit();
            });
            return;
          } catch (e) {
            if (isBackfillError(e, "WORKER_CRASHED") && attempt < opts.maxTaskAttempts) {
              counters.crashes++;
              log.warn(`worker died; retrying task on a fresh process (attempt ${attempt + 1} of ${opts.maxTaskAttempts})`, { fragmentId: task.fragmentId, error: (e as Error).message });
              continue;
            }
            if (isBackfillError(e, "WORKER_CRASHED")) {
              throw new BackfillError("WORKER_CRASHED", `${(e as Error).message} (table ${t.name}, column ${column}); the task failed ${attempt} time(s), which is options.maxTaskAttempts`, { table: t.name, column, fragmentId: task.fragmentId, cause: e });
            }
            throw e;
          }
        }
      };
      const lane = async (): Promise<void> => {
        while (failure === undefined) {
          const task = queue.shift();
          if (!task) return;
          try {
            await runOne(task);
          } catch (e) {
            failure ??= e;
            return;
          }
          counters.tasksDone++;
          const left = remaining.get(task.fragmentId)! - 1;
          remaining.set(task.fragmentId, left);
          if (left === 0) {
            ready.push(byId.get(task.fragmentId)!);
            commitReady(false);
          }
          emit();
        }
      };
      await Promise.all(Array.from({ length: Math.min(opts.concurrency, plan.tasks.length) }, lane));
    }
  } catch (e) {
    failure ??= e;
  } finally {
    await executor?.close();
  }
  // Commit what is complete, healthy fragments included when the job failed.
  commitReady(true);
  await commitChain;
  if (failure !== undefined) {
    phase = "failed";
    emit();
    throw failure;
  }
  phase = "finished";
  emit();
  return result(finalVersion, "finished");
}
