/**
 * A backfill: check the binding, pin a version and plan (which fragments and row ranges still need the
 * column), then hand the plan to the shared coordinator (`coordinator.ts`: dispatch to the executor,
 * per-fragment writers, commits every `commitGranularity` fragments, the job record) with this job
 * kind's writer ({@link backfillWriter}: assemble from checkpoints, commit, done markers). Everything a
 * run computes is checkpointed before it is committed, so a killed run loses at most its in-flight
 * batches. The job is tracked by a {@link JobController}: a record in the jobs table, progress, events,
 * cancellation.
 */
import { randomUUID } from "node:crypto";
import * as path from "node:path";
import { batchKey, deletionIdentity, inputIdentity, markerName, markerNamespace, type DoneMarker } from "../checkpoint/keys.ts";
import { checkpointStoreAt, FileCheckpointStore, type CheckpointStore } from "../checkpoint/store.ts";
import { fragmentFileSkipped, poisonFragmentFile } from "../checkpoint/fragment-file.ts";
import { fragmentFilesSupported } from "../commit/graft.ts";
import { formatVersionOf, readRawManifest } from "../commit/manifest-write.ts";
import { sweepBatches } from "../checkpoint/sweep.ts";
import { checkInputs, RESERVED_COLUMNS, withoutReservedColumns } from "../columns.ts";
import type { Committer, FragmentSource } from "../commit/committer.ts";
import { assertCommitMode, createCommitter } from "../commit/auto.ts";
import { failpoint } from "../failpoints.ts";
import { assembleFragment, streamFragment } from "../commit/writer.ts";
import { ConfigError, isBackfillError } from "../errors.ts";
import { createExecutor, queueSlots, stopQueuedTasks, type Resources } from "../exec/factory.ts";
import type { Executor } from "../exec/protocol.ts";
import { redactRedisUrl } from "../exec/redis-url.ts";
import { silentLogger, type Logger } from "../log.ts";
import { resolveBackfillOptions, type BackfillOptions, type BackfillProgress, type ResolvedBackfillOptions } from "../options.ts";
import { planBackfill, selectionFilter, type PlanFragmentInput, type PlannedFragment } from "../plan/plan.ts";
import { fieldIdsOf, readManifest } from "../read/manifest.ts";
import { openLanceTable, resolveTable, type ResolvedTable, type TableRef } from "../table.ts";
import { bindingBundlePath, readBinding, type Binding } from "../udf/binding.ts";
import { bundleExists } from "../udf/bundle.ts";
import { formatDataType } from "../udf/types.ts";
import { coresFor, runJob, startJob, workerConfig, type GroupWriter } from "./coordinator.ts";
import { BackfillJob, JobController } from "./job.ts";
import type { JobRecord, PlanSummary } from "./record.ts";
import { JobsTable } from "./store.ts";
import { ColumnLock, mayBeAlive } from "./lock.ts";

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
  if (binding.kind !== "sql" && !(await bundleExists(bindingBundlePath(t, binding)))) {
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
    clusterSlots = await queueSlots(opts.executor, needs, where);
    // A dead coordinator's tasks may still run on the workers: stop them before planning, so the plan
    // sees everything they checkpoint.
    jobsTable = opts.planOnly ? undefined : await JobsTable.open(t.dbDir);
    const dead = jobsTable && (await ColumnLock.goneHolder(t.storeDir, column, jobsTable));
    if (dead !== undefined) await stopQueuedTasks(opts.executor, needs, dead, where);
    if (!opts.concurrencyGiven) concurrency = Math.max(concurrency, clusterSlots);
  }

  assertCommitMode(opts.commitMode, t, column);
  const config = workerConfig(t, column, binding, opts, readVersion);
  // The embedded pool's first worker starts while the job plans (a process start is most of a small
  // job's fixed cost); a plan with nothing to do closes it unused.
  let prestarted: Promise<Executor> | undefined;
  if (opts.executor === "local" && !opts.planOnly) {
    prestarted = createExecutor({ choice: "local", config, size: concurrency, env: opts.env, taskTimeoutMs: opts.taskTimeoutMs, memoryMb, jobId: rec.id, needs }).then((c) => c.executor);
    prestarted.catch(() => {}); // observed when the job dispatches
  }

  // ---- plan -------------------------------------------------------------------------------
  let planned: Awaited<ReturnType<typeof planRun>>;
  try {
    planned = await planRun(t, column, binding, opts, readVersion, concurrency, log);
  } catch (e) {
    void prestarted?.then((x) => x.close(), () => {});
    throw e;
  }
  const { manifest, store, ns, markers, fragments, plan, summary } = planned;
  rec.plan = summary;
  m.fragmentsPlanned = plan.fragments.length;
  m.tasksTotal = plan.tasks.length;
  m.rowsPlanned = plan.rowsPlanned;
  if (opts.planOnly) {
    await ctl.finish("finished");
    return;
  }

  // ---- run: the shared coordinator does dispatch, writers, commits and the job record ---------------
  let started: Awaited<ReturnType<typeof startJob>>;
  try {
    started = await startJob(t, column, ctl, jobsTable);
  } catch (e) {
    void prestarted?.then((x) => x.close(), () => {});
    throw e;
  }
  const { jobs, lock } = started;
  try {
    let committer: Committer;
    try {
      committer = createCommitter(opts.commitMode, t, column, binding.dataType, {
      logger: log,
      // A job whose process on this host is gone is not running, whatever its record says yet.
      otherJobsRunning: async () => (await jobs.list({ table: t.name })).find((j) => j.id !== rec.id && j.kind !== "refresh" && (j.status === "running" || j.status === "pending") && mayBeAlive(j.pid, j.host))?.id,
      // Fencing right before each publication, not only before a group is assembled and staged.
      fence: () => lock.assertHeld(),
      });
    } catch (e) {
      void prestarted?.then((x) => x.close(), () => {}); // the job never reaches dispatch
      throw e;
    }
    await runJob({
      ctl,
      log,
      lock,
      noun: "backfill",
      dbDir: t.dbDir,
      table: t.name,
      column,
      udf: { label: `${binding.module}#${binding.exportName}`, version: binding.version },
      plan,
      dispatch: {
        executor: opts.executor,
        config,
        env: opts.env,
        taskTimeoutMs: opts.taskTimeoutMs,
        memoryMb,
        needs,
        concurrency,
        concurrencyGiven: opts.concurrencyGiven,
        maxTaskAttempts: opts.maxTaskAttempts,
        readVersion,
        checkpointSize: opts.checkpointSize,
        maxCheckpointSize: opts.maxCheckpointSize,
        ...(prestarted ? { prestarted } : {}),
      },
      writerConcurrency: opts.writerConcurrency,
      cores: coresFor(opts.executor, clusterSlots, concurrency),
      udfTraits: { batch: binding.batch },
      events: {
        started: `backfill of ${t.name}.${column} started (UDF ${binding.exportName}, version ${binding.version}) at table version ${readVersion}`,
        planned: `plan: ${summary.fragmentsToWrite} fragment(s) to write, ${summary.fragmentsDone} already complete, ${summary.tasks} task(s), up to ${summary.rowsPlanned} rows; ${summary.selection}`,
      },
      setPhase,
      writeGroup: backfillWriter({ t, table, column, binding, store, ns, markers, identities: new Map(fragments.map((f) => [f.id, f.identity])), committer, ctl }),
      afterSuccess: async () => {
        try {
          if (opts.where === undefined) await sweep();
        } finally {
          // Released before the job's promise settles: the caller's next job of this column finds it free.
          await lock.release();
        }
      },
    });
  } finally {
    await lock.release();
  }

  /** Every fragment is now complete but deferred ones: batches under their other keys (a run killed after a commit, before deleting them) and those of fragments gone from the table are garbage. */
  async function sweep(): Promise<void> {
    const complete = new Set([...fragments.filter((f) => f.done).map((f) => f.id), ...plan.fragments.map((f) => f.id)]);
    await sweepBatches(store, column, { complete, existing: new Set(manifest.fragments.map((f) => f.id)) }).then(
      (keys) => keys.length > 0 && log.info(`removed ${keys.length} leftover checkpoint key(s) of column ${column}`),
      (e: unknown) => log.warn(`could not remove leftover checkpoints of column ${column}: ${(e as Error).message}`),
    );
  }
}

/**
 * The backfill's planner: from the table at `readVersion` and what is done (done markers, checkpointed
 * batches), the fragments that still need the column, cut into tasks, and the plan's summary.
 */
async function planRun(t: ResolvedTable, column: string, binding: Binding, opts: ResolvedBackfillOptions, readVersion: number, concurrency: number, log: Logger) {
  const manifest = await readManifest(t.tableDir, readVersion);
  const inputIds = binding.inputs.flatMap((i) => fieldIdsOf(manifest, i));
  const outputIds = fieldIdsOf(manifest, column);
  const store = checkpointStoreAt(path.join(t.storeDir, "ckp"));
  const ns = markerNamespace(column, opts.where);
  const markers = await store.listMarkers(ns);
  // A fragment whose marker records skipped rows is not done: the next run retries its null rows.
  const markerNames = new Set(markers.filter((x) => !((x.value as DoneMarker).rowsSkipped! > 0)).map((x) => x.name));
  const versionChanged = opts.where === undefined && markers.some((x) => (x.value as DoneMarker).udfVersion !== binding.version);
  const nullSelection = `\`${column}\` IS NULL`;
  // Whole-fragment tasks write the column file themselves when the graft can publish it (see
  // checkpoint/fragment-file.ts); LANCET_FRAGMENT_FILES=0 keeps batch checkpoints (for comparisons).
  const fileFormat =
    opts.commitMode !== "merge" && binding.dataType !== "blob" && process.env.LANCET_FRAGMENT_FILES !== "0" && fragmentFilesSupported(t) ? formatVersionOf(await readRawManifest(t.tableDir, readVersion)) : undefined;
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
    let covered = done ? [] : await store.listBatches(key);
    if (store instanceof FileCheckpointStore && covered.some((c) => c.file && c.end > f.liveRows)) {
      // Not a fragment file of this fragment (rows appended twice): useless, and in the way.
      log.warn(`dropping the fragment file of ${t.name}.${column} fragment ${f.id}: it holds more rows than the fragment's ${f.liveRows}; they will be computed again`);
      await poisonFragmentFile(store.batchDir(key));
      covered = await store.listBatches(key);
    }
    const fileOk = fileFormat !== undefined && selection === "" && !hasValues && f.liveRows === f.physicalRows;
    fragments.push({ id: f.id, liveRows: f.liveRows, globalOffset, selection, batchKey: key, covered, done, identity, ...(fileOk ? { fileFormat } : {}) });
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
  return { manifest, store, ns, markers, fragments, plan, summary };
}

interface BackfillWriterInit {
  readonly t: ResolvedTable;
  readonly table: Awaited<ReturnType<typeof openLanceTable>>["table"];
  readonly column: string;
  readonly binding: Binding;
  readonly store: CheckpointStore;
  /** The column's marker namespace, and the markers found at planning. */
  readonly ns: string;
  readonly markers: readonly { readonly name: string }[];
  /** Each fragment's input identity at the pinned version (its marker's name). */
  readonly identities: ReadonlyMap<number, string>;
  readonly committer: Committer;
  readonly ctl: JobController;
}

/**
 * A backfill's writer: each fragment of the group is assembled from its checkpoints when the committer
 * asks for it; after the commit each gets its done marker, older markers and its checkpoints are removed.
 */
function backfillWriter(w: BackfillWriterInit): GroupWriter {
  const { t, table, column, binding, store, ns, markers, identities, committer, ctl } = w;
  const rec = ctl.record;
  const m = ctl.metrics;
  return async (group, { errorsWriter, refresh }) => {
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
      file: async () => {
        const ranges = await store.listBatches(f.batchKey);
        if (!(store instanceof FileCheckpointStore) || ranges.length !== 1 || !ranges[0]!.file || ranges[0]!.end !== f.liveRows) return null;
        const dir = store.batchDir(f.batchKey);
        loaded.set(f.id, { rows: f.liveRows, skipped: await fragmentFileSkipped(dir, f.liveRows) });
        return dir;
      },
      stream: async function* () {
        let rows = 0;
        let skipped = 0;
        for await (const piece of streamFragment(store, f, binding.dataType, { table: t.name, column })) {
          rows += piece.rowAddrs.length;
          skipped += piece.rowsSkipped;
          yield piece;
        }
        loaded.set(f.id, { rows, skipped });
      },
    }));
    // The skipped rows' records are written before their fragments commit: a crash between the two
    // can then lose no record of a committed row (the done marker would hide the rows from a re-run).
    await errorsWriter.flush();
    await committer.prepare(table);
    const r = await committer.commit(sources);
    for (const fb of r.fallbacks ?? []) ctl.event("commit-fallback", `fragment ${fb.fragmentId} was written through mergeInsert: the graft refused it (${fb.reason})`);
    failpoint("commit.before-marker");
    // Each fragment's marker before its checkpoints are removed; the fragments of a group side by side.
    await Promise.all(
      group.map(async (f) => {
        const name = markerName(f.id, binding.version, identities.get(f.id)!, t.name);
        const v = loaded.get(f.id) ?? { rows: 0, skipped: 0 };
        const marker: DoneMarker = { fragmentId: f.id, udfVersion: binding.version, inputIdentity: identities.get(f.id)!, rowsWritten: v.rows, rowsSkipped: v.skipped, committedVersion: r.version, at: new Date().toISOString() };
        await store.putMarker(ns, name, marker);
        for (const x of markers) if (x.name.startsWith(`${f.id}-`) && x.name !== name) await store.deleteMarker(ns, x.name);
        await store.deleteBatches(f.batchKey);
      }),
    );
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
