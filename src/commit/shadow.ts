/**
 * Opening a hand-written version before it is published. The manifest goes into a *shadow* table
 * directory in the Lancet store whose every other entry (data, deletion and index files,
 * transactions) is a link to the table's own, so LanceDB reads exactly what the table would hold
 * once the manifest is linked into `_versions/` — without anyone else seeing it. The graft and
 * `refragment` read their staged versions back this way and publish only what reads back.
 */
import { randomUUID } from "node:crypto";
import { mkdir, readdir, rm, symlink, writeFile } from "node:fs/promises";
import * as path from "node:path";
import { canonical, removeAll, storeAt } from "../storage/location.ts";
import type { ResolvedTable } from "../table.ts";

/**
 * Calls `read` with a database directory whose table `t.name` has `manifest` (named `fileName`) as
 * its only, so latest, version; removes the shadow afterwards (links only, never the table's files).
 */
export async function withShadowVersion<T>(t: ResolvedTable, fileName: string, manifest: Uint8Array, read: (shadowDbDir: string) => Promise<T>): Promise<T> {
  const shadowDb = path.join(t.storeDir, "tmp", `shadow-${randomUUID()}`);
  const shadowTable = path.join(shadowDb, path.basename(t.tableDir));
  try {
    await mkdir(path.join(shadowTable, "_versions"), { recursive: true });
    for (const entry of await readdir(t.tableDir)) {
      if (entry === "_versions" || entry === "latest_version_hint.json") continue;
      await symlink(path.join(t.tableDir, entry), path.join(shadowTable, entry));
    }
    await writeFile(path.join(shadowTable, "_versions", fileName), manifest);
    return await read(shadowDb);
  } finally {
    await rm(shadowDb, { recursive: true, force: true }).catch(() => {});
  }
}

/** One server-side copy within a database on object storage: from one location to another (full URIs or `s3:/` spellings). */
export interface ObjectCopy {
  readonly from: string;
  readonly to: string;
}

/** Server-side copies this many at a time. */
const COPY_CONCURRENCY = 8;

/**
 * Copies objects within the database at `dbDir` (on S3 a server-side `CopyObject` each, at most
 * {@link COPY_CONCURRENCY} at a time) and returns each copy's size by its `to` location (canonical).
 * Every copy in flight has ended before this returns or throws, so a cleanup that follows a failure
 * never races a copy still landing. Targets are written like a PUT: callers copy to fresh, unique
 * names nobody else writes.
 */
export async function copyObjects(dbDir: string, copies: readonly ObjectCopy[]): Promise<Map<string, number>> {
  const db = storeAt(dbDir);
  const root = canonical(dbDir);
  const key = (loc: string): string => {
    const c = canonical(loc);
    if (!c.startsWith(`${root}/`)) throw new Error(`${c} is not inside the database ${root}`);
    return c.slice(root.length + 1);
  };
  const sizes = new Map<string, number>();
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (!failed && next < copies.length) {
      const { from, to } = copies[next++]!;
      try {
        sizes.set(canonical(to), await db.copy(key(from), key(to)));
      } catch (e) {
        failed = true;
        throw e;
      }
    }
  };
  const settled = await Promise.allSettled(Array.from({ length: Math.min(COPY_CONCURRENCY, copies.length) }, worker));
  const failure = settled.find((r) => r.status === "rejected");
  if (failure) throw failure.reason;
  return sizes;
}

/**
 * Object storage's shadow ({@link withShadowVersion} links files; S3 cannot): the table
 * `tableName` (e.g. `t.lance`) under `shadowDb` — a fresh prefix in the Lancet store that nobody else
 * reads or writes — whose only version is `manifest` (named `fileName`, written with put-if-absent)
 * and whose other objects are server-side `copies` of the files that version must read, under the
 * names the manifest gives them; opened by LanceDB through `read`, then removed. Shared by the graft
 * and `refragment`.
 */
export async function withBucketShadow<T>(t: ResolvedTable, shadowDb: string, tableName: string, copies: (shadowTable: string) => readonly ObjectCopy[], fileName: string, manifest: Uint8Array, read: (shadowDbDir: string) => Promise<T>): Promise<T> {
  const shadowTable = `${canonical(shadowDb)}/${tableName}`;
  try {
    await copyObjects(t.dbDir, copies(shadowTable));
    if (!(await storeAt(shadowTable).putIfAbsent(`_versions/${fileName}`, manifest))) throw new Error(`the shadow ${shadowTable} has a manifest ${fileName} already`);
    return await read(canonical(shadowDb));
  } finally {
    await removeAll(shadowDb).catch(() => {});
  }
}
