/**
 * The input hash of a view row: a 64-bit digest of the row's selected source values (a view's UDF
 * inputs are always among them). A refresh compares it with the hash stored in the view to tell a
 * row whose inputs changed from one whose unrelated columns were written (which bumps LanceDB's
 * `_row_last_updated_at_version` all the same).
 */

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

/**
 * The digest of one row's values (in the view's select order), as a signed 64-bit integer: two
 * independent 32-bit multiply-xorshift lanes over the row's canonical text (a collision would need
 * a changed row to keep the same 64 bits). Cheap enough for every row of a large source: about a
 * tenth of a sha256 per row.
 */
export function rowHash(values: readonly unknown[]): bigint {
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  const mix = (text: string): void => {
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      h1 = Math.imul(h1 ^ c, 2654435761);
      h2 = Math.imul(h2 ^ c, 1597334677);
    }
  };
  for (const v of values) {
    mix(canonical(v));
    mix("\u0001");
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return BigInt.asIntN(64, (BigInt(h2 >>> 0) << 32n) | BigInt(h1 >>> 0));
}

/** A deterministic pseudo-random sort key of a source row id under a seed (splitmix64). */
export function shuffleKey(seed: number, id: bigint): bigint {
  const M = (1n << 64n) - 1n;
  let z = (BigInt(seed) * 0x9e3779b97f4a7c15n + id + 0x9e3779b97f4a7c15n) & M;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M;
  return z ^ (z >> 31n);
}
