/** Test fixtures: temporary databases with real LanceDB tables. */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { arrow, lancedb } from "../src/arrow.ts";
import type { ArrowNs, LanceNs } from "../src/arrow.ts";

export const FIXTURES = fileURLToPath(new URL("./fixtures/", import.meta.url));
export const REPO = fileURLToPath(new URL("../", import.meta.url));
export const udfRef = (name: string, file = "udfs.ts"): string => `${path.join(FIXTURES, file)}#${name}`;

export interface TempDb extends AsyncDisposable {
  readonly dir: string;
  readonly db: LanceNs.Connection;
  /** A fresh handle (sees every commit) to a table. */
  open(name?: string): Promise<LanceNs.Table>;
}

export async function tempDb(): Promise<TempDb> {
  const dir = mkdtempSync(path.join(tmpdir(), "lancet-test-"));
  const db = await lancedb.connect(dir, { readConsistencyInterval: 0 });
  return {
    dir,
    db,
    open: async (name = "t") => (await lancedb.connect(dir)).openTable(name),
    async [Symbol.asyncDispose]() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Rows `start .. start+n-1`: id (int64), x (float64, null every 7th row), s (utf8, null every 5th row). */
export function rows(start: number, n: number): ArrowNs.Table {
  const schema = new arrow.Schema([
    new arrow.Field("id", new arrow.Int64(), false),
    new arrow.Field("x", new arrow.Float64(), true),
    new arrow.Field("s", new arrow.Utf8(), true),
  ]);
  const ids: bigint[] = [];
  const xs: (number | null)[] = [];
  const ss: (string | null)[] = [];
  for (let i = start; i < start + n; i++) {
    ids.push(BigInt(i));
    xs.push(i % 7 === 3 ? null : i * 0.5);
    ss.push(i % 5 === 2 ? null : `w${i} ${"ab".repeat(i % 4)}`.trim());
  }
  return new arrow.Table(schema, {
    id: arrow.vectorFromArray(ids, new arrow.Int64()),
    x: arrow.vectorFromArray(xs, new arrow.Float64()),
    s: arrow.vectorFromArray(ss, new arrow.Utf8()),
  });
}

/** Creates table `name` with `fragments` fragments of `perFragment` rows each. */
export async function makeTable(t: TempDb, fragments: number, perFragment: number, name = "t"): Promise<LanceNs.Table> {
  const table = await t.db.createTable(name, rows(0, perFragment));
  for (let f = 1; f < fragments; f++) await table.add(rows(f * perFragment, perFragment));
  return table;
}

/** All rows of a table ordered by id, as plain objects, selected columns only. */
export async function readAll(t: TempDb, columns: string[], name = "t"): Promise<Record<string, unknown>[]> {
  const table = await t.open(name);
  const data = await table.query().select([...columns, "_rowaddr"]).toArrow({ maxBatchLength: 65536 } as never);
  return data.toArray().map((r) => {
    const o = r.toJSON() as Record<string, unknown>;
    for (const k of Object.keys(o)) o[k] = plainValue(o[k]);
    return o;
  });
}

/** An Arrow value as plain JS, all the way down: structs as objects, lists as arrays; binary stays a Uint8Array. */
export function plainValue(v: unknown): unknown {
  if (v === null || typeof v !== "object" || v instanceof Uint8Array) return v;
  if (Array.isArray(v)) return v.map(plainValue);
  const json = typeof (v as { toJSON?: unknown }).toJSON === "function" ? (v as { toJSON(): unknown }).toJSON() : undefined;
  if (json !== undefined && !Array.isArray(json) && typeof json === "object" && json !== null) return Object.fromEntries(Object.entries(json).map(([k, x]) => [k, plainValue(x)]));
  if (typeof (v as { toArray?: unknown }).toArray === "function") return Array.from((v as { toArray(): ArrayLike<unknown> }).toArray(), plainValue);
  if (ArrayBuffer.isView(v)) return Array.from(v as unknown as ArrayLike<unknown>);
  return v;
}

/** Opens and reads every version of a table from a fresh connection; returns how many there are. */
export async function everyVersionReadable(t: TempDb, name = "t"): Promise<number> {
  const db = await lancedb.connect(t.dir);
  const versions = await (await db.openTable(name)).listVersions();
  for (const v of versions) {
    const pinned = await db.openTable(name, undefined, { version: v.version } as never);
    await pinned.countRows();
    await pinned.query().limit(5).toArray();
  }
  return versions.length;
}

/** Fragment ids and physical row counts, from the latest manifest. */
export async function fragmentLayout(t: TempDb, name = "t"): Promise<{ id: number; physicalRows: number }[]> {
  const { readManifest } = await import("../src/read/manifest.ts");
  return (await readManifest(path.join(t.dir, `${name}.lance`))).fragments.map((f) => ({ id: f.id, physicalRows: f.physicalRows }));
}

/** Rows already secured in a table's checkpoint store for `column`: committed fragments' rows plus checkpointed batches (and fragment files) of the others. */
export async function securedRows(storeDir: string, column: string): Promise<number> {
  const { existsSync, readdirSync, readFileSync } = await import("node:fs");
  const { fragmentFileRows } = await import("../src/checkpoint/fragment-file.ts");
  const ckp = path.join(storeDir, "ckp");
  const doneDir = path.join(ckp, "markers", column, "done");
  const done = new Map<number, number>();
  if (existsSync(doneDir)) {
    for (const f of readdirSync(doneDir)) {
      try {
        const m = JSON.parse(readFileSync(path.join(doneDir, f), "utf8")) as { fragmentId: number; rowsWritten: number };
        done.set(m.fragmentId, m.rowsWritten);
      } catch {
        // being written
      }
    }
  }
  let n = [...done.values()].reduce((a, b) => a + b, 0);
  const batches = path.join(ckp, "batches", column);
  if (existsSync(batches)) {
    for (const dir of readdirSync(batches)) {
      if (done.has(Number(dir.split("-")[0]))) continue;
      let files: string[] = [];
      try {
        files = readdirSync(path.join(batches, dir));
      } catch {
        continue; // deleted after its commit
      }
      // A fragment file (a whole-fragment task's column file): its rows are in its manifest.
      if (files.some((f) => /^file-\d+$/.test(f))) n += await fragmentFileRows(path.join(batches, dir)).catch(() => 0);
      for (const f of files) {
        if (!f.endsWith(".arrow")) continue;
        try {
          n += arrow.tableFromIPC(readFileSync(path.join(batches, dir, f))).numRows;
        } catch {
          // deleted after its commit
        }
      }
    }
  }
  return n;
}

/** The worker config a backfill of `column` (table `name`) would give its executor: for tests that drive an Executor directly. */
export async function workerConfigFor(t: TempDb, column: string, name = "t"): Promise<import("../src/exec/protocol.ts").WorkerConfig> {
  const { resolveTable } = await import("../src/table.ts");
  const { bindingBundlePath, readBinding } = await import("../src/udf/binding.ts");
  const rt = resolveTable({ db: t.dir, table: name });
  const field = (await (await t.open(name)).schema()).fields.find((f) => f.name === column)!;
  const b = readBinding(field.metadata, name, column)!;
  return {
    bundlePath: bindingBundlePath(rt, b),
    exportName: b.exportName,
    label: `${b.module}#${b.exportName}`,
    dbDir: rt.dbDir,
    table: name,
    column,
    dataType: b.dataType,
    inputs: b.inputs,
    checkpointRoot: path.join(rt.storeDir, "ckp"),
    intraApplierConcurrency: 1,
  };
}
