// Chunkers for bench/chunkers.ts (issue 13). Plain objects, no imports from lancet.

/** Children per parent. */
export const FANOUT = 1000;

/**
 * 1,000 children of `bytes` pseudo-random bytes per parent (`id`): `k` (0..999) and `blob`. Each
 * child's bytes come from an xorshift seeded by (id, k), so no two children are alike and nothing
 * compresses. A generator: one parent's children are produced at a time.
 */
function pseudoRandomChildren(bytes: number) {
  return {
    kind: "chunker",
    inputs: ["id"],
    outputs: { k: "int32", blob: "binary" },
    *fn(id: bigint | null) {
      const base = Number((id ?? 0n) % 1048576n) * FANOUT;
      for (let k = 0; k < FANOUT; k++) {
        const blob = new Uint8Array(bytes);
        const words = new Int32Array(blob.buffer);
        let s = ((base + k) * 2 + 1) | 0;
        for (let w = 0; w < bytes / 4; w++) {
          s ^= s << 13;
          s ^= s >>> 17;
          s ^= s << 5;
          words[w] = s;
        }
        yield { k, blob };
      }
    },
  };
}

/** 1,000 children of 1 KB per parent (issue 13's case). */
export const kilo = pseudoRandomChildren(1024);
/** 1,000 children of 4 KB per parent: the same rows per append hold 4× the bytes. */
export const kilo4 = pseudoRandomChildren(4096);
