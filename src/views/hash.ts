/**
 * The input hash of a view row: a 64-bit digest of the row's selected source values (a view's UDF
 * inputs are always among them). A refresh compares it with the hash stored in the view to tell a
 * row whose inputs changed from one whose unrelated columns were written (which bumps LanceDB's
 * `_row_last_updated_at_version` all the same).
 */
import { createHash } from "node:crypto";

/** A canonical, type-tagged text form of an Arrow value as the JS API returns it. */
export function canonical(v: unknown): string {
  if (v === null || v === undefined) return "N";
  switch (typeof v) {
    case "bigint":
      return `b${v}`;
    case "number":
      return Object.is(v, -0) ? "n-0" : `n${v}`;
    case "string":
      return `s${v.length}:${v}`;
    case "boolean":
      return v ? "T" : "F";
    default:
      break;
  }
  if (v instanceof Uint8Array) return `u${Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64")}`;
  if (v instanceof Date) return `d${v.getTime()}`;
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (ArrayBuffer.isView(v)) return `[${Array.from(v as unknown as ArrayLike<unknown>, canonical).join(",")}]`;
  const o = v as { toJSON?: () => unknown; toArray?: () => ArrayLike<unknown> };
  // Struct rows and maps: toJSON gives a plain object; lists are Vectors with toArray.
  const json = typeof o.toJSON === "function" ? o.toJSON() : undefined;
  if (json !== undefined && json !== null && typeof json === "object" && !Array.isArray(json)) {
    return `{${Object.entries(json).map(([k, x]) => `${k.length}:${k}=${canonical(x)}`).join(",")}}`;
  }
  if (typeof o.toArray === "function") return `[${Array.from(o.toArray(), canonical).join(",")}]`;
  return `?${String(v)}`;
}

/** The digest of one row's values (in the view's select order), as a signed 64-bit integer. */
export function rowHash(values: readonly unknown[]): bigint {
  const h = createHash("sha256");
  for (const v of values) {
    h.update(canonical(v));
    h.update("\u0001");
  }
  return h.digest().readBigInt64LE(0);
}

/** A deterministic pseudo-random sort key of a source row id under a seed (splitmix64). */
export function shuffleKey(seed: number, id: bigint): bigint {
  const M = (1n << 64n) - 1n;
  let z = (BigInt(seed) * 0x9e3779b97f4a7c15n + id + 0x9e3779b97f4a7c15n) & M;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M;
  return z ^ (z >> 31n);
}
