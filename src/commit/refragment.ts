/**
 * Rewriting a table into more, smaller fragments. Each fragment has one serial writer, so a small
 * table whose UDF expands data (thumbnails, long generations) writes through one writer; splitting it
 * lets writers overlap each other and the UDF.
 *
 * The rewrite never touches the table until it is complete, and then lands as **one** commit:
 *
 * 1. **Pin** the latest version V and list the table's indexes (name, type, columns, details).
 * 2. **Stage**: read V and write the rows, `maxRowsPerFragment` at a time, into a staging table in the
 *    table's Lancet store (`DB/_lancet/NAME/refragment/stage-ID/`); LanceDB writes one fragment per
 *    `add()`. A journal (`DB/_lancet/NAME/refragment/journal.json`) records V, the run and how many
 *    rows are staged, after every fragment.
 * 3. **Swap**: hard-link the staged data files into the table and publish version V+1 with a
 *    hand-written `Overwrite` transaction (same schema and field ids, the new fragments, no indexes).
 *    Publication is a compare-and-swap: `link()` of the manifest fails with EEXIST when any other
 *    writer committed V+1 first. If another writer committed since V, nothing is published, the
 *    staging is dropped and the rewrite starts again from the new latest version (`conflictRetries`
 *    times), then gives up with `COMMIT_CONFLICT`: every other writer's commit stays as it was.
 *    The new version is read back before it is published, from a shadow directory that shares the
 *    table's files (`shadow.ts`): a version that does not read back is never published.
 * 4. **Indexes**: every index listed in step 1 is created again under its name, type and column.
 *
 * An interrupted run rolls forward, never back: a re-run reads the journal and resumes the staging
 * (when the table is still at V), finishes the index rebuild (when the swap was published), or —
 * when another writer committed meanwhile — drops the staging and starts from the new latest version.
 * No version of the table is ever restored or discarded. One refragment of a table runs at a time,
 * never beside a backfill of it: it holds the table's refragment lock (`jobs/lock.ts`) throughout,
 * and backfills check that lock after taking their column's.
 *
 * On object storage (`s3://`) the same steps run with the store's primitives instead of files: the
 * journal, the staging table and the shadow live in the bucket under the table's Lancet prefix
 * (`DB/_lancet/NAME/refragment/`; LanceDB writes the staging table there directly); the swap copies
 * each staged data file into the table's `data/` under a fresh name with a server-side `CopyObject`
 * (hard links do not exist there); the read-back runs on a shadow table in the bucket
 * (`refragment/shadow-ID/NAME.lance`: the candidate manifest plus server-side copies of the same staged
 * files under the same names, opened by LanceDB); and version V+1 is published as LanceDB publishes
 * there, with put-if-absent (`If-None-Match: *`), refused when another writer took V+1 first. Readers
 * see either the old layout or the new one; queries run without an index between the swap and the end
 * of step 4.
 */
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { link, mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import * as path from "node:path";
import { arrow, lancedb } from "../arrow.ts";
import type { ArrowNs, LanceNs } from "../arrow.ts";
import { BackfillError, CommitError, ConfigError, isBackfillError } from "../errors.ts";
import { checkFailpoints, failpoint } from "../failpoints.ts";
import { listJobs } from "../jobs/api.ts";
import { ColumnLock, holdingLock, REFRAGMENT_LOCK } from "../jobs/lock.ts";
import { fieldDefs, formatVersionOf, hasStableRowIdsFlag, KNOWN_MANIFEST_FIELDS, manifestFileBytes, publishVersion, readRawManifest, runsAt, timestampField } from "./manifest-write.ts";
import { copyObjects, withBucketShadow, withShadowVersion, type ObjectCopy } from "./shadow.ts";
import { columnFields, intOf, listManifestFiles, manifestName, parseDataFile, type DataFileInfo } from "../read/manifest.ts";
import { bytesField, concat, decodeMessage, intField, packedField, str } from "../read/protobuf.ts";
import { openLanceTable, resolveTable, type ResolvedTable, type TableRef } from "../table.ts";
import { readBinding } from "../udf/binding.ts";
import { canonical, connectDb, isRemote, removeAll, storeAt } from "../storage/location.ts";
import type { ObjectStore } from "../storage/object-store.ts";

export interface RefragmentProgress {
  /** `staging`: a new fragment was written to the staging table; `published`: the new layout is the table's latest version; `indexed`: an index was created again. */
  readonly phase: "staging" | "published" | "indexed";
  readonly table: string;
  /** The version being rewritten. */
  readonly fromVersion: number;
  readonly rowsStaged: number;
  readonly rowsTotal: number;
  readonly fragmentsStaged: number;
  /** 0 for the first try; counts restarts after another writer committed. */
  readonly attempt: number;
}

export interface RefragmentOptions {
  /** Rows per fragment at most. */
  readonly maxRowsPerFragment: number;
  /** Discard uncommitted checkpoints of UDF columns instead of refusing. @default false */
  readonly force?: boolean;
  /** How many times to start the rewrite again when another writer commits during it, before failing with `COMMIT_CONFLICT`. @default 2 */
  readonly conflictRetries?: number;
  /** Called (and awaited) after each staged fragment, after the swap and after each index. */
  readonly onProgress?: (p: RefragmentProgress) => void | Promise<void>;
  /**
   * Internal: the caller holds the table's lock `lockName` (`lock`) and runs job `jobId` (a view
   * refresh splitting its view between its swap and its UDF columns' backfills): those two do not
   * count as a running backfill. Any other lock or running job of the table still refuses.
   */
  readonly beside?: { readonly lock: ColumnLock; readonly lockName: string; readonly jobId: string };
}

export interface RefragmentResult {
  readonly table: string;
  readonly rows: number;
  readonly fragmentsBefore: number;
  readonly fragmentsAfter: number;
  /** The version whose rows were rewritten. */
  readonly fromVersion: number;
  /** The latest version afterwards (the swap, plus one version per recreated index). */
  readonly toVersion: number;
  /** The version that swapped in the new layout. */
  readonly swapVersion: number;
  /** Indexes created again, by name. */
  readonly indexes: readonly string[];
  /** True when this call finished a rewrite that an earlier, interrupted call had started. */
  readonly resumed: boolean;
  /** Restarts after another writer committed during the rewrite. */
  readonly conflicts: number;
}

/** An index as it was before the rewrite: enough to create it again. */
interface IndexRecipe {
  readonly name: string;
  readonly indexType: string;
  readonly columns: string[];
  readonly details?: unknown;
  readonly distanceType?: string;
}

interface Journal {
  readonly format: 2;
  readonly runId: string;
  readonly fromVersion: number;
  readonly maxRowsPerFragment: number;
  readonly rowsTotal: number;
  readonly fragmentsBefore: number;
  readonly indexes: IndexRecipe[];
  readonly startedAt: string;
  phase: "staging" | "publishing" | "published";
  rowsStaged: number;
  fragmentsStaged: number;
  /** Set once publication starts: the version it takes, its transaction id and the data files linked into the table. */
  publish?: { version: number; txnId: string; files: string[] };
  conflicts: number;
}

/** Another writer committed since the pinned version: start again (internal). */
class Conflict extends Error {
  readonly latest: number;
  constructor(latest: number) {
    super(`the table moved to version ${latest}`);
    this.latest = latest;
  }
}


/** Uncommitted checkpoint batches per column in the table's Lancet store. */
async function pendingCheckpoints(storeDir: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  if (isRemote(storeDir)) {
    // batches/<column>/<fragment key>/<start>-<end>.arrow
    for (const k of await storeAt(`${canonical(storeDir)}/ckp`).list("batches/")) {
      const parts = k.split("/");
      if (parts.length === 4 && parts[3]!.endsWith(".arrow")) out.set(parts[1]!, (out.get(parts[1]!) ?? 0) + 1);
    }
    return out;
  }
  const root = path.join(storeDir, "ckp", "batches");
  if (!existsSync(root)) return out;
  for (const column of await readdir(root)) {
    let n = 0;
    for (const frag of await readdir(path.join(root, column))) n += (await readdir(path.join(root, column, frag))).filter((f) => f.endsWith(".arrow")).length;
    if (n > 0) out.set(column, n);
  }
  return out;
}

const latestVersion = async (t: ResolvedTable): Promise<number> => Math.max(...(await listManifestFiles(t.tableDir)).keys());

/** The LanceDB index config that builds `r` again; undefined for a type refragment cannot rebuild. */
function indexConfig(r: IndexRecipe): LanceNs.Index | undefined {
  const I = lancedb.Index;
  const d = (r.details ?? {}) as Record<string, unknown>;
  const dist = r.distanceType === undefined ? {} : { distanceType: r.distanceType as "l2" };
  switch (r.indexType.toLowerCase()) {
    case "btree":
      return I.btree();
    case "bitmap":
      return I.bitmap();
    case "labellist":
      return I.labelList();
    case "fts":
    case "inverted": {
      const pick = <T>(k: string): Record<string, T> => (d[k] === undefined || d[k] === null ? {} : { [camel(k)]: d[k] as T });
      return I.fts({
        ...pick("with_position"), ...pick("base_tokenizer"), ...pick("language"), ...pick("max_token_length"), ...pick("lower_case"), ...pick("stem"),
        ...pick("remove_stop_words"), ...pick("custom_stop_words"), ...pick("ascii_folding"), ...pick("prefix_only"),
        ...(typeof d.min_ngram_length === "number" ? { ngramMinLength: d.min_ngram_length } : {}),
        ...(typeof d.max_ngram_length === "number" ? { ngramMaxLength: d.max_ngram_length } : {}),
      } as never);
    }
    case "ivfflat":
    case "ivf_flat":
      return I.ivfFlat(dist);
    case "ivfpq":
    case "ivf_pq":
      return I.ivfPq(dist);
    case "ivfrq":
    case "ivf_rq":
      return I.ivfRq(dist);
    case "ivfhnswsq":
    case "ivf_hnsw_sq":
      return I.hnswSq(dist);
    case "ivfhnswpq":
    case "ivf_hnsw_pq":
      return I.hnswPq(dist);
    default:
      return undefined;
  }
}
const camel = (k: string): string => k.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());

async function listRecipes(t: ResolvedTable, table: LanceNs.Table): Promise<IndexRecipe[]> {
  const out: IndexRecipe[] = [];
  for (const ix of await table.listIndices()) {
    const stats = await table.indexStats(ix.name).catch(() => undefined);
    const r: IndexRecipe = {
      name: ix.name,
      indexType: ix.indexType,
      columns: [...ix.columns],
      ...(ix.indexDetails === undefined ? {} : { details: ix.indexDetails }),
      ...(stats?.distanceType === undefined ? {} : { distanceType: stats.distanceType }),
    };
    if (ix.columns.length !== 1 || indexConfig(r) === undefined) {
      throw new ConfigError(
        "TABLE_UNSUPPORTED",
        `table ${t.name} has index ${ix.name} (${ix.indexType} on ${ix.columns.join(", ")}), which refragment cannot create again; drop it (table.dropIndex("${ix.name}")), refragment, then create it again`,
        { table: t.name },
      );
    }
    out.push(r);
  }
  return out;
}

// ---- journal ----------------------------------------------------------------------------------

function paths(t: ResolvedTable): { dir: string; journal: string; stage: (runId: string) => string; legacy: string } {
  const dir = path.join(t.storeDir, "refragment");
  return { dir, journal: path.join(dir, "journal.json"), stage: (id) => path.join(dir, `stage-${id}`), legacy: path.join(t.storeDir, "refragment.json") };
}

/** The store that holds a file of a remote location, and its key there. */
function objectAt(file: string): { store: ObjectStore; key: string } {
  const uri = canonical(file);
  const cut = uri.lastIndexOf("/");
  return { store: storeAt(uri.slice(0, cut)), key: uri.slice(cut + 1) };
}

async function readJournal(file: string): Promise<Journal | undefined> {
  let text: string;
  if (isRemote(file)) {
    const { store, key } = objectAt(file);
    const bytes = await store.get(key);
    if (bytes === undefined) return undefined;
    text = new TextDecoder().decode(bytes);
  } else {
    if (!existsSync(file)) return undefined;
    text = await readFile(file, "utf8");
  }
  const j = JSON.parse(text) as Journal;
  return j.format === 2 ? j : undefined;
}

/** Writes the journal. On object storage a plain PUT: only the holder of the table's refragment lock writes it. */
async function saveJournal(file: string, j: Journal): Promise<void> {
  const text = JSON.stringify({ ...j, updatedAt: new Date().toISOString() }, null, 1);
  if (isRemote(file)) {
    const { store, key } = objectAt(file);
    await store.put(key, text);
    return;
  }
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, text);
  await rename(tmp, file);
}

async function dropJournal(file: string): Promise<void> {
  if (isRemote(file)) {
    const { store, key } = objectAt(file);
    await store.delete(key);
  } else {
    await rm(file, { force: true });
  }
}

/** Drops a run's staging table (and, on object storage, any shadow a killed run left behind). */
async function dropStaging(t: ResolvedTable, runId: string): Promise<void> {
  const p = paths(t);
  await removeAll(p.stage(runId));
  if (isRemote(p.dir)) await storeAt(p.dir).deletePrefix("shadow-");
}

/** Removes data files the swap placed in the table that no manifest refers to (a swap that was not published). */
async function dropPlaced(t: ResolvedTable, files: readonly string[]): Promise<void> {
  if (isRemote(t.tableDir)) {
    // Best effort: an unreferenced data file is harmless, LanceDB never reads it.
    const store = storeAt(t.tableDir);
    for (const f of files) await store.delete(`data/${f}`).catch(() => undefined);
    return;
  }
  for (const f of files) await rm(path.join(t.tableDir, "data", f), { force: true });
}

// ---- the rewrite ------------------------------------------------------------------------------

/**
 * Rewrites `ref` into fragments of at most `maxRowsPerFragment` rows, keeping every column, value,
 * field's metadata and index, in one commit that fails rather than overwrite another writer's (see
 * the module comment). Refuses while a backfill of the table runs, and when UDF columns have
 * checkpointed work not yet committed (it would be lost: fragment ids change), unless `force`.
 *
 * @throws ConfigError `CONFIG_INVALID` (options), `TABLE_BUSY` (a backfill runs, uncommitted checkpoints), `TABLE_UNSUPPORTED` (an index it cannot rebuild, a newer manifest format)
 * @throws CommitError `COMMIT_CONFLICT` (retryable) when other writers kept committing through every try; the table keeps their commits and its old layout
 * @throws BackfillError with the table's state in the message when the rewrite stops part-way; run it again to roll forward
 */
export async function refragment(ref: TableRef, options: RefragmentOptions): Promise<RefragmentResult> {
  checkFailpoints();
  const n = options?.maxRowsPerFragment;
  if (typeof n !== "number" || !Number.isInteger(n) || n < 1) {
    throw new ConfigError("CONFIG_INVALID", `options.maxRowsPerFragment must be a positive integer (got ${JSON.stringify(n)})`);
  }
  const retries = options.conflictRetries ?? 2;
  if (!Number.isInteger(retries) || retries < 0) {
    throw new ConfigError("CONFIG_INVALID", `options.conflictRetries must be a non-negative integer (got ${JSON.stringify(options.conflictRetries)})`);
  }
  const t = resolveTable(ref);
  const p = paths(t);
  // (An older Lancet refused object storage: no legacy journal can exist there.)
  if (!isRemote(p.legacy) && existsSync(p.legacy)) {
    const { fromVersion } = JSON.parse(await readFile(p.legacy, "utf8")) as { fromVersion: number };
    throw new ConfigError(
      "TABLE_BUSY",
      `table ${t.name} has an interrupted refragment from an older Lancet (${p.legacy}, started at version ${fromVersion}); it overwrote the table before appending the rows again, so the latest versions may be partial. Check the table (restore version ${fromVersion} with LanceDB if rows are missing), then delete ${p.legacy} and run refragment again`,
      { table: t.name },
    );
  }
  // One refragment of a table at a time, and none while a backfill of it runs (a backfill takes its
  // column lock, then checks this one; refragment takes this one, then checks theirs: one of two
  // racing starts always sees the other).
  return holdingLock(t.storeDir, t.name, REFRAGMENT_LOCK, `table ${t.name} is being refragmented`, async () => {
    if (options.beside !== undefined) await options.beside.lock.assertHeld();
    await assertNoBackfill(t, options.beside);
    return refragmentLocked(t, n, retries, options);
  });
}

/** Refuses while a backfill of the table runs: a live column lock, or a running job record. */
async function assertNoBackfill(t: ResolvedTable, beside: RefragmentOptions["beside"]): Promise<void> {
  for (const name of await ColumnLock.names(t.storeDir)) {
    if (name === REFRAGMENT_LOCK || name === beside?.lockName) continue;
    const h = await ColumnLock.holder(t.storeDir, name, undefined);
    if (h) throw new ConfigError("TABLE_BUSY", `table ${t.name} has a running backfill of column ${name} (job ${h.jobId}, pid ${h.pid} on ${h.host}); wait for it or cancel it (lancet jobs cancel ${h.jobId}) before refragmenting`, { table: t.name, column: name });
  }
  const running = (await listJobs(t.dbDir, { table: t.name })).filter((x) => (x.status === "running" || x.status === "pending") && x.id !== beside?.jobId);
  if (running.length > 0) {
    throw new ConfigError("TABLE_BUSY", `table ${t.name} has a running backfill (job ${running[0]!.id}, column ${running[0]!.column}); wait for it or cancel it (lancet jobs cancel ${running[0]!.id}) before refragmenting`, { table: t.name });
  }
}

async function refragmentLocked(t: ResolvedTable, n: number, retries: number, options: RefragmentOptions): Promise<RefragmentResult> {
  const p = paths(t);
  const { table } = await openLanceTable(t);
  const blobs = (await table.schema()).fields.filter((f) => lancedb.isBlobField(f as never)).map((f) => f.name);
  if (blobs.length > 0) {
    throw new ConfigError("TABLE_UNSUPPORTED", `table ${t.name} has blob v2 column(s) ${blobs.join(", ")}, which refragment cannot rewrite yet (their payloads live in sidecar files next to each data file); the table is unchanged. Refragment a table without blob columns, or copy it into a new table with LanceDB`, { table: t.name });
  }
  let j = await readJournal(p.journal);
  let resumed = false;
  if (j !== undefined) {
    resumed = true;
    if (j.phase === "publishing") {
      if (await wasPublished(t, j)) {
        j.phase = "published";
      } else {
        // The swap never landed: the files it placed in the table are referenced by no manifest.
        await dropPlaced(t, j.publish?.files ?? []);
        j.phase = "staging";
        delete j.publish;
      }
      await saveJournal(p.journal, j);
    }
    if (j.phase === "published") return finish(t, table, j, options, true);
    const latest = await latestVersion(t);
    if (latest !== j.fromVersion || j.maxRowsPerFragment !== n) {
      // Staged from a version that is no longer the latest (or for another size): drop the staging only.
      await dropStaging(t, j.runId);
      j = undefined;
    }
  }
  let conflicts = j?.conflicts ?? 0;
  for (;;) {
    if (j === undefined) j = await begin(t, table, n, options, conflicts);
    try {
      await stage(t, j, options);
      await publish(t, j);
      await options.onProgress?.({ phase: "published", table: t.name, fromVersion: j.fromVersion, rowsStaged: j.rowsStaged, rowsTotal: j.rowsTotal, fragmentsStaged: j.fragmentsStaged, attempt: j.conflicts });
      return await finish(t, table, j, options, resumed);
    } catch (e) {
      if (!(e instanceof Conflict)) throw describe(t, j, e);
      await dropStaging(t, j.runId);
      await dropJournal(p.journal);
      conflicts++;
      if (conflicts > retries) {
        throw new CommitError(
          "COMMIT_CONFLICT",
          `refragment of table ${t.name} stopped: another writer committed while it rewrote version ${j.fromVersion} (the table is now at version ${e.latest}), ${conflicts} time(s). Nothing of the refragment was committed; the table keeps every other writer's commits and its old layout. Run refragment again when the table is quiet, or raise conflictRetries`,
          { table: t.name, retryable: true },
        );
      }
      j = undefined;
    }
  }
}

/** Checks the table is free, pins its latest version, lists its indexes and writes the journal. */
async function begin(t: ResolvedTable, table: LanceNs.Table, n: number, options: RefragmentOptions, conflicts: number): Promise<Journal> {
  await table.checkoutLatest();
  const schema = await table.schema();
  const pending = await pendingCheckpoints(t.storeDir);
  const udfColumns = schema.fields.filter((f) => readBinding(f.metadata, t.name, f.name) !== undefined).map((f) => f.name);
  const losing = [...pending.entries()].filter(([c]) => udfColumns.includes(c));
  if (losing.length > 0 && options.force !== true) {
    throw new ConfigError(
      "TABLE_BUSY",
      `table ${t.name} has checkpointed work not yet committed for column(s) ${losing.map(([c, k]) => `${c} (${k} batch${k === 1 ? "" : "es"})`).join(", ")}; refragmenting changes fragment ids and would lose it. Finish the backfill first (lancet backfill --column ${losing[0]![0]}), or pass --force to discard it`,
      { table: t.name },
    );
  }
  const base = await readRawManifest(t.tableDir);
  const unknown = base.fields.find((f) => !KNOWN_MANIFEST_FIELDS.has(f.no));
  if (unknown) throw new ConfigError("TABLE_UNSUPPORTED", `table ${t.name}'s manifest has field ${unknown.no}, unknown to this version of Lancet; refragment cannot rewrite it safely`, { table: t.name });
  const pinned = await (await connectDb(t.dbDir)).openTable(t.name, undefined, { version: base.version } as never);
  const indexes = await listRecipes(t, pinned);
  const j: Journal = {
    format: 2,
    runId: randomUUID(),
    fromVersion: base.version,
    maxRowsPerFragment: n,
    rowsTotal: await pinned.countRows(),
    fragmentsBefore: base.fields.filter((f) => f.no === 2).length,
    indexes,
    startedAt: new Date().toISOString(),
    phase: "staging",
    rowsStaged: 0,
    fragmentsStaged: 0,
    conflicts,
  };
  const p = paths(t);
  if (!isRemote(p.dir)) await mkdir(p.dir, { recursive: true });
  await saveJournal(p.journal, j);
  return j;
}

/** Writes (or resumes writing) the staging table from the pinned version, one fragment per `add()`. */
async function stage(t: ResolvedTable, j: Journal, options: RefragmentOptions): Promise<void> {
  const p = paths(t);
  const dir = p.stage(j.runId);
  if (!isRemote(dir)) await mkdir(dir, { recursive: true });
  const sdb = await connectDb(dir);
  let staged: LanceNs.Table | undefined = (await sdb.tableNames()).includes("t") ? await sdb.openTable("t") : undefined;
  // The staging table is the truth: a crash may fall between an add() and the journal update.
  const done = staged === undefined ? 0 : await staged.countRows();
  if (done !== j.rowsStaged) {
    j.rowsStaged = done;
    j.fragmentsStaged = (await readRawManifest(path.join(dir, "t.lance"))).fields.filter((f) => f.no === 2).length;
    await saveJournal(p.journal, j);
  }
  if (j.rowsStaged >= j.rowsTotal) return;
  const base = await readRawManifest(t.tableDir, j.fromVersion);
  const format = formatVersionOf(base);
  const source = await (await connectDb(t.dbDir)).openTable(t.name, undefined, { version: j.fromVersion } as never);
  const schema = await source.schema();
  const names = schema.fields.map((f) => f.name);
  const n = j.maxRowsPerFragment;
  let buffered: ArrowNs.RecordBatch[] = [];
  let rows = 0;
  const flush = async (): Promise<void> => {
    if (rows === 0) return;
    const data = new arrow.Table(schema, buffered.map((b) => new arrow.RecordBatch(schema, b.data)));
    if (staged === undefined) staged = await sdb.createTable("t", data as never, { storageOptions: { new_table_data_storage_version: format } } as never);
    else await staged.add(data as never);
    j.rowsStaged += rows;
    j.fragmentsStaged++;
    buffered = [];
    rows = 0;
    await saveJournal(p.journal, j);
    await options.onProgress?.({ phase: "staging", table: t.name, fromVersion: j.fromVersion, rowsStaged: j.rowsStaged, rowsTotal: j.rowsTotal, fragmentsStaged: j.fragmentsStaged, attempt: j.conflicts });
    const latest = await latestVersion(t);
    if (latest !== j.fromVersion) throw new Conflict(latest);
    failpoint("refragment.mid-rewrite");
  };
  let query = source.query().select(names);
  if (j.rowsStaged > 0) query = query.offset(j.rowsStaged);
  for await (const batch of query as AsyncIterable<ArrowNs.RecordBatch>) {
    for (let off = 0; off < batch.numRows; ) {
      const take = Math.min(n - rows, batch.numRows - off);
      buffered.push(batch.slice(off, off + take));
      rows += take;
      off += take;
      if (rows === n) await flush();
    }
  }
  await flush();
  if (j.rowsStaged !== j.rowsTotal) {
    throw new CommitError("COMMIT_FAILED", `refragment of table ${t.name} staged ${j.rowsStaged} rows of version ${j.fromVersion}, which has ${j.rowsTotal}`, { table: t.name });
  }
}

/** Publishes the staged fragments as the table's next version, only if that is version V+1. */
async function publish(t: ResolvedTable, j: Journal): Promise<void> {
  const p = paths(t);
  const remote = isRemote(t.tableDir);
  const base = await readRawManifest(t.tableDir);
  if (base.version !== j.fromVersion) throw new Conflict(base.version);
  const stageDir = path.join(p.stage(j.runId), "t.lance");
  const tm = j.rowsTotal === 0 ? undefined : await readRawManifest(stageDir);
  // Field ids: the staged table numbered its fields afresh; keep the table's own, column by column.
  const targetDefs = fieldDefs(base.fields);
  const idMap = new Map<number, number>();
  if (tm) {
    const stagedDefs = fieldDefs(tm.fields);
    for (const top of targetDefs.filter((f) => f.parentId === -1)) {
      const want = columnFields(targetDefs, top.name);
      const got = columnFields(stagedDefs, top.name);
      if (got.length !== want.length || got.some((g, i) => g.logicalType !== want[i]!.logicalType)) {
        throw new CommitError("COMMIT_FAILED", `refragment of table ${t.name}: the staged column ${top.name} has types (${got.map((g) => g.logicalType).join(", ")}), the table's are (${want.map((w) => w.logicalType).join(", ")})`, { table: t.name });
      }
      got.forEach((g, i) => idMap.set(g.id, want[i]!.id));
    }
  }
  const format = formatVersionOf(base);
  const [major, minor] = format.split(".").map(Number);
  const stable = hasStableRowIdsFlag(base.fields);
  const version = base.version + 1;
  const maxBefore = base.fields.some((f) => f.no === 11) ? intOf(base.fields, 11) : Math.max(-1, ...base.fields.filter((f) => f.no === 2).map((f) => intOf(decodeMessage(f.bytes), 1)));
  let nextRowId = intOf(base.fields, 14);
  const txnId = randomUUID();
  // Every staged data file and the fresh name it takes in the table's data/ folder, checked first.
  const staged = (tm?.fields.filter((x) => x.no === 2) ?? []).map((f) => {
    const fr = decodeMessage(f.bytes);
    const odd = fr.find((x) => ![1, 2, 4].includes(x.no));
    if (odd) throw new CommitError("COMMIT_FAILED", `refragment of table ${t.name}: a staged fragment has field ${odd.no}, which refragment does not carry`, { table: t.name });
    const files = fr.filter((x) => x.no === 2).map((raw) => {
      const d = parseDataFile(raw.bytes);
      if (d.fileMajor !== major || d.fileMinor !== minor) throw new CommitError("COMMIT_FAILED", `refragment of table ${t.name}: a staged data file has version ${d.fileMajor}.${d.fileMinor}, the table ${format}`, { table: t.name });
      if (d.fields.some((x) => x >= 0 && !idMap.has(x))) throw new CommitError("COMMIT_FAILED", `refragment of table ${t.name}: a staged data file lists fields ${d.fields.join(", ")} the table does not have`, { table: t.name });
      return { d, name: `${randomUUID().replace(/-/g, "")}-refragment.lance` };
    });
    return { physicalRows: intOf(fr, 4), files };
  });
  const toPlace = staged.flatMap((f) => f.files);
  j.phase = "publishing";
  // Recorded before any file is placed, so a re-run after a crash finds every one it must remove.
  j.publish = { version, txnId, files: toPlace.map((x) => x.name) };
  await saveJournal(p.journal, j);
  const sizes = remote ? await copyIntoTable(t, stageDir, toPlace) : new Map<string, number>();
  if (!remote) {
    for (const { d, name } of toPlace) {
      const target = path.join(t.tableDir, "data", name);
      // A hard link keeps the staging table whole until the swap is published (a resume needs it).
      await link(path.join(stageDir, "data", d.path), target);
      sizes.set(name, (await stat(target)).size);
    }
  }
  const frags: Uint8Array[] = [];
  for (const [i, { physicalRows, files: planned }] of staged.entries()) {
    const files: Uint8Array[] = [];
    for (const { d, name } of planned) {
      files.push(bytesField(2, concat([bytesField(1, name), packedField(2, d.fields.map((x) => (x >= 0 ? idMap.get(x)! : x))), packedField(3, d.columnIndices), intField(4, d.fileMajor), intField(5, d.fileMinor), intField(6, sizes.get(name)!)])));
    }
    const parts = [intField(1, maxBefore + 1 + i), ...files, intField(4, physicalRows)];
    if (stable) {
      // As Lance's own Overwrite does: row ids continue from the table's next id, and every row is
      // created and last updated at this version.
      parts.push(bytesField(5, bytesField(1, bytesField(1, concat([intField(1, nextRowId), intField(2, nextRowId + physicalRows)])))));
      parts.push(bytesField(7, runsAt(physicalRows, version)), bytesField(9, runsAt(physicalRows, version)));
      nextRowId += physicalRows;
    }
    frags.push(concat(parts));
  }
  const txnName = `${base.version}-${txnId}.txn`;
  const schemaMetadata = base.fields.filter((f) => f.no === 5).map((f) => bytesField(3, f.bytes));
  const overwrite = concat([...frags.map((f) => bytesField(1, f)), ...base.fields.filter((f) => f.no === 1).map((f) => bytesField(2, f.bytes)), ...schemaMetadata]);
  const txn = concat([intField(1, base.version), bytesField(2, txnId), bytesField(102, overwrite)]);
  const maxAfter = Math.max(maxBefore, maxBefore + frags.length);
  const bytes = manifestFileBytes(base, null, txn, (txnAt) => {
    const parts: Uint8Array[] = [];
    let placed = false;
    const place = (): void => {
      if (placed) return;
      placed = true;
      for (const f of frags) parts.push(bytesField(2, f));
    };
    for (const f of base.fields) {
      switch (f.no) {
        case 1:
          parts.push(f.raw);
          break;
        case 2:
          place();
          break;
        case 3:
          place();
          parts.push(intField(3, version));
          break;
        case 4:
        case 6:
        case 8:
        case 11:
        case 12:
        case 14:
        case 21:
          break; // rewritten below, or not inherited (version aux data, tag, index section)
        case 7:
          parts.push(timestampField());
          break;
        default:
          parts.push(f.raw);
      }
    }
    place();
    if (maxAfter >= 0) parts.push(intField(11, maxAfter));
    parts.push(bytesField(12, txnName));
    if (stable || base.fields.some((f) => f.no === 14)) parts.push(intField(14, nextRowId));
    parts.push(intField(21, txnAt));
    return parts;
  });
  // Verified before it is published: read back from a shadow that holds the same files (links to the
  // table's on a filesystem; server-side copies of the same staged files on object storage).
  const fileName = manifestName(version, base.v2Names);
  const read = (shadowDb: string): Promise<void> => readBack(shadowDb, t.name, j, version);
  try {
    await (remote ? withRemoteShadow(t, j.runId, stageDir, toPlace, fileName, bytes, read) : withShadowVersion(t, fileName, bytes, read));
  } catch (e) {
    await dropPlaced(t, j.publish.files);
    delete j.publish;
    j.phase = "staging";
    await saveJournal(p.journal, j);
    throw new CommitError("COMMIT_FAILED", `refragment of table ${t.name}: the rewritten version did not read back from a shadow copy (${(e as Error).message}); nothing was published: the table is unchanged at version ${base.version}. Please report this`, { table: t.name, cause: e });
  }
  // Compare-and-swap: link() on a filesystem, put-if-absent on object storage.
  const published = await publishVersion(t.tableDir, base.v2Names, version, txnName, txn, bytes);
  if (!published) {
    await dropPlaced(t, j.publish.files);
    throw new Conflict(await latestVersion(t));
  }
  j.phase = "published";
  await saveJournal(p.journal, j);
}

/** A staged data file and the name it takes in the table. */
interface Placed {
  readonly d: DataFileInfo;
  readonly name: string;
}

/** Copies `files` from `fromDir/data/` to `toDir/data/` under their new names (object storage, server-side); returns each one's size by name. */
async function copyFiles(t: ResolvedTable, fromDir: string, toDir: string, files: readonly Placed[]): Promise<Map<string, number>> {
  const copies = files.map(({ d, name }) => ({ from: `${canonical(fromDir)}/data/${d.path}`, to: `${canonical(toDir)}/data/${name}` }));
  const sizes = await copyObjects(t.dbDir, copies);
  return new Map(files.map(({ name }, i) => [name, sizes.get(canonical(copies[i]!.to))!]));
}

/** The swap's data files on object storage: the staged files copied into the table's data/ folder (no manifest refers to them yet). */
function copyIntoTable(t: ResolvedTable, stageDir: string, files: readonly Placed[]): Promise<Map<string, number>> {
  return copyFiles(t, stageDir, t.tableDir, files);
}

/**
 * Object storage's shadow (`shadow.ts` links files; S3 cannot): a table `NAME.lance` under
 * `refragment/shadow-ID/` in the bucket whose only version is `manifest` and whose data/ folder holds
 * server-side copies of the same staged files under the names the manifest gives them, opened by
 * LanceDB through `read`; removed afterwards. Nobody else reads or writes that prefix.
 */
async function withRemoteShadow(t: ResolvedTable, runId: string, stageDir: string, files: readonly Placed[], fileName: string, manifest: Uint8Array, read: (shadowDb: string) => Promise<void>): Promise<void> {
  const shadowDb = `${canonical(paths(t).dir)}/shadow-${runId}-${randomUUID()}`;
  const copies = (shadowTable: string): ObjectCopy[] => files.map(({ d, name }) => ({ from: `${canonical(stageDir)}/data/${d.path}`, to: `${shadowTable}/data/${name}` }));
  await withBucketShadow(t, shadowDb, `${t.name}.lance`, copies, fileName, manifest, read);
}

/** Whether the journal's swap was published (its version's manifest names the swap's transaction). */
async function wasPublished(t: ResolvedTable, j: Journal): Promise<boolean> {
  if (j.publish === undefined) return false;
  if (!(await listManifestFiles(t.tableDir)).has(j.publish.version)) return false;
  const m = await readRawManifest(t.tableDir, j.publish.version);
  const txn = m.fields.find((f) => f.no === 12);
  return txn !== undefined && str(txn).includes(j.publish.txnId);
}

/** Reads version `version` of the rewrite from `dbDir`: the row count, and the first and last row of every new fragment. */
async function readBack(dbDir: string, name: string, j: Journal, version: number): Promise<void> {
  const table = await (await connectDb(dbDir)).openTable(name, undefined, { version } as never);
  const count = await table.countRows();
  if (count !== j.rowsTotal) throw new Error(`it counts ${count} rows, version ${j.fromVersion} had ${j.rowsTotal}`);
  const names = (await table.schema()).fields.map((f) => f.name);
  // The first and last row of each new fragment: every file is opened and decoded.
  for (let at = 0; at < count; at += j.maxRowsPerFragment) {
    for (const off of [at, Math.min(count, at + j.maxRowsPerFragment) - 1]) {
      const got = await table.query().select(names).offset(off).limit(1).toArrow();
      if (got.numRows !== 1) throw new Error(`row ${off} does not read back`);
    }
  }
}

/** After the swap: creates the indexes again, drops the staging, the journal and stale checkpoints. */
async function finish(t: ResolvedTable, table: LanceNs.Table, j: Journal, options: RefragmentOptions, resumed: boolean): Promise<RefragmentResult> {
  const p = paths(t);
  const swapVersion = j.publish?.version ?? j.fromVersion;
  const created: string[] = [];
  try {
    await table.checkoutLatest();
    const have = new Set((await table.listIndices()).map((x) => x.name));
    for (const r of j.indexes) {
      if (have.has(r.name)) continue;
      await table.createIndex(r.columns[0]!, { config: indexConfig(r)!, name: r.name, replace: true });
      created.push(r.name);
      await options.onProgress?.({ phase: "indexed", table: t.name, fromVersion: j.fromVersion, rowsStaged: j.rowsStaged, rowsTotal: j.rowsTotal, fragmentsStaged: j.fragmentsStaged, attempt: j.conflicts });
    }
  } catch (e) {
    throw new BackfillError(
      isBackfillError(e) ? e.code : "COMMIT_FAILED",
      `refragment of table ${t.name} committed its new layout as version ${swapVersion} (all rows are there), but creating index ${j.indexes.find((r) => !created.includes(r.name))?.name ?? "?"} again failed (${(e as Error).message}); run refragment again to create the missing indexes (${p.journal} records them)`,
      { table: t.name, cause: e, retryable: true },
    );
  }
  // The old fragments are gone: their checkpoints can never be used again.
  await removeAll(path.join(t.storeDir, "ckp"));
  await dropStaging(t, j.runId);
  await dropJournal(p.journal);
  await table.checkoutLatest();
  const after = await readRawManifest(t.tableDir);
  return {
    table: t.name,
    rows: j.rowsTotal,
    fragmentsBefore: j.fragmentsBefore,
    fragmentsAfter: after.fields.filter((f) => f.no === 2).length,
    fromVersion: j.fromVersion,
    toVersion: after.version,
    swapVersion,
    indexes: j.indexes.map((r) => r.name),
    resumed,
    conflicts: j.conflicts,
  };
}

/** The error of a rewrite that stopped part-way, saying what state the table is in and how to go on. */
function describe(t: ResolvedTable, j: Journal, e: unknown): unknown {
  if (isBackfillError(e) && (e.code === "TABLE_BUSY" || e.code === "TABLE_UNSUPPORTED" || e.code === "CONFIG_INVALID")) return e;
  if (isBackfillError(e) && e.context.table === t.name && /^refragment of table/.test(e.message)) return e;
  const why = (e as Error)?.message ?? String(e);
  const state =
    j.phase === "published"
      ? `the new layout is committed (version ${j.publish?.version}); its indexes may be missing`
      : j.phase === "publishing"
        ? `the swap to the new layout may or may not have been published (version ${j.publish?.version})`
        : `the table is unchanged at version ${j.fromVersion} (nothing was committed to it); ${j.fragmentsStaged} new fragment(s) with ${j.rowsStaged} of ${j.rowsTotal} rows are staged in ${paths(t).stage(j.runId)}`;
  return new BackfillError(isBackfillError(e) ? e.code : "COMMIT_FAILED", `refragment of table ${t.name} stopped (${why}): ${state}. Run refragment again to finish it (it resumes from ${paths(t).journal}; if the table changed meanwhile it starts over from the latest version)`, {
    table: t.name,
    cause: e,
    retryable: true,
  });
}
