/** File helpers the checkpoint store and fragment files share. */
import { randomUUID } from "node:crypto";
import { mkdir, open, readdir, rename, writeFile } from "node:fs/promises";
import * as path from "node:path";

/** Temporary file, fsync (unless `sync` is false), rename: a reader sees the whole file or none. */
export async function atomicWrite(file: string, data: Uint8Array | string, sync = true): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${randomUUID()}.tmp`;
  if (sync) {
    const fh = await open(tmp, "w");
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
  } else await writeFile(tmp, data);
  await rename(tmp, file);
}

/** A folder's entries; none when it does not exist. */
export async function listDir(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw e;
  }
}
