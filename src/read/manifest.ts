/**
 * Reads Lance manifests (table versions) straight from a local table directory. The Node SDK has
 * no fragment listing, and Lancet needs each fragment's physical row count, deletion state and data
 * files (the identity of a fragment's input data, part of every checkpoint key). Field numbers
 * follow Lance 12's `table.proto`; see `reference/lancedb-node-write-path.md` §6.2.
 */
import { readdir, readFile } from "node:fs/promises";
import * as path from "node:path";
import { isRemote, storeAt } from "../storage/location.ts";
import { decodeMessage, packedInts, str, toSigned, type RawField } from "./protobuf.ts";

export interface DataFileInfo {
  path: string;
  /** Field ids stored in the file; −2 marks a tombstoned slot. */
  fields: number[];
  /** Column index of each field in the file (−1: no top-level column). */
  columnIndices: number[];
  fileMajor: number;
  fileMinor: number;
}

export interface DeletionFileInfo {
  readVersion: number;
  /** u64 id, as a decimal string. */
  id: string;
  numDeletedRows: number;
}

export interface FragmentInfo {
  id: number;
  /** Rows in the fragment's files, deleted rows included. */
  physicalRows: number;
  /** Rows not deleted. */
  liveRows: number;
  deletion: DeletionFileInfo | null;
  files: DataFileInfo[];
}

export interface FieldInfo {
  id: number;
  parentId: number;
  name: string;
  logicalType: string;
  nullable: boolean;
}

export interface ManifestInfo {
  version: number;
  fields: FieldInfo[];
  fragments: FragmentInfo[];
}

const U64_MAX = (1n << 64n) - 1n;

/** Maps version numbers to manifest file names found in `_versions/`. */
export async function listManifestFiles(tableDir: string): Promise<Map<number, string>> {
  const names = isRemote(tableDir) ? (await storeAt(tableDir).list("_versions/")).map((k) => k.slice("_versions/".length)) : await readdir(path.join(tableDir, "_versions"));
  const out = new Map<number, string>();
  for (const name of names) {
    const m = /^(\d+)\.manifest$/.exec(name);
    if (!m) continue;
    const digits = m[1]!;
    // V2 naming: u64::MAX − version, zero-padded to 20 digits; V1 naming: the version itself.
    const version = digits.length === 20 ? Number(U64_MAX - BigInt(digits)) : Number(digits);
    out.set(version, name);
  }
  return out;
}

/** The file name of `version`'s manifest in either naming scheme (the inverse of {@link listManifestFiles}). */
export function manifestName(version: number, v2Names: boolean): string {
  return v2Names ? `${(U64_MAX - BigInt(version)).toString().padStart(20, "0")}.manifest` : `${version}.manifest`;
}

function fieldsOf(fields: RawField[], no: number): RawField[] {
  return fields.filter((f) => f.no === no);
}
/** The signed value of varint field `no` (proto3: absent means `dflt`). */
export function intOf(fields: RawField[], no: number, dflt = 0): number {
  const f = fields.find((x) => x.no === no);
  return f === undefined ? dflt : toSigned(f.int);
}

export function parseDataFile(buf: Uint8Array): DataFileInfo {
  const f = decodeMessage(buf);
  const pathField = f.find((x) => x.no === 1);
  return {
    path: pathField ? str(pathField) : "",
    fields: fieldsOf(f, 2).flatMap(packedInts),
    columnIndices: fieldsOf(f, 3).flatMap(packedInts),
    fileMajor: intOf(f, 4),
    fileMinor: intOf(f, 5),
  };
}

export function parseFragment(buf: Uint8Array): FragmentInfo {
  const f = decodeMessage(buf);
  const del = f.find((x) => x.no === 3);
  let deletion: DeletionFileInfo | null = null;
  if (del) {
    const d = decodeMessage(del.bytes);
    deletion = { readVersion: intOf(d, 2), id: String(d.find((x) => x.no === 3)?.int ?? 0n), numDeletedRows: intOf(d, 4) };
  }
  const physicalRows = intOf(f, 4);
  return {
    id: intOf(f, 1),
    physicalRows,
    liveRows: physicalRows - (deletion?.numDeletedRows ?? 0),
    deletion,
    files: fieldsOf(f, 2).map((x) => parseDataFile(x.bytes)),
  };
}

export function parseField(buf: Uint8Array): FieldInfo {
  const f = decodeMessage(buf);
  const name = f.find((x) => x.no === 2);
  const lt = f.find((x) => x.no === 5);
  return {
    id: intOf(f, 3),
    parentId: intOf(f, 4),
    name: name ? str(name) : "",
    logicalType: lt ? str(lt) : "",
    nullable: intOf(f, 6) !== 0,
  };
}

/** A manifest file as stored: its name, bytes, and the manifest message's raw fields. */
export interface ManifestFile {
  readonly name: string;
  readonly buf: Uint8Array;
  readonly fields: RawField[];
}

/** Decodes the footer of a manifest file and returns the manifest message's raw fields. */
export function manifestMessage(buf: Uint8Array, name = "manifest"): RawField[] {
  if (buf.length < 16) throw new Error(`${name} is too short`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (new TextDecoder().decode(buf.subarray(buf.length - 4)) !== "LANC") throw new Error(`${name} has no LANC footer`);
  const pos = Number(dv.getBigInt64(buf.length - 16, true));
  const len = dv.getUint32(pos, true);
  if (pos + 4 + len + 16 !== buf.length) throw new Error(`${name} is not laid out as expected`);
  return decodeMessage(buf.subarray(pos + 4, pos + 4 + len));
}

/** Decodes a whole manifest file (footer → manifest message). */
export function parseManifestFile(buf: Uint8Array): ManifestInfo {
  const m = manifestMessage(buf);
  return {
    version: intOf(m, 3),
    fields: fieldsOf(m, 1).map((x) => parseField(x.bytes)),
    fragments: fieldsOf(m, 2).map((x) => parseFragment(x.bytes)),
  };
}

/** Reads the manifest file of `version` (default: the latest) of the table stored at `tableDir`. */
export async function readManifestFile(tableDir: string, version?: number): Promise<ManifestFile> {
  const files = await listManifestFiles(tableDir);
  const v = version ?? Math.max(...files.keys());
  const name = files.get(v);
  if (name === undefined) throw new Error(`version ${v} of ${tableDir} has no manifest`);
  const buf = isRemote(tableDir) ? await storeAt(tableDir).get(`_versions/${name}`) : new Uint8Array(await readFile(path.join(tableDir, "_versions", name)));
  if (buf === undefined) throw new Error(`version ${v} of ${tableDir} has no manifest (${name} vanished)`);
  const fields = manifestMessage(buf, `manifest ${name}`);
  if (intOf(fields, 3) !== v) throw new Error(`manifest ${name} holds version ${intOf(fields, 3)}, expected ${v}`);
  return { name, buf, fields };
}

/** Reads the manifest of `version` (default: the latest) of the table stored at `tableDir`. */
export async function readManifest(tableDir: string, version?: number): Promise<ManifestInfo> {
  const { fields } = await readManifestFile(tableDir, version);
  return {
    version: intOf(fields, 3),
    fields: fieldsOf(fields, 1).map((x) => parseField(x.bytes)),
    fragments: fieldsOf(fields, 2).map((x) => parseFragment(x.bytes)),
  };
}

/** A column's field and its descendants, in manifest order (parents precede their children). */
export function columnFields(fields: readonly FieldInfo[], column: string): FieldInfo[] {
  const top = fields.find((f) => f.parentId === -1 && f.name === column);
  if (!top) return [];
  const ids = new Set([top.id]);
  const out = [top];
  for (const f of fields) {
    if (ids.has(f.parentId)) {
      ids.add(f.id);
      out.push(f);
    }
  }
  return out;
}

/** Ids of `fieldName` and all its descendant fields. */
export function fieldIdsOf(manifest: ManifestInfo, fieldName: string): number[] {
  return columnFields(manifest.fields, fieldName).map((f) => f.id);
}
