/**
 * Where a database lives: a local (or POSIX) directory, or object storage (`s3://bucket/prefix`).
 *
 * Lancet passes locations around as strings and builds the ones beside a table with `path.join`
 * (`DB/_lancet/NAME/ckp`…), which turns `s3://b/p` into `s3:/b/p/...`: every function here accepts
 * both spellings and {@link canonical} gives the real URI back. The storage options of a database
 * (endpoint, region, credentials) are registered once, when its table is resolved, and found again
 * from any location inside it — so no secret travels in a job record, a task or a log line.
 */
import { rm } from "node:fs/promises";
import * as path from "node:path";
import { lancedb, type LanceNs } from "../arrow.ts";
import { ConfigError } from "../errors.ts";
import { resolveStorageOptions, storeFor, type ObjectStore, type StorageOptions } from "./object-store.ts";

const REMOTE = /^([a-z][a-z0-9+.-]*):\/\/?/i;

/** Whether `p` names object storage (`s3://…`, or `s3:/…` as `path.join` leaves it). */
export function isRemote(p: string): boolean {
  const m = REMOTE.exec(p);
  return m !== null && m[1]!.length > 1; // a Windows drive letter is not a scheme
}

/** The URI a location stands for: `s3:/b/x` → `s3://b/x`; local paths unchanged. */
export function canonical(p: string): string {
  if (!isRemote(p)) return p;
  return p.replace(REMOTE, (_, scheme: string) => `${scheme.toLowerCase()}://`).replace(/\/+$/, "");
}

/** A database's location as Lancet's readers name it: the canonical URI, or the absolute directory. */
export function dbLocation(db: string): string {
  return isRemote(db) ? canonical(db) : path.resolve(db);
}

/** Storage options registered per database URI (longest prefix wins). */
const registry = new Map<string, StorageOptions>();

/** Records the storage options of the database at `dbUri` (object storage only; local needs none). */
export function registerStorage(dbUri: string, options: StorageOptions): void {
  if (isRemote(dbUri)) registry.set(canonical(dbUri), options);
}

/**
 * Sets the storage options of a database on object storage for every later call of this process
 * that names it by its URI alone (`listJobs(db)`, `createView(db, …)`, `refreshView(db, …)`), over
 * those of the AWS_* environment. A `TableRef`'s `storageOptions` do the same for its database.
 */
export function useStorage(db: string, options: Readonly<Record<string, string>>): void {
  if (!isRemote(db)) throw new ConfigError("CONFIG_INVALID", `useStorage() is for a database on object storage (s3://bucket/prefix); ${JSON.stringify(db)} is a directory`);
  registerStorage(canonical(db), resolveStorageOptions(options, process.env));
}

/** Whether storage options were registered for exactly this database. */
export function storageRegistered(dbUri: string): boolean {
  return registry.has(canonical(dbUri));
}

/** The storage options for a location inside a registered database, else those of the environment. */
export function storageOptionsFor(p: string): StorageOptions | undefined {
  if (!isRemote(p)) return undefined;
  const uri = canonical(p);
  let best: string | undefined;
  for (const k of registry.keys()) if ((uri === k || uri.startsWith(`${k}/`)) && (best === undefined || k.length > best.length)) best = k;
  return best !== undefined ? registry.get(best) : (defaults ?? resolveStorageOptions({}, process.env));
}

/** Storage options for every database on object storage this process has no options of its own for (a `lancet worker`'s --storage-option). */
let defaults: StorageOptions | undefined;

/** Sets {@link defaults}: options (over the AWS_* environment) for any object-storage database without registered ones. */
export function useDefaultStorage(given: Readonly<Record<string, string>>): void {
  defaults = resolveStorageOptions(given, process.env);
}

/** A LanceDB connection to the database at `uri`, with its storage options. */
export async function connectDb(uri: string, options: Partial<LanceNs.ConnectionOptions> = {}): Promise<LanceNs.Connection> {
  const storageOptions = storageOptionsFor(uri);
  return lancedb.connect(canonical(uri), { ...options, ...(storageOptions ? { storageOptions: { ...storageOptions } } : {}) });
}

/** One store per bucket and options: every prefix of it is a child, so they share one client (and its connections). */
const buckets = new Map<string, ObjectStore>();

/** The object store rooted at `p` (a local directory or an object-storage prefix). */
export function storeAt(p: string): ObjectStore {
  const uri = canonical(p);
  if (!isRemote(uri)) return storeFor(uri);
  const options = storageOptionsFor(p);
  const m = /^([a-z][a-z0-9+.-]*:\/\/[^/]+)(?:\/(.+))?$/i.exec(uri)!;
  const key = `${m[1]}\n${JSON.stringify(options)}`;
  let bucket = buckets.get(key);
  if (!bucket) buckets.set(key, (bucket = storeFor(m[1]!, options)));
  return m[2] ? bucket.child(m[2]) : bucket;
}

/** The variable that hands a worker process the storage options of its database (see {@link storageEnv}). */
const STORAGE_ENV = "LANCET_STORAGE_OPTIONS";

/**
 * The environment a worker process of the database at `dbUri` needs to reach it: its storage options
 * (JSON), none for a local database. A worker process reads the table, so it holds these credentials;
 * they never travel in a task, a job record or a queue.
 */
export function storageEnv(dbUri: string): Record<string, string> {
  const o = storageOptionsFor(dbUri);
  return o === undefined ? {} : { [STORAGE_ENV]: JSON.stringify(o) };
}

/** In a worker process: registers the storage options its parent handed over ({@link storageEnv}) for `dbUri`. */
export function registerStorageFromEnv(dbUri: string, env: NodeJS.ProcessEnv = process.env): void {
  if (!isRemote(dbUri)) return;
  const given = env[STORAGE_ENV];
  registerStorage(dbUri, given ? (JSON.parse(given) as StorageOptions) : resolveStorageOptions({}, env));
}

/** Removes a folder (or an object-storage prefix) and everything in it. */
export async function removeAll(p: string): Promise<void> {
  if (isRemote(p)) await storeAt(p).deletePrefix("");
  else await rm(p, { recursive: true, force: true });
}
