/**
 * Rewriting a table into more, smaller fragments. Each fragment has one serial writer, so a small
 * table whose UDF expands data (thumbnails, long generations) writes through one writer; splitting it
 * lets writers overlap each other and the UDF.
 *
 * LanceDB's Node SDK cannot set a file's row limit, so the rewrite is an overwrite with an empty table
 * of the same schema (field metadata — UDF bindings — included) followed by one append per fragment,
 * read from the version pinned at the start. Readers may see a partial table while it runs. The
 * starting version is recorded first (`DB/_lancet/NAME/refragment.json`): if the rewrite is
 * interrupted, the next `refragment` restores that version before starting again.
 */
import { existsSync } from "node:fs";
import { readFile, rm, writeFile, mkdir } from "node:fs/promises";
import * as path from "node:path";
import { arrow } from "../arrow.ts";
import type { ArrowNs } from "../arrow.ts";
import { ConfigError } from "../errors.ts";
import { listJobs } from "../jobs/api.ts";
import { readManifest } from "../read/manifest.ts";
import { openLanceTable, resolveTable, type TableRef } from "../table.ts";
import { readBinding } from "../udf/binding.ts";

export interface RefragmentOptions {
  /** Rows per fragment at most. */
  readonly maxRowsPerFragment: number;
  /** Discard uncommitted checkpoints of UDF columns instead of refusing. @default false */
  readonly force?: boolean;
}

export interface RefragmentResult {
  readonly table: string;
  readonly rows: number;
  readonly fragmentsBefore: number;
  readonly fragmentsAfter: number;
  readonly fromVersion: number;
  readonly toVersion: number;
}

/** Uncommitted checkpoint batches per column in the table's Lancet store. */
async function pendingCheckpoints(storeDir: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const root = path.join(storeDir, "ckp", "batches");
  if (!existsSync(root)) return out;
  const { readdir } = await import("node:fs/promises");
  for (const column of await readdir(root)) {
    let n = 0;
    for (const frag of await readdir(path.join(root, column))) n += (await readdir(path.join(root, column, frag))).filter((f) => f.endsWith(".arrow")).length;
    if (n > 0) out.set(column, n);
  }
  return out;
}

/**
 * Rewrites `ref` into fragments of at most `maxRowsPerFragment` rows, keeping every column, value and
 * field's metadata. Refuses while a backfill of the table runs, and when UDF columns have checkpointed
 * work not yet committed (it would be lost: fragment ids change), unless `force`.
 */
export async function refragment(ref: TableRef, options: RefragmentOptions): Promise<RefragmentResult> {
  const n = options?.maxRowsPerFragment;
  if (typeof n !== "number" || !Number.isInteger(n) || n < 1) {
    throw new ConfigError("CONFIG_INVALID", `options.maxRowsPerFragment must be a positive integer (got ${JSON.stringify(n)})`);
  }
  const t = resolveTable(ref);
  const { db, table } = await openLanceTable(t);
  const marker = path.join(t.storeDir, "refragment.json");
  if (existsSync(marker)) {
    // An earlier rewrite was interrupted: go back to where it started.
    const { fromVersion } = JSON.parse(await readFile(marker, "utf8")) as { fromVersion: number };
    await table.checkout(fromVersion);
    await table.restore();
    await table.checkoutLatest();
  }
  const running = (await listJobs(t.dbDir, { table: t.name })).filter((j) => j.status === "running" || j.status === "pending");
  if (running.length > 0) {
    throw new ConfigError("TABLE_BUSY", `table ${t.name} has a running backfill (job ${running[0]!.id}, column ${running[0]!.column}); wait for it or cancel it (lancet jobs cancel ${running[0]!.id}) before refragmenting`, { table: t.name });
  }
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
  const manifest = await readManifest(t.tableDir);
  const fromVersion = manifest.version;
  const total = await table.countRows();
  await mkdir(t.storeDir, { recursive: true });
  await writeFile(marker, JSON.stringify({ fromVersion, startedAt: new Date().toISOString() }));

  const source = await db.openTable(t.name, undefined, { version: fromVersion } as never);
  await db.createEmptyTable(t.name, schema, { mode: "overwrite" } as never);
  const target = await db.openTable(t.name);
  let buffered: ArrowNs.RecordBatch[] = [];
  let rows = 0;
  const flush = async (): Promise<void> => {
    if (rows === 0) return;
    await target.add(new arrow.Table(schema, buffered.map((b) => new arrow.RecordBatch(schema, b.data))) as never);
    buffered = [];
    rows = 0;
  };
  const names = schema.fields.map((f) => f.name);
  for await (const batch of source.query().select(names) as AsyncIterable<ArrowNs.RecordBatch>) {
    for (let off = 0; off < batch.numRows; ) {
      const take = Math.min(n - rows, batch.numRows - off);
      buffered.push(batch.slice(off, off + take));
      rows += take;
      off += take;
      if (rows === n) await flush();
    }
  }
  await flush();
  const after = await readManifest(t.tableDir);
  const count = await target.countRows();
  if (count !== total) {
    throw new ConfigError("INTERNAL", `refragment of table ${t.name} wrote ${count} rows, expected ${total}; run it again to restore version ${fromVersion} and retry`, { table: t.name });
  }
  // The old fragments are gone: their checkpoints can never be used again.
  await rm(path.join(t.storeDir, "ckp"), { recursive: true, force: true });
  await rm(marker, { force: true });
  return { table: t.name, rows: total, fragmentsBefore: manifest.fragments.length, fragmentsAfter: after.fragments.length, fromVersion, toVersion: after.version };
}

