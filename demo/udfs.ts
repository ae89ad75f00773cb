/**
 * UDFs for the Lancet demo. A UDF module needs no imports; `udf()` from "lancet" only adds type
 * checking (bundling maps "lancet" to the UDF-facing helpers, so nothing of the engine is bundled).
 */
import { udf } from "lancet";

/** An Arrow vector as a batched UDF receives it (only what these UDFs use). */
interface VectorLike<T> {
  readonly length: number;
  get(i: number): T | null;
  toArray(): ArrayLike<T>;
}

/** Scalar: words in the text; null in, null out. */
export const wordCount = {
  inputs: ["text"],
  dataType: "int32",
  fn: (t: string | null): number | null => (t === null ? null : t.split(/\s+/).filter((w) => w.length > 0).length),
};

/** Batched: x², computed on the whole Arrow column at once and returned as a Float64Array. */
export const xSquared = {
  inputs: ["x"],
  dataType: "float64",
  batch: true,
  fn: (x: VectorLike<number>): Float64Array => {
    const src = x.toArray();
    const out = new Float64Array(src.length);
    for (let i = 0; i < src.length; i++) {
      const v = src[i]!;
      out[i] = v * v;
    }
    return out;
  },
};

const DIM = 16;
const BUCKETS = 4096;

/** 32-bit FNV-1a of a string. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** A deterministic PRNG (mulberry32); the demo also builds its table with it. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface EmbeddingState {
  /** BUCKETS random vectors of DIM floats, one per hash bucket. */
  readonly table: Float32Array;
}

/**
 * Stateful and batched: a hashing "embedding" of the text (a stand-in for a model, which could not be
 * downloaded here). `setup` runs once per worker process and builds the lookup table; each word adds
 * its bucket's vector and the sum is L2-normalised. Null text gives a null embedding.
 */
export const embedding = udf<EmbeddingState>({
  inputs: ["text"],
  dataType: `fixed_size_list<float32>[${DIM}]`,
  batch: true,
  setup: async () => {
    const rand = mulberry32(42);
    const table = new Float32Array(BUCKETS * DIM);
    for (let i = 0; i < table.length; i++) table[i] = rand() * 2 - 1;
    return { table };
  },
  fn: (text: VectorLike<string>, ctx: { state: EmbeddingState }): (Float32Array | null)[] => {
    const { table } = ctx.state;
    const out = new Array<Float32Array | null>(text.length);
    for (let i = 0; i < text.length; i++) {
      const t = text.get(i);
      if (t === null) {
        out[i] = null;
        continue;
      }
      const v = new Float32Array(DIM);
      for (const word of t.split(/\s+/)) {
        if (word.length === 0) continue;
        const base = (fnv1a(word.toLowerCase()) % BUCKETS) * DIM;
        for (let d = 0; d < DIM; d++) v[d]! += table[base + d]!;
      }
      let norm = 0;
      for (let d = 0; d < DIM; d++) norm += v[d]! * v[d]!;
      norm = Math.sqrt(norm) || 1;
      for (let d = 0; d < DIM; d++) v[d]! /= norm;
      out[i] = v;
    }
    return out;
  },
});

/** Async scalar: waits on a ~0 ms timer (a stand-in for I/O such as an HTTP call), then upper-cases. */
export const shout = {
  inputs: ["text"],
  dataType: "utf8",
  fn: async (t: string | null): Promise<string | null> => {
    if (t === null) return null;
    await new Promise<void>((resolve) => setTimeout(resolve, 0));
    return t.toUpperCase();
  },
};
