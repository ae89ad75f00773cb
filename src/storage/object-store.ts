/**
 * Where Lancet keeps its own files (checkpoints, markers, locks, UDF bundles): a local or shared POSIX
 * directory ({@link LocalStore}) or an S3 bucket, AWS or any S3-compatible server ({@link S3Store}).
 * One interface, two implementations, one conformance suite (`test/integration/object-store.test.ts`).
 *
 * Semantics both stores share:
 * - Keys are relative paths: `"a/b/c.json"`; no leading `/`, no empty, `.` or `..` segments, no
 *   backslashes or control characters, and not a name of the form `<name>.<uuid>.tmp` (the local
 *   store's temporary files). Invalid keys are refused with `ConfigError("CONFIG_INVALID")`.
 * - `put` is atomic: a reader sees the old bytes or the new ones, never a part.
 * - `putIfAbsent` is the commit primitive (locks, markers, manifests): among concurrent callers on one
 *   key exactly one gets `true`. On S3 it is `PutObject` with `If-None-Match: *`; a plain PUT there
 *   would be a lost-update bug (see `shared/reference/object-storage.md`).
 * - `list(prefix)` and `deletePrefix(prefix)` take a *string* prefix, as S3 does: `"a/"` means the
 *   folder `a`, `"a"` means every key starting with `a` (`a`, `ab`, `a/x`). `""` means everything.
 *   Keys come back relative to the store's root, sorted by their UTF-8 bytes (S3's order).
 *
 * One difference remains, inherent to files: on a local store a key cannot also be the folder of other
 * keys (`a` and `a/b` together); S3 allows it. Lancet's layouts never do this.
 */
import { randomUUID } from "node:crypto";
import { copyFile, link, mkdir, open, readdir, readFile, rename, rm, rmdir, stat, unlink } from "node:fs/promises";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import {
  CopyObjectCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
} from "@aws-sdk/client-s3";
import { BackfillError, ConfigError } from "../errors.ts";

/** Storage options as LanceDB takes them (endpoint, region, access_key_id, secret_access_key, session_token, allow_http, virtual_hosted_style_request, …). */
export type StorageOptions = Readonly<Record<string, string>>;

/** A flat key → bytes store rooted at {@link ObjectStore.uri}. Every method is async and rejects (never throws). */
export interface ObjectStore {
  /** The root: an absolute local directory, or "s3://bucket/prefix" (no trailing slash). */
  readonly uri: string;
  /** The object's bytes, or undefined when there is none. */
  get(key: string): Promise<Uint8Array | undefined>;
  /** Writes the whole object; a reader sees the old or the new bytes, never a part. */
  put(key: string, data: Uint8Array | string): Promise<void>;
  /** Creates the object only if no object has that key; false when one exists. */
  putIfAbsent(key: string, data: Uint8Array | string): Promise<boolean>;
  /** Keys under `prefix` (a string prefix, recursive), relative to the root, sorted; never temp files. `prefix` "" = all. */
  list(prefix: string): Promise<string[]>;
  /** Removes one object; a missing one is fine. */
  delete(key: string): Promise<void>;
  /**
   * Copies object `from` to `to` within the store (on S3 a server-side `CopyObject`: the bytes never
   * leave the server) and returns its size in bytes. `to` is written like {@link put}: atomically,
   * replacing any object there, so callers copy to fresh, unique keys. Rejects with STORAGE_FAILED
   * (not retryable) when `from` does not exist.
   */
  copy(from: string, to: string): Promise<number>;
  /** Removes every object whose key starts with `prefix` (`"a/"`: the folder `a`). */
  deletePrefix(prefix: string): Promise<void>;
  /** A store rooted at `uri + "/" + prefix`. */
  child(prefix: string): ObjectStore;
}

// ---------------------------------------------------------------------------------------------------
// Keys

/** The local store's temporary files: `<name>.<uuid>.tmp`. */
const TEMP_NAME = /\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.tmp$/;

// eslint-disable-next-line no-control-regex
const BAD_CHARS = /[\u0000-\u001f\u007f\\]/;

function badKey(what: string, key: string, why: string): ConfigError {
  return new ConfigError("CONFIG_INVALID", `object ${what} ${JSON.stringify(key)} is invalid (${why}); keys are relative paths like "a/b.json" without "..", "." or empty segments`);
}

/** Checks a key (`allowPrefix`: also `""` and a trailing `/`, as list/deletePrefix/child take). */
function checkKey(key: string, allowPrefix = false): string {
  const what = allowPrefix ? "prefix" : "key";
  if (typeof key !== "string") throw badKey(what, String(key), "not a string");
  if (key === "") {
    if (allowPrefix) return key;
    throw badKey(what, key, "empty");
  }
  if (key.startsWith("/")) throw badKey(what, key, "leading /");
  if (BAD_CHARS.test(key)) throw badKey(what, key, "backslash or control character");
  const body = allowPrefix && key.endsWith("/") ? key.slice(0, -1) : key;
  for (const seg of body.split("/")) {
    if (seg === "") throw badKey(what, key, "empty segment");
    if (seg === "." || seg === "..") throw badKey(what, key, `"${seg}" segment`);
  }
  if (!allowPrefix && TEMP_NAME.test(key)) throw badKey(what, key, "the name of a temporary file");
  return key;
}

/** S3's listing order: UTF-8 bytes. */
function byUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
}

function toBytes(data: Uint8Array | string): Uint8Array {
  return typeof data === "string" ? Buffer.from(data, "utf8") : data;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
}

// ---------------------------------------------------------------------------------------------------
// Local directory

const RETRYABLE_FS = new Set(["EIO", "EAGAIN", "EBUSY", "EMFILE", "ENFILE", "ETIMEDOUT", "ESTALE", "EINTR"]);

function fsCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}

function localFailed(op: string, file: string, e: unknown): BackfillError {
  if (e instanceof BackfillError) return e;
  const code = fsCode(e);
  return new BackfillError("STORAGE_FAILED", `${op} ${file} failed: ${(e as Error)?.message ?? String(e)}`, { retryable: code !== undefined && RETRYABLE_FS.has(code), cause: e });
}

/** Best effort: makes a rename or link in `dir` durable. Some filesystems refuse fsync on a folder. */
async function syncDir(dir: string): Promise<void> {
  try {
    const fh = await open(dir, "r");
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch {
    // not supported here; the data itself was fsynced
  }
}

/**
 * Objects as plain files under a root directory (local disk, or any POSIX filesystem every process
 * shares). `put` writes `<name>.<uuid>.tmp`, fsyncs it and renames it over the key; `putIfAbsent`
 * hard-links the temporary file to the key, so it fails with EEXIST (→ `false`) when the key exists;
 * `list` skips temporary files; folders are made as needed and pruned when emptied by `deletePrefix`.
 */
export class LocalStore implements ObjectStore {
  readonly uri: string;

  /** @param rootDir the root folder, made absolute; it need not exist yet. */
  constructor(rootDir: string) {
    const abs = path.resolve(rootDir);
    this.uri = abs.length > 1 && abs.endsWith(path.sep) ? abs.slice(0, -1) : abs;
  }

  #file(key: string): string {
    return path.join(this.uri, ...key.split("/"));
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    const file = this.#file(checkKey(key));
    try {
      return new Uint8Array(await readFile(file));
    } catch (e) {
      const code = fsCode(e);
      if (code === "ENOENT" || code === "EISDIR" || code === "ENOTDIR") return undefined;
      throw localFailed("get", file, e);
    }
  }

  /** Writes `data` to a fresh temporary file next to `file` and fsyncs it; returns its path. */
  async #temp(file: string, data: Uint8Array): Promise<string> {
    const dir = path.dirname(file);
    const tmp = `${file}.${randomUUID()}.tmp`;
    for (let attempt = 0; ; attempt++) {
      await mkdir(dir, { recursive: true });
      try {
        const fh = await open(tmp, "wx");
        try {
          await fh.writeFile(data);
          await fh.sync();
        } catch (e) {
          await fh.close();
          await unlink(tmp).catch(() => undefined);
          throw e;
        }
        await fh.close();
        return tmp;
      } catch (e) {
        // A concurrent deletePrefix may remove the folder between mkdir and open.
        if (fsCode(e) === "ENOENT" && attempt < 3) continue;
        throw e;
      }
    }
  }

  async put(key: string, data: Uint8Array | string): Promise<void> {
    const file = this.#file(checkKey(key));
    try {
      const tmp = await this.#temp(file, toBytes(data));
      try {
        await rename(tmp, file);
      } catch (e) {
        await unlink(tmp).catch(() => undefined);
        throw e;
      }
      await syncDir(path.dirname(file));
    } catch (e) {
      throw localFailed("put", file, e);
    }
  }

  async putIfAbsent(key: string, data: Uint8Array | string): Promise<boolean> {
    const file = this.#file(checkKey(key));
    try {
      const tmp = await this.#temp(file, toBytes(data));
      try {
        await link(tmp, file);
      } catch (e) {
        if (fsCode(e) === "EEXIST") return false;
        throw e;
      } finally {
        await unlink(tmp).catch(() => undefined);
      }
      await syncDir(path.dirname(file));
      return true;
    } catch (e) {
      throw localFailed("putIfAbsent", file, e);
    }
  }

  async list(prefix: string): Promise<string[]> {
    checkKey(prefix, true);
    // Walk the deepest folder the prefix names, keep the keys that start with it.
    const cut = prefix.lastIndexOf("/");
    const base = cut < 0 ? "" : prefix.slice(0, cut + 1);
    const out: string[] = [];
    const walk = async (rel: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(rel === "" ? this.uri : this.#file(rel.slice(0, -1)), { withFileTypes: true });
      } catch (e) {
        const code = fsCode(e);
        if (code === "ENOENT" || code === "ENOTDIR") return;
        throw e;
      }
      for (const ent of entries) {
        const k = rel + ent.name;
        if (ent.isDirectory()) {
          // Descend only into folders that can hold keys with the prefix.
          if ((k + "/").startsWith(prefix) || prefix.startsWith(k + "/")) await walk(k + "/");
        } else if (k.startsWith(prefix) && !TEMP_NAME.test(ent.name)) {
          out.push(k);
        }
      }
    };
    try {
      await walk(base);
    } catch (e) {
      throw localFailed("list", this.uri + "/" + prefix, e);
    }
    return out.sort(byUtf8);
  }

  async copy(from: string, to: string): Promise<number> {
    const src = this.#file(checkKey(from));
    const file = this.#file(checkKey(to));
    try {
      const tmp = `${file}.${randomUUID()}.tmp`;
      await mkdir(path.dirname(file), { recursive: true });
      try {
        await copyFile(src, tmp);
        const fh = await open(tmp, "r+");
        try {
          await fh.sync();
        } finally {
          await fh.close();
        }
        await rename(tmp, file);
      } catch (e) {
        await unlink(tmp).catch(() => undefined);
        throw e;
      }
      await syncDir(path.dirname(file));
      return (await stat(file)).size;
    } catch (e) {
      if (fsCode(e) === "ENOENT" && (await stat(src).catch(() => undefined)) === undefined) {
        throw new BackfillError("STORAGE_FAILED", `copy ${src} to ${file} failed: the source does not exist`, { retryable: false, cause: e });
      }
      throw localFailed("copy", src, e);
    }
  }

  async delete(key: string): Promise<void> {
    const file = this.#file(checkKey(key));
    try {
      await unlink(file);
    } catch (e) {
      const code = fsCode(e);
      if (code === "ENOENT" || code === "ENOTDIR") return;
      if (code === "EISDIR" || code === "EPERM") return; // a folder is not an object
      throw localFailed("delete", file, e);
    }
  }

  /** A prefix ending in `/` (or `""`) removes that whole folder; any other removes the keys starting with it. */
  async deletePrefix(prefix: string): Promise<void> {
    checkKey(prefix, true);
    try {
      if (prefix === "" || prefix.endsWith("/")) {
        const dir = prefix === "" ? this.uri : this.#file(prefix.slice(0, -1));
        if (prefix === "") {
          for (const name of await readdir(dir).catch((e: unknown) => (fsCode(e) === "ENOENT" ? [] : Promise.reject(e)))) {
            await rm(path.join(dir, name), { recursive: true, force: true });
          }
        } else {
          await rm(dir, { recursive: true, force: true });
        }
        return;
      }
      const keys = await this.list(prefix);
      for (const k of keys) await this.delete(k);
      // Prune folders the deletion emptied (bottom-up, only those under the prefix's folder).
      const dirs = new Set<string>();
      for (const k of keys) {
        for (let i = k.lastIndexOf("/"); i > 0; i = k.lastIndexOf("/", i - 1)) {
          const d = k.slice(0, i);
          if (d.startsWith(prefix)) dirs.add(d);
        }
      }
      for (const d of [...dirs].sort((a, b) => b.length - a.length)) await rmdir(this.#file(d)).catch(() => undefined);
    } catch (e) {
      throw localFailed("deletePrefix", this.uri + "/" + prefix, e);
    }
  }

  child(prefix: string): LocalStore {
    return new LocalStore(path.join(this.uri, ...childPrefix(prefix).split("/")));
  }
}

function childPrefix(prefix: string): string {
  checkKey(prefix, true);
  const p = prefix.endsWith("/") ? prefix.slice(0, -1) : prefix;
  if (p === "") throw badKey("prefix", prefix, "a child store needs a non-empty prefix");
  return p;
}

// ---------------------------------------------------------------------------------------------------
// S3

/** Attempts the SDK makes per request (503 SlowDown, resets, timeouts), and our own for short reads and 409s. */
const S3_MAX_ATTEMPTS = 5;
const DELETE_BATCH = 1000;
/** The largest object S3's `CopyObject` copies in one request: 5 GiB. */
const MAX_COPY_BYTES = 5 * 1024 ** 3;

function isTrue(v: string | undefined): boolean {
  return v !== undefined && /^(1|true|yes|on)$/i.test(v.trim());
}

/** `aws_secret_access_key` → `secret_access_key`, `AWS_REGION` → `region`. */
function normaliseKey(k: string): string {
  const lower = k.trim().toLowerCase();
  return lower.startsWith("aws_") ? lower.slice(4) : lower;
}

function normaliseOptions(o: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(o)) out[normaliseKey(k)] = v;
  return out;
}

function parseS3Uri(uri: string): { bucket: string; prefix: string } {
  const m = /^s3:\/\/([^/]+)(?:\/(.*))?$/.exec(uri);
  if (!m?.[1]) throw new ConfigError("CONFIG_INVALID", `storage uri ${JSON.stringify(uri)} is not an s3:// uri; expected s3://bucket or s3://bucket/prefix`);
  const prefix = (m[2] ?? "").replace(/^\/+|\/+$/g, "");
  if (prefix !== "") checkKey(prefix);
  return { bucket: m[1], prefix };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Objects in an S3 bucket under a prefix, through `@aws-sdk/client-s3` (path-style unless
 * `virtual_hosted_style_request` is "true"; 5 attempts with the SDK's standard retry mode; 5 s to
 * connect, 30 s per request). Works with AWS and S3-compatible servers that honour `If-None-Match: *`
 * (Ceph radosgw, MinIO, …). Failures after the retries reject with `BackfillError("STORAGE_FAILED")`,
 * retryable; their messages never contain secret values.
 */
export class S3Store implements ObjectStore {
  readonly uri: string;
  readonly #bucket: string;
  /** The key prefix ending in "/", or "". */
  readonly #base: string;
  readonly #options: Record<string, string>;
  #client: S3Client | undefined;

  /**
   * @param uri `s3://bucket` or `s3://bucket/prefix`
   * @param options LanceDB storage options (prefixed `aws_` or not); see {@link resolveStorageOptions}
   * @throws ConfigError CONFIG_INVALID for a malformed uri
   */
  constructor(uri: string, options: StorageOptions) {
    const { bucket, prefix } = parseS3Uri(uri);
    this.#bucket = bucket;
    this.#base = prefix === "" ? "" : prefix + "/";
    this.uri = `s3://${bucket}${prefix === "" ? "" : "/" + prefix}`;
    this.#options = normaliseOptions(options);
  }

  /** Made on first use; a child shares its parent's. */
  get #s3(): S3Client {
    if (this.#client === undefined) {
      const o = this.#options;
      const endpoint = o["endpoint"];
      const region = o["region"] ?? o["default_region"] ?? "us-east-1";
      const accessKeyId = o["access_key_id"];
      const secretAccessKey = o["secret_access_key"];
      const sessionToken = o["session_token"] ?? o["token"];
      this.#client = new S3Client({
        region,
        ...(endpoint === undefined ? {} : { endpoint }),
        ...(accessKeyId !== undefined && secretAccessKey !== undefined ? { credentials: { accessKeyId, secretAccessKey, ...(sessionToken === undefined ? {} : { sessionToken }) } } : {}),
        forcePathStyle: !isTrue(o["virtual_hosted_style_request"]),
        maxAttempts: S3_MAX_ATTEMPTS,
        retryMode: "standard",
        requestHandler: { requestTimeout: 30_000, connectionTimeout: 5_000, throwOnRequestTimeout: true },
        // Checksums only where S3 requires them (DeleteObjects): older S3-compatible servers reject the rest.
        requestChecksumCalculation: "WHEN_REQUIRED",
        responseChecksumValidation: "WHEN_REQUIRED",
      });
    }
    return this.#client;
  }

  #describe(key: string): string {
    return `s3://${this.#bucket}/${this.#base}${key}`;
  }

  /** The STORAGE_FAILED error for a request that failed after its retries, without any secret value. */
  #failed(op: string, key: string, e: unknown, attemptsHint?: number): BackfillError {
    if (e instanceof BackfillError) return e;
    const meta = (e as { $metadata?: { attempts?: number; httpStatusCode?: number } } | undefined)?.$metadata;
    const attempts = attemptsHint ?? meta?.attempts ?? 1;
    const err = e as Error | undefined;
    const status = meta?.httpStatusCode;
    const code = (e as { code?: string } | undefined)?.code;
    let reason = `${err?.name ?? "Error"}${status === undefined ? "" : ` (HTTP ${status})`}${code !== undefined && code !== err?.name ? ` ${code}` : ""}: ${err?.message ?? String(e)}`;
    for (const [k, v] of Object.entries(this.#options)) {
      if (v.length >= 4 && isSecretKey(k)) reason = reason.split(v).join("***");
    }
    return new BackfillError(
      "STORAGE_FAILED",
      `${op} ${this.#describe(key)} failed after ${attempts} attempt${attempts === 1 ? "" : "s"}: ${reason}; check the endpoint and credentials (--storage-option / AWS_* variables)`,
      { retryable: true, cause: e },
    );
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    checkKey(key);
    let lastError: unknown;
    for (let attempt = 1; attempt <= S3_MAX_ATTEMPTS; attempt++) {
      let res;
      try {
        res = await this.#s3.send(new GetObjectCommand({ Bucket: this.#bucket, Key: this.#base + key }));
      } catch (e) {
        if (e instanceof S3ServiceException && (e.name === "NoSuchKey" || e.$metadata.httpStatusCode === 404)) return undefined;
        throw this.#failed("get", key, e);
      }
      try {
        const bytes = res.Body === undefined ? new Uint8Array(0) : await res.Body.transformToByteArray();
        if (res.ContentLength === undefined || bytes.byteLength === res.ContentLength) return bytes;
        lastError = new Error(`short read: ${bytes.byteLength} of ${res.ContentLength} bytes`);
      } catch (e) {
        lastError = e; // the body broke off (reset, timeout): read it again
      }
      await sleep(Math.min(2000, 50 * 2 ** attempt) * Math.random());
    }
    throw this.#failed("get", key, lastError, S3_MAX_ATTEMPTS);
  }

  async put(key: string, data: Uint8Array | string): Promise<void> {
    checkKey(key);
    const body = toBytes(data);
    try {
      await this.#s3.send(new PutObjectCommand({ Bucket: this.#bucket, Key: this.#base + key, Body: body, ContentLength: body.byteLength }));
    } catch (e) {
      throw this.#failed("put", key, e);
    }
  }

  /**
   * `PutObject` with `If-None-Match: *`: 412 → false; 409 ConditionalRequestConflict (a concurrent
   * conditional write in flight) → try again. When the SDK had to resend the request, a 412 may answer
   * our own earlier attempt that succeeded unseen; then the stored bytes are compared with ours, so
   * callers should make contended values unique (an owner id in a lock).
   */
  async putIfAbsent(key: string, data: Uint8Array | string): Promise<boolean> {
    checkKey(key);
    const body = toBytes(data);
    for (let attempt = 1; ; attempt++) {
      try {
        await this.#s3.send(new PutObjectCommand({ Bucket: this.#bucket, Key: this.#base + key, Body: body, ContentLength: body.byteLength, IfNoneMatch: "*" }));
        return true;
      } catch (e) {
        const status = (e as { $metadata?: { httpStatusCode?: number; attempts?: number } }).$metadata?.httpStatusCode;
        const name = (e as Error).name;
        if (status === 412 || name === "PreconditionFailed") {
          const attempts = (e as { $metadata?: { attempts?: number } }).$metadata?.attempts ?? 1;
          if (attempt > 1 || attempts > 1) {
            const stored = await this.get(key);
            return stored !== undefined && sameBytes(stored, body);
          }
          return false;
        }
        if ((status === 409 || name === "ConditionalRequestConflict") && attempt < 4 * S3_MAX_ATTEMPTS) {
          await sleep(Math.min(1000, 20 * 2 ** attempt) * (0.5 + Math.random()));
          continue;
        }
        throw this.#failed("putIfAbsent", key, e, status === 409 ? attempt : undefined);
      }
    }
  }

  async list(prefix: string): Promise<string[]> {
    checkKey(prefix, true);
    const out: string[] = [];
    let token: string | undefined;
    try {
      do {
        const res = await this.#s3.send(new ListObjectsV2Command({ Bucket: this.#bucket, Prefix: this.#base + prefix, ...(token === undefined ? {} : { ContinuationToken: token }) }));
        for (const o of res.Contents ?? []) {
          if (o.Key !== undefined && o.Key.startsWith(this.#base)) out.push(o.Key.slice(this.#base.length));
        }
        token = res.IsTruncated === true ? res.NextContinuationToken : undefined;
      } while (token !== undefined);
    } catch (e) {
      throw this.#failed("list", prefix, e);
    }
    return out.sort(byUtf8);
  }

  /**
   * `HeadObject` of the source (its size; S3 copies at most 5 GiB in one request), then `CopyObject`.
   * An object over 5 GiB is refused with STORAGE_FAILED (not retryable) rather than copied in parts.
   */
  async copy(from: string, to: string): Promise<number> {
    checkKey(from);
    checkKey(to);
    let size: number;
    try {
      const head = await this.#s3.send(new HeadObjectCommand({ Bucket: this.#bucket, Key: this.#base + from }));
      size = head.ContentLength ?? 0;
    } catch (e) {
      if (e instanceof S3ServiceException && (e.name === "NotFound" || e.name === "NoSuchKey" || e.$metadata.httpStatusCode === 404)) {
        throw new BackfillError("STORAGE_FAILED", `copy ${this.#describe(from)} to ${this.#describe(to)} failed: the source does not exist`, { retryable: false, cause: e });
      }
      throw this.#failed("copy", from, e);
    }
    if (size > MAX_COPY_BYTES) {
      throw new BackfillError("STORAGE_FAILED", `copy ${this.#describe(from)} failed: it is ${size} bytes, over the ${MAX_COPY_BYTES} bytes S3 copies in one request; write smaller files (e.g. fewer rows per fragment)`, { retryable: false });
    }
    const source = `${this.#bucket}/${(this.#base + from).split("/").map(encodeURIComponent).join("/")}`;
    try {
      await this.#s3.send(new CopyObjectCommand({ Bucket: this.#bucket, Key: this.#base + to, CopySource: source }));
    } catch (e) {
      throw this.#failed(`copy ${this.#describe(from)} to`, to, e);
    }
    return size;
  }

  async delete(key: string): Promise<void> {
    checkKey(key);
    try {
      await this.#s3.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key: this.#base + key }));
    } catch (e) {
      if (e instanceof S3ServiceException && e.$metadata.httpStatusCode === 404) return;
      throw this.#failed("delete", key, e);
    }
  }

  /** Lists the keys, then `DeleteObjects` in batches of 1000. */
  async deletePrefix(prefix: string): Promise<void> {
    const keys = await this.list(prefix);
    for (let i = 0; i < keys.length; i += DELETE_BATCH) {
      const batch = keys.slice(i, i + DELETE_BATCH);
      let res;
      try {
        res = await this.#s3.send(new DeleteObjectsCommand({ Bucket: this.#bucket, Delete: { Objects: batch.map((k) => ({ Key: this.#base + k })), Quiet: true } }));
      } catch (e) {
        throw this.#failed("deletePrefix", prefix, e);
      }
      const errors = (res.Errors ?? []).filter((x) => x.Code !== "NoSuchKey");
      if (errors.length > 0) {
        const first = errors[0];
        throw new BackfillError(
          "STORAGE_FAILED",
          `deletePrefix ${this.#describe(prefix)} failed for ${errors.length} of ${batch.length} keys (first: ${first?.Key ?? "?"}: ${first?.Code ?? "?"} ${first?.Message ?? ""}); check the endpoint and credentials (--storage-option / AWS_* variables)`,
          { retryable: true },
        );
      }
    }
  }

  child(prefix: string): S3Store {
    const c = new S3Store(`${this.uri}/${childPrefix(prefix)}`, this.#options);
    c.#client = this.#s3;
    return c;
  }
}

// ---------------------------------------------------------------------------------------------------
// Choosing a store, storage options

/** Schemes LanceDB (object_store) knows for object storage. */
const OBJECT_STORE_SCHEME = /^(s3|s3a|s3\+ddb|gs|gcs|az|azure|abfs|abfss|adl):\/\//i;

/** Whether `s` names object storage (s3://, and the others LanceDB knows: gs://, az://, abfs:// — only s3:// is supported by Lancet for now). */
export function isObjectStoreUri(s: string): boolean {
  return OBJECT_STORE_SCHEME.test(s);
}

/**
 * A store for a local directory (a path or a `file://` uri) or an `s3://` uri.
 * @param options storage options for S3; when omitted, {@link resolveStorageOptions} reads them from the AWS environment
 * @throws ConfigError TABLE_UNSUPPORTED for gs://, az:// and other object storage than s3://
 */
export function storeFor(uri: string, options?: StorageOptions): ObjectStore {
  if (/^s3:\/\//i.test(uri)) return new S3Store(`s3://${uri.slice(5)}`, options ?? resolveStorageOptions());
  if (isObjectStoreUri(uri) || (/^[a-z][a-z0-9+.-]*:\/\//i.test(uri) && !/^file:\/\//i.test(uri))) {
    const scheme = uri.slice(0, uri.indexOf("://") + 3);
    throw new ConfigError("TABLE_UNSUPPORTED", `storage ${scheme} is not supported (${uri}); Lancet supports local paths and s3:// only (S3-compatible servers included, via --storage-option endpoint=… or AWS_ENDPOINT_URL)`);
  }
  return new LocalStore(/^file:\/\//i.test(uri) ? fileURLToPath(uri) : uri);
}

/**
 * Storage options from the usual AWS environment (AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL → endpoint;
 * AWS_REGION or AWS_DEFAULT_REGION → region; AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
 * AWS_SESSION_TOKEN) overridden by explicit ones (`given`, e.g. from repeatable --storage-option
 * KEY=VALUE), with allow_http "true" added for an http:// endpoint and virtual_hosted_style_request
 * "false" when an endpoint is set, unless given. Keys may be given with or without the "aws_" prefix
 * (any case); they come back in LanceDB's unprefixed lower-case names. The result is frozen.
 * @default env process.env
 */
export function resolveStorageOptions(given: Record<string, string> = {}, env: NodeJS.ProcessEnv = process.env): StorageOptions {
  const out: Record<string, string> = {};
  const fromEnv = (name: string, ...vars: string[]): void => {
    for (const v of vars) {
      const x = env[v];
      if (x !== undefined && x !== "") {
        out[name] = x;
        return;
      }
    }
  };
  fromEnv("endpoint", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL");
  fromEnv("region", "AWS_REGION", "AWS_DEFAULT_REGION");
  fromEnv("access_key_id", "AWS_ACCESS_KEY_ID");
  fromEnv("secret_access_key", "AWS_SECRET_ACCESS_KEY");
  fromEnv("session_token", "AWS_SESSION_TOKEN");
  Object.assign(out, normaliseOptions(given));
  const endpoint = out["endpoint"];
  if (endpoint !== undefined) {
    if (out["allow_http"] === undefined && /^http:\/\//i.test(endpoint)) out["allow_http"] = "true";
    if (out["virtual_hosted_style_request"] === undefined) out["virtual_hosted_style_request"] = "false";
  }
  return Object.freeze(out);
}

const NOT_SECRET = new Set(["access_key_id", "endpoint", "region"]);

function isSecretKey(k: string): boolean {
  const n = normaliseKey(k);
  if (NOT_SECRET.has(n)) return false;
  return /secret|token|password|key/.test(n);
}

/**
 * The options with secret values (secret_access_key, session_token, and any key containing "secret",
 * "token", "password" or "key" except access_key_id/endpoint/region) replaced by "***", and any
 * `user:password@` in a URL value too — for logs, job records and error messages.
 */
export function redactStorageOptions(o: StorageOptions): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(o)) {
    out[k] = isSecretKey(k) ? "***" : v.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/@]*@/i, "$1***@");
  }
  return out;
}

/**
 * Parses "KEY=VALUE" (the CLI's --storage-option); the value may contain "=".
 * @throws ConfigError CONFIG_INVALID when there is no "=" or no key
 */
export function parseStorageOption(s: string): [string, string] {
  const i = s.indexOf("=");
  const key = i < 0 ? "" : s.slice(0, i).trim();
  if (i < 0 || key === "" || !/^[A-Za-z0-9_.-]+$/.test(key)) {
    // The value is never echoed: it may be a secret.
    const shown = i < 0 ? `${s.length} characters without "="` : `key ${JSON.stringify(key)}`;
    throw new ConfigError("CONFIG_INVALID", `--storage-option must be KEY=VALUE with a key of letters, digits, "_", "." or "-" (got ${shown}); e.g. --storage-option endpoint=http://127.0.0.1:9000`);
  }
  return [key, s.slice(i + 1)];
}
