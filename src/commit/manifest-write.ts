/**
 * Hand-written table versions, shared by the graft committer and `refragment`: a manifest read raw
 * (every field kept, to be copied byte for byte), the pieces both edit the same way, the manifest
 * file's layout (index section, transaction, manifest, footer), and atomic publication with `link()`,
 * which fails with EEXIST when another writer took the version first. See
 * `reference/lancedb-node-write-path.md` §6.
 */
import { randomUUID } from "node:crypto";
import { link, mkdir, unlink, writeFile } from "node:fs/promises";
import * as path from "node:path";
import { CommitError } from "../errors.ts";
import { intOf, manifestName, parseField, readManifestFile, type FieldInfo } from "../read/manifest.ts";
import { isRemote, storeAt } from "../storage/location.ts";
import { bytesField, concat, decodeMessage, intField, str, type RawField } from "../read/protobuf.ts";

export interface RawManifest {
  readonly name: string;
  readonly version: number;
  /** The table names its manifests with the V2 scheme (inverted numbers). */
  readonly v2Names: boolean;
  readonly fields: RawField[];
  readonly indexSection: Uint8Array | null;
  readonly footerMajor: number;
  readonly footerMinor: number;
}

/** The manifest of `version` (default: the latest) with its raw fields, index section and footer. */
export async function readRawManifest(tableDir: string, version?: number): Promise<RawManifest> {
  const { name, buf, fields } = await readManifestFile(tableDir, version);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let indexSection: Uint8Array | null = null;
  const idx = fields.find((f) => f.no === 6);
  if (idx) {
    const at = Number(idx.int);
    indexSection = buf.slice(at + 4, at + 4 + dv.getUint32(at, true));
  }
  return { name, version: intOf(fields, 3), v2Names: name.length === 29, fields, indexSection, footerMajor: dv.getInt16(buf.length - 8, true), footerMinor: dv.getInt16(buf.length - 6, true) };
}

/** Manifest fields whose meaning this version of Lancet knows; a manifest with any other is not edited (format drift). */
export const KNOWN_MANIFEST_FIELDS: ReadonlySet<number> = new Set([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 21]);

/** Lance's reader feature flag (manifest field 9) of a table created with stable row ids. */
const FLAG_STABLE_ROW_IDS = 2n;

/** Whether a manifest's table was created with stable row ids. */
export function hasStableRowIdsFlag(fields: readonly RawField[]): boolean {
  return (BigInt(intOf(fields as RawField[], 9)) & FLAG_STABLE_ROW_IDS) !== 0n;
}

/** The schema's fields of a raw manifest. */
export function fieldDefs(fields: readonly RawField[]): FieldInfo[] {
  return fields.filter((f) => f.no === 1).map((f) => parseField(f.bytes));
}

/** The table's data storage version (`"2.1"`…); `"2.0"` when the manifest does not say. */
export function formatVersionOf(m: RawManifest): string {
  const df = decodeMessage(m.fields.find((x) => x.no === 15)?.bytes ?? new Uint8Array());
  const v = df.find((x) => x.no === 2);
  return v ? str(v) : "2.0";
}

/** A row-version sequence (`_row_last_updated_at_version`, `_row_created_at_version`) with one run: rows [0, n) at `version`. */
export function runsAt(n: number, version: number): Uint8Array {
  const segment = bytesField(1, bytesField(1, concat([intField(1, 0), intField(2, n)])));
  return bytesField(1, concat([segment, intField(2, version)]));
}

/** Manifest field 7: the commit's timestamp, now. */
export function timestampField(): Uint8Array {
  const now = Date.now();
  return bytesField(7, concat([intField(1, Math.floor(now / 1000)), intField(2, (now % 1000) * 1_000_000)]));
}

const u32 = (n: number): Uint8Array => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
};

/**
 * A manifest file: the index section (when `index` is given, at offset 0), the transaction, the
 * manifest built by `manifestParts` (which is told the transaction's offset, manifest field 21), and
 * the footer with `base`'s format version.
 */
export function manifestFileBytes(base: Pick<RawManifest, "footerMajor" | "footerMinor">, index: Uint8Array | null, txn: Uint8Array, manifestParts: (txnAt: number) => Uint8Array[]): Uint8Array {
  const txnAt = index ? 4 + index.length : 0;
  const manifest = concat(manifestParts(txnAt));
  const footer = new Uint8Array(16);
  const dv = new DataView(footer.buffer);
  dv.setBigInt64(0, BigInt(txnAt + 4 + txn.length), true);
  dv.setInt16(8, base.footerMajor, true);
  dv.setInt16(10, base.footerMinor, true);
  footer.set(new TextEncoder().encode("LANC"), 12);
  return concat([...(index ? [u32(index.length), index] : []), u32(txn.length), txn, u32(manifest.length), manifest, footer]);
}

/**
 * Publishes manifest `bytes` as `version`: writes the `.txn` file and the manifest under a temporary
 * name, runs `beforeLink` (a failpoint, the lock's fence), then `link()`s it to its final name and
 * updates `latest_version_hint.json` (best effort). Returns false when another writer took the
 * version (EEXIST). On any failure before the link, the temporary manifest and the `.txn` are removed.
 */
export async function linkVersion(tableDir: string, v2Names: boolean, version: number, txnName: string, txn: Uint8Array, bytes: Uint8Array, beforeLink?: () => Promise<void> | void): Promise<boolean> {
  await mkdir(path.join(tableDir, "_transactions"), { recursive: true });
  const txnPath = path.join(tableDir, "_transactions", txnName);
  await writeFile(txnPath, txn);
  const finalName = manifestName(version, v2Names);
  const tmp = path.join(tableDir, "_versions", `.tmp_${finalName}_${randomUUID()}`);
  await writeFile(tmp, bytes);
  try {
    await beforeLink?.();
    await link(tmp, path.join(tableDir, "_versions", finalName));
  } catch (e) {
    await unlink(tmp).catch(() => {});
    await unlink(txnPath).catch(() => {});
    if ((e as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw e;
  }
  await unlink(tmp).catch(() => {});
  await writeFile(path.join(tableDir, "_versions", "latest_version_hint.json"), JSON.stringify({ version })).catch(() => {});
  return true;
}

/**
 * The manifest PUT of {@link putVersion} failed every time and nothing tells whether one of its
 * attempts reached the server (a request held or cut after the server stored it may still land): the
 * version may or may not be published. Its data files must be kept (a published manifest may name
 * them); nothing else is wrong.
 */
export class PublishOutcomeUnknown extends CommitError {
  readonly version: number;
  constructor(version: number, message: string, cause: unknown) {
    super("COMMIT_FAILED", message, { cause, retryable: true });
    this.name = "PublishOutcomeUnknown";
    this.version = version;
  }
}

/** How many times {@link putVersion} sends the manifest (each with the SDK's own retries) before its outcome is unknown. */
const PUT_VERSION_ATTEMPTS = 3;

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && Buffer.compare(a, b) === 0;
}

/**
 * Publishes manifest `bytes` as `version` of a table on object storage, the way LanceDB commits
 * there: the `.txn` file (a fresh, unique name), then the manifest under its final name in
 * `_versions/` with put-if-absent (`If-None-Match: *`), which is refused when another writer took
 * the version first (→ false; the `.txn` file is then removed, best effort). Nothing is written with a
 * plain PUT and there is no `latest_version_hint.json` (LanceDB keeps none on object storage).
 *
 * Whether a refused or failed PUT was in fact ours is read from the version's stored manifest: the
 * manifest names this commit's transaction file (a fresh UUID), so the stored bytes equal `bytes`
 * exactly when our own PUT landed (e.g. a connection reset after the server stored it) — then this
 * returns true and never publishes twice. A PUT that fails {@link PUT_VERSION_ATTEMPTS} times with
 * the version still absent throws {@link PublishOutcomeUnknown}.
 */
export async function putVersion(tableDir: string, v2Names: boolean, version: number, txnName: string, txn: Uint8Array, bytes: Uint8Array): Promise<boolean> {
  const store = storeAt(tableDir);
  const txnKey = `_transactions/${txnName}`;
  if (!(await store.putIfAbsent(txnKey, txn))) {
    const stored = await store.get(txnKey);
    if (stored === undefined || !sameBytes(stored, txn)) {
      throw new CommitError("COMMIT_FAILED", `publishing version ${version} of ${tableDir}: its transaction file ${txnKey} exists already with other bytes (transaction names are unique: another process is publishing the same transaction); nothing was published`);
    }
  }
  const key = `_versions/${manifestName(version, v2Names)}`;
  let lastError: unknown;
  for (let attempt = 1; attempt <= PUT_VERSION_ATTEMPTS; attempt++) {
    let put: boolean | undefined;
    try {
      put = await store.putIfAbsent(key, bytes);
    } catch (e) {
      lastError = e;
    }
    if (put === true) return true;
    // Refused, or failed with an unknown outcome: the stored manifest says whose version it is.
    let stored: Uint8Array | undefined;
    try {
      stored = await store.get(key);
    } catch (e) {
      lastError = e;
      continue;
    }
    if (stored !== undefined) {
      if (sameBytes(stored, bytes)) return true; // our own PUT landed
      await store.delete(txnKey).catch(() => {});
      return false;
    }
    if (put === false) lastError = new Error(`the PUT was refused but ${key} reads as absent`);
  }
  const why = (lastError as Error | undefined)?.message ?? String(lastError);
  throw new PublishOutcomeUnknown(version, `publishing version ${version} of ${tableDir}: the manifest PUT of ${key} failed ${PUT_VERSION_ATTEMPTS} times (${why}) and the version still reads as absent; a request still in flight may yet publish it, so its data files are kept. Check the endpoint, then run the command again (a re-run sees whether it was published)`, lastError);
}

/**
 * Publishes manifest `bytes` as `version` of the table at `tableDir` with the compare-and-swap its
 * storage has: {@link linkVersion} on a filesystem, {@link putVersion} (put-if-absent) on object storage.
 * `beforePublish` (a failpoint, the lock's fence) runs right before the publication: after the local
 * temporary files are written, or before the first PUT. False when another writer took the version.
 */
export async function publishVersion(tableDir: string, v2Names: boolean, version: number, txnName: string, txn: Uint8Array, bytes: Uint8Array, beforePublish?: () => Promise<void> | void): Promise<boolean> {
  if (!isRemote(tableDir)) return linkVersion(tableDir, v2Names, version, txnName, txn, bytes, beforePublish);
  await beforePublish?.();
  return putVersion(tableDir, v2Names, version, txnName, txn, bytes);
}
