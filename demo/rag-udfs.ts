/**
 * UDFs for the retrieval demo (`npm run demo:rag`, demo/rag.ts): a chunker that cuts an e-mail body
 * into passages, and a deterministic local "embedding" of a passage (hashed word and character n-grams,
 * no model to download). Plain objects with no imports, so demo/rag.ts can also import `embed` to
 * embed its query text with the very same function.
 */

/** Words per passage (passages do not overlap). */
export const PASSAGE_WORDS = 60;
/** At most this many passages per document (long HTML spam would otherwise dominate the view). */
export const MAX_PASSAGES = 8;
/** Dimensions of the embedding. */
export const DIM = 256;

/** The passages of a text: runs of at most PASSAGE_WORDS words, with the word offset each starts at. */
export function passagesOf(text: string | null): { passage: string; start: number }[] {
  const words = (text ?? "").split(/\s+/).filter((w) => w.length > 0);
  const out: { passage: string; start: number }[] = [];
  for (let start = 0; start < words.length && out.length < MAX_PASSAGES; start += PASSAGE_WORDS) {
    out.push({ passage: words.slice(start, start + PASSAGE_WORDS).join(" "), start });
  }
  return out;
}

/** Chunker: one document (a parent) → its passages (children). */
export const passages = {
  kind: "chunker",
  inputs: ["body"],
  outputs: { passage: "utf8", start: "int32" },
  fn: (body: string | null) => passagesOf(body),
};

/** 32-bit FNV-1a of a string. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** Adds a feature to `v`: its hash picks a dimension and a sign (the "hashing trick"). */
function addFeature(v: Float32Array, feature: string, weight: number): void {
  const h = fnv1a(feature);
  v[h % DIM]! += h & 0x80000000 ? -weight : weight;
}

/** Words too common to tell passages apart: left out of the features. */
const STOPWORDS = new Set(
  ("a an and are as at be but by for from has have he i if in is it its of on or our she so that the their " +
    "them there they this to was we were will with you your not no do does did can could would should " +
    "all any been more most than then what when which who how about into out up").split(" "),
);

/**
 * The embedding of a text: lower-cased words (stop words dropped; weight 1), bigrams of adjacent kept
 * words (weight 1) and character trigrams of each kept word (weight 0.25), hashed into DIM signed
 * buckets with sub-linear term frequency (1 + ln tf), L2-normalised. Deterministic: the same text
 * gives the same vector in any process. Null for null text or text without a word.
 */
export function embed(text: string | null): Float32Array | null {
  if (text === null) return null;
  const words = (text.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? []).filter((w) => !STOPWORDS.has(w));
  if (words.length === 0) return null;
  const tf = new Map<string, number>();
  const add = (feature: string, weight: number): void => void tf.set(feature, (tf.get(feature) ?? 0) + weight);
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!;
    add("w:" + w, 1);
    if (i > 0) add("b:" + words[i - 1] + " " + w, 1);
    const padded = `^${w}$`;
    for (let c = 0; c + 3 <= padded.length; c++) add("c:" + padded.slice(c, c + 3), 0.25);
  }
  const v = new Float32Array(DIM);
  for (const [feature, n] of tf) addFeature(v, feature, n > 1 ? 1 + Math.log(n) : n);
  let norm = 0;
  for (let d = 0; d < DIM; d++) norm += v[d]! * v[d]!;
  norm = Math.sqrt(norm) || 1;
  for (let d = 0; d < DIM; d++) v[d]! /= norm;
  return v;
}

/** Batched UDF column of the chunk view: the embedding of each passage. */
export const embedding = {
  inputs: ["passage"],
  dataType: `fixed_size_list<float32>[${DIM}]`,
  batch: true,
  fn: (passage: { readonly length: number; get(i: number): string | null }): (Float32Array | null)[] =>
    Array.from({ length: passage.length }, (_, i) => embed(passage.get(i))),
};
