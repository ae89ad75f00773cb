/**
 * Durable storage for computed batches and per-fragment completion markers. Everything is written
 * atomically (temporary file, fsync, rename), so a reader sees a whole checkpoint or none, whatever
 * process dies when. One interface, two implementations (file, memory), one conformance suite.
 */
import { readFile, rm, unlink } from "node:fs/promises";
import * as path from "node:path";
import { CheckpointError } from "../errors.ts";
import { isRemote, storeAt } from "../storage/location.ts";
import type { ObjectStore } from "../storage/object-store.ts";
import { atomicWrite, listDir } from "./files.ts";
import { fragmentFileRows } from "./fragment-file.ts";

/** Rows `[start, end)` of a fragment, counted in live rows from the fragment's start. */
export interface BatchRange {
  readonly start: number;
  readonly end: number;
  /** The rows are in the key's fragment file (`fragment-file.ts`), not an Arrow IPC batch. */
  readonly file?: true;
}

export interface CheckpointStore {
  /** Stores one computed batch (Arrow IPC bytes) under a fragment key. */
  putBatch(key: string, range: BatchRange, data: Uint8Array): Promise<void>;
  /** Ranges stored under a fragment key, sorted by start (a fragment file's rows as one range marked `file`). */
  listBatches(key: string): Promise<BatchRange[]>;
  getBatch(key: string, range: BatchRange): Promise<Uint8Array>;
  /** Removes every batch of a fragment key (after its fragment is committed). */
  deleteBatches(key: string): Promise<void>;
  /** Every key with stored batches under a column (keys made by `batchKey`, `"<column>/<fragment>-<digest>"`). */
  listBatchKeys(column: string): Promise<string[]>;
  /** Stores a small JSON marker. */
  putMarker(namespace: string, name: string, value: unknown): Promise<void>;
  listMarkers(namespace: string): Promise<{ name: string; value: unknown }[]>;
  deleteMarker(namespace: string, name: string): Promise<void>;
}

const RANGE_FILE = /^(\d+)-(\d+)\.arrow$/;

function safe(part: string): string {
  if (!/^[A-Za-z0-9_.\-/]+$/.test(part) || part.includes("..")) throw new CheckpointError(`invalid checkpoint key ${JSON.stringify(part)}`);
  return part;
}

/** Checkpoints as files under a root directory (local or any POSIX filesystem all workers share). */
export class FileCheckpointStore implements CheckpointStore {
  readonly root: string;
  constructor(root: string) {
    this.root = root;
  }

  async putBatch(key: string, range: BatchRange, data: Uint8Array): Promise<void> {
    try {
      await atomicWrite(path.join(this.batchDir(key), `${range.start}-${range.end}.arrow`), data);
    } catch (e) {
      throw new CheckpointError(`could not write checkpoint ${key} rows ${range.start}-${range.end - 1}: ${(e as Error).message}`, { cause: e, retryable: true });
    }
  }

  /** The directory of a fragment key's checkpoints (its batches, and its fragment file if any). */
  batchDir(key: string): string {
    return path.join(this.root, "batches", safe(key));
  }

  async listBatches(key: string): Promise<BatchRange[]> {
    const out: BatchRange[] = [];
    const names = await listDir(this.batchDir(key));
    if (names.some((n) => /^file-\d+$/.test(n))) {
      const rows = await fragmentFileRows(this.batchDir(key));
      if (rows > 0) out.push({ start: 0, end: rows, file: true });
    }
    for (const name of names) {
      const m = RANGE_FILE.exec(name);
      if (m) out.push({ start: Number(m[1]), end: Number(m[2]) });
    }
    return out.sort((a, b) => a.start - b.start || a.end - b.end);
  }

  async getBatch(key: string, range: BatchRange): Promise<Uint8Array> {
    if (range.file) throw new CheckpointError(`rows ${range.start}-${range.end - 1} of ${key} are in its fragment file, not a batch`);
    return readFile(path.join(this.batchDir(key), `${range.start}-${range.end}.arrow`));
  }

  async deleteBatches(key: string): Promise<void> {
    await rm(this.batchDir(key), { recursive: true, force: true });
  }

  async listBatchKeys(column: string): Promise<string[]> {
    return (await listDir(this.batchDir(column))).filter((name) => !name.endsWith(".tmp")).map((name) => `${column}/${name}`).sort();
  }

  async putMarker(namespace: string, name: string, value: unknown): Promise<void> {
    await atomicWrite(path.join(this.root, "markers", safe(namespace), `${safe(name)}.json`), JSON.stringify(value));
  }

  async listMarkers(namespace: string): Promise<{ name: string; value: unknown }[]> {
    const dir = path.join(this.root, "markers", safe(namespace));
    const out: { name: string; value: unknown }[] = [];
    for (const f of await listDir(dir)) {
      if (!f.endsWith(".json")) continue;
      try {
        out.push({ name: f.slice(0, -5), value: JSON.parse(await readFile(path.join(dir, f), "utf8")) });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
      }
    }
    return out;
  }

  async deleteMarker(namespace: string, name: string): Promise<void> {
    await unlink(path.join(this.root, "markers", safe(namespace), `${safe(name)}.json`)).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== "ENOENT") throw e;
    });
  }
}

/**
 * Checkpoints in an object store (S3), laid out as {@link FileCheckpointStore} lays out its files:
 * one object per batch (`batches/<key>/<start>-<end>.arrow`; adaptive batch sizes keep them few and
 * large) and one per marker. A put replaces a whole object, so a reader sees a whole checkpoint or
 * none. No fragment files here: they are LanceDB tables the graft links, a local-filesystem path.
 */
export class ObjectCheckpointStore implements CheckpointStore {
  private readonly store: ObjectStore;
  constructor(store: ObjectStore) {
    this.store = store;
  }

  get root(): string {
    return this.store.uri;
  }

  async putBatch(key: string, range: BatchRange, data: Uint8Array): Promise<void> {
    try {
      await this.store.put(`batches/${safe(key)}/${range.start}-${range.end}.arrow`, data);
    } catch (e) {
      throw new CheckpointError(`could not write checkpoint ${key} rows ${range.start}-${range.end - 1} to ${this.store.uri}: ${(e as Error).message}`, { cause: e, retryable: true });
    }
  }

  async listBatches(key: string): Promise<BatchRange[]> {
    const prefix = `batches/${safe(key)}/`;
    const out: BatchRange[] = [];
    for (const k of await this.store.list(prefix)) {
      const m = RANGE_FILE.exec(k.slice(prefix.length));
      if (m) out.push({ start: Number(m[1]), end: Number(m[2]) });
    }
    return out.sort((a, b) => a.start - b.start || a.end - b.end);
  }

  async getBatch(key: string, range: BatchRange): Promise<Uint8Array> {
    const data = await this.store.get(`batches/${safe(key)}/${range.start}-${range.end}.arrow`);
    if (data === undefined) throw new CheckpointError(`checkpoint ${key} rows ${range.start}-${range.end - 1} does not exist in ${this.store.uri}`);
    return data;
  }

  async deleteBatches(key: string): Promise<void> {
    await this.store.deletePrefix(`batches/${safe(key)}/`);
  }

  async listBatchKeys(column: string): Promise<string[]> {
    const prefix = `batches/${safe(column)}/`;
    const keys = new Set<string>();
    for (const k of await this.store.list(prefix)) keys.add(`${column}/${k.slice(prefix.length).split("/")[0]}`);
    return [...keys].sort();
  }

  async putMarker(namespace: string, name: string, value: unknown): Promise<void> {
    await this.store.put(`markers/${safe(namespace)}/${safe(name)}.json`, JSON.stringify(value));
  }

  async listMarkers(namespace: string): Promise<{ name: string; value: unknown }[]> {
    const prefix = `markers/${safe(namespace)}/`;
    const names = (await this.store.list(prefix)).map((k) => k.slice(prefix.length)).filter((n) => !n.includes("/") && n.endsWith(".json"));
    const out = await Promise.all(
      names.map(async (n) => {
        const data = await this.store.get(`${prefix}${n}`);
        return data === undefined ? undefined : { name: n.slice(0, -5), value: JSON.parse(new TextDecoder().decode(data)) as unknown };
      }),
    );
    return out.filter((x) => x !== undefined);
  }

  async deleteMarker(namespace: string, name: string): Promise<void> {
    await this.store.delete(`markers/${safe(namespace)}/${safe(name)}.json`);
  }
}

/** The checkpoint store at `root`: files for a local directory, objects for an object-storage prefix. */
export function checkpointStoreAt(root: string): FileCheckpointStore | ObjectCheckpointStore {
  return isRemote(root) ? new ObjectCheckpointStore(storeAt(root)) : new FileCheckpointStore(root);
}

/** Checkpoints in memory: for tests and single-process experiments. */
export class MemoryCheckpointStore implements CheckpointStore {
  private readonly batches = new Map<string, Map<string, Uint8Array>>();
  private readonly markers = new Map<string, Map<string, string>>();

  async putBatch(key: string, range: BatchRange, data: Uint8Array): Promise<void> {
    safe(key);
    let m = this.batches.get(key);
    if (!m) this.batches.set(key, (m = new Map()));
    m.set(`${range.start}-${range.end}`, data.slice());
  }
  async listBatches(key: string): Promise<BatchRange[]> {
    return [...(this.batches.get(key)?.keys() ?? [])]
      .map((k) => {
        const [s, e] = k.split("-").map(Number);
        return { start: s!, end: e! };
      })
      .sort((a, b) => a.start - b.start || a.end - b.end);
  }
  async getBatch(key: string, range: BatchRange): Promise<Uint8Array> {
    const d = this.batches.get(key)?.get(`${range.start}-${range.end}`);
    if (!d) throw new CheckpointError(`checkpoint ${key} rows ${range.start}-${range.end - 1} does not exist`);
    return d;
  }
  async deleteBatches(key: string): Promise<void> {
    this.batches.delete(key);
  }
  async listBatchKeys(column: string): Promise<string[]> {
    return [...this.batches.keys()].filter((k) => k.startsWith(`${safe(column)}/`)).sort();
  }
  async putMarker(namespace: string, name: string, value: unknown): Promise<void> {
    safe(namespace);
    safe(name);
    let m = this.markers.get(namespace);
    if (!m) this.markers.set(namespace, (m = new Map()));
    m.set(name, JSON.stringify(value));
  }
  async listMarkers(namespace: string): Promise<{ name: string; value: unknown }[]> {
    return [...(this.markers.get(namespace)?.entries() ?? [])].map(([name, v]) => ({ name, value: JSON.parse(v) as unknown }));
  }
  async deleteMarker(namespace: string, name: string): Promise<void> {
    this.markers.get(namespace)?.delete(name);
  }
}
