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
import { storeAt } from "../storage/location.ts";
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
 * Publishes manifest `bytes` as `version` of a table on object storage, the way LanceDB commits
 * there: the `.txn` file (a fresh, unique name), then the manifest under its final name in
 * `_versions/` with put-if-absent (`If-None-Match: *`), which is refused when another writer took
 * the version first (→ false; the `.txn` file is then removed, best effort). Nothing is written with a
 * plain PUT and there is no `latest_version_hint.json` (LanceDB keeps none on object storage).
 */
export async function putVersion(tableDir: string, v2Names: boolean, version: number, txnName: string, txn: Uint8Array, bytes: Uint8Array): Promise<boolean> {
  const store = storeAt(tableDir);
  const txnKey = `_transactions/${txnName}`;
  if (!(await store.putIfAbsent(txnKey, txn))) {
    throw new CommitError("COMMIT_FAILED", `publishing version ${version} of ${tableDir}: its transaction file ${txnKey} exists already with other bytes (transaction names are unique: another process is publishing the same transaction); nothing was published`);
  }
  if (await store.putIfAbsent(`_versions/${manifestName(version, v2Names)}`, bytes)) return true;
  await store.delete(txnKey).catch(() => {});
  return false;
}
