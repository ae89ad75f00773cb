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
