import { test } from "node:test";
import assert from "node:assert/strict";
import { arrow, type ArrowNs } from "../../src/arrow.ts";
import { hashRows } from "../../src/views/hash.ts";

const fsl = (n: number, t: ArrowNs.DataType): ArrowNs.FixedSizeList => new arrow.FixedSizeList(n, new arrow.Field("item", t, true));
const struct = new arrow.Struct([new arrow.Field("a", new arrow.Int32(), true), new arrow.Field("b", new arrow.Utf8(), true)]);

/** One column per type the hash reads from buffers, and a struct (the canonical-text fallback), 9 rows each. */
function sampleValues(): [unknown[], ArrowNs.DataType][] {
  const v = (values: unknown[], type: ArrowNs.DataType): [unknown[], ArrowNs.DataType] => [values, type];
  return [
    v([1n, null, -3n, 2n ** 40n, 0n, 7n, 8n, null, 9n], new arrow.Int64()),
    v([1.5, 2, null, -0.25, 0, 1e300, NaN, 3, 4], new arrow.Float64()),
    v([1, 2, 3, null, 5, 6, 7, 8, 9], new arrow.Int8()),
    v([1, 2, 3, 4, null, 6, 7, 8, 9], new arrow.Float32()),
    v([true, false, null, true, true, false, true, null, false], new arrow.Bool()),
    v(["a", "", null, "héllo wörld", "xyzzy", "b", "long string of text", "c", "d"], new arrow.Utf8()),
    v([new Uint8Array([1, 2, 3]), new Uint8Array(0), null, new Uint8Array([9]), new Uint8Array([1, 2, 3, 4, 5]), null, new Uint8Array([0]), new Uint8Array([7, 7]), new Uint8Array([8])], new arrow.Binary()),
    v([[1, 2, 3], [0, 0, 0], null, [1, null, 3], [4, 5, 6], [7, 8, 9], [1, 2, 3], [0, 1, 0], [9, 9, 9]], fsl(3, new arrow.Float32())),
    v([new Date(0), new Date(1e12), null, new Date(5), new Date(6), new Date(7), new Date(8), new Date(9), new Date(10)], new arrow.DateMillisecond()),
    v([{ a: 1, b: "x" }, { a: null, b: "y" }, null, { a: 3, b: null }, { a: 4, b: "" }, { a: 5, b: "z" }, { a: 6, b: "w" }, { a: 7, b: "v" }, { a: 8, b: "u" }], struct),
  ];
}

const sample = (from = 0, to = 9): ArrowNs.Vector[] => sampleValues().map(([values, type]) => arrow.vectorFromArray(values.slice(from, to) as never, type));

/** The same logical vector in other chunks: pieces sliced out of it (non-zero offsets) and rejoined. */
function rechunk(vec: ArrowNs.Vector, cuts: number[]): ArrowNs.Vector {
  const bounds = [0, ...cuts, vec.length];
  const data = bounds.slice(1).flatMap((end, i) => vec.slice(bounds[i]!, end).data);
  return new arrow.Vector(data);
}

test("hashes depend on the logical values, not on how the vectors are chunked or sliced", () => {
  const cols = sample();
  const whole = hashRows(cols);
  assert.equal(whole.length, 9);
  assert.equal(new Set(whole).size, 9, "distinct rows hash apart");
  assert.deepEqual(hashRows(cols), whole, "deterministic");
  for (const cuts of [[1], [3, 4], [2, 5, 7], [1, 2, 3, 4, 5, 6, 7, 8]]) {
    assert.deepEqual(hashRows(cols.map((c) => rechunk(c, cuts))), whole, `cut at ${cuts}`);
  }
  // A slice with offset 3 of a vector hashes like a fresh vector of the same values.
  assert.deepEqual(hashRows(cols.map((c) => c.slice(3, 8))), whole.slice(3, 8));
  assert.deepEqual(hashRows(sample(3, 8)), whole.slice(3, 8));
});

test("a null differs from zero, the empty string and empty bytes; types and column boundaries are mixed in", () => {
  const one = (values: unknown[], type: ArrowNs.DataType): BigInt64Array => hashRows([arrow.vectorFromArray(values as never, type)]);
  for (const [zero, type] of [[0, new arrow.Int32()], [0n, new arrow.Int64()], [0, new arrow.Float64()], [false, new arrow.Bool()], ["", new arrow.Utf8()], [new Uint8Array(0), new arrow.Binary()], [[0, 0], fsl(2, new arrow.Int32())]] as const) {
    const [a, b] = one([null, zero], type);
    assert.notEqual(a, b, String(type));
  }
  assert.notEqual(one([5], new arrow.Int32())[0], one([5], new arrow.Uint32())[0]);
  assert.notEqual(one([5], new arrow.Int32())[0], one([5n], new arrow.Int64())[0]);
  const two = (a: string, b: string): bigint => hashRows([arrow.vectorFromArray([a], new arrow.Utf8()), arrow.vectorFromArray([b], new arrow.Utf8())])[0]!;
  assert.notEqual(two("ab", "c"), two("a", "bc"));
  assert.notEqual(two("", "x"), two("x", ""));
  // Null items inside a fixed-size list differ from zeros there.
  const [withNull, withZero] = one([[1, null, 3], [1, 0, 3]], fsl(3, new arrow.Float32()));
  assert.notEqual(withNull, withZero);
});

test("changing any one column of a row changes its hash and no other row's", () => {
  const base = sample();
  const before = hashRows(base);
  const raw = sampleValues();
  for (let c = 0; c < base.length; c++) {
    const values = raw[c]![0].slice();
    [values[0], values[1]] = [values[1], values[0]];
    const cols = base.slice();
    cols[c] = arrow.vectorFromArray(values as never, raw[c]![1]);
    const after = hashRows(cols);
    assert.notEqual(after[0], before[0], `column ${c} (${base[c]!.type})`);
    assert.notEqual(after[1], before[1], `column ${c} (${base[c]!.type})`);
    for (const k of [2, 3, 4, 5, 6, 7, 8]) assert.equal(after[k], before[k]);
  }
});

test("fixed-size list vectors (embeddings) hash by value", () => {
  const dim = 70; // two full validity words and a partial one
  const rows = Array.from({ length: 6 }, (_, r) => Array.from({ length: dim }, (_, i) => ((r % 3) * 1000 + i) / 7));
  const vec = arrow.vectorFromArray(rows as never, fsl(dim, new arrow.Float32()));
  const h = hashRows([vec]);
  assert.equal(h[0], h[3]);
  assert.equal(h[1], h[4]);
  assert.notEqual(h[0], h[1]);
  assert.notEqual(h[1], h[2]);
  const nudged = rows.map((r) => r.slice());
  nudged[0]![dim - 1] = nudged[0]![dim - 1]! + 1;
  assert.notEqual(hashRows([arrow.vectorFromArray(nudged as never, fsl(dim, new arrow.Float32()))])[0], h[0]);
  // A list whose child has a validity bitmap (slow path) hashes as one without (fast path).
  const withNulls = arrow.vectorFromArray([...rows, null] as never, fsl(dim, new arrow.Float32()));
  assert.deepEqual(hashRows([withNulls]).slice(0, 6), h);
  assert.deepEqual(hashRows([rechunk(vec, [1, 4])]), h);
  // Nested fixed-size lists and 64-bit items.
  const nested = arrow.vectorFromArray([[[1n, 2n], [3n, 4n]], [[1n, 2n], [3n, 5n]], [[1n, 2n], [3n, 4n]]] as never, fsl(2, fsl(2, new arrow.Int64())));
  const hn = hashRows([nested]);
  assert.equal(hn[0], hn[2]);
  assert.notEqual(hn[0], hn[1]);
});

test("a struct column goes through the canonical text path", () => {
  const vec = arrow.vectorFromArray([{ a: 1, b: "x" }, { a: 1, b: "y" }, null, { a: 1, b: "x" }, { a: null, b: "x" }] as never, struct);
  const h = hashRows([vec]);
  assert.equal(h[0], h[3]);
  assert.equal(new Set(h).size, 4);
  assert.deepEqual(hashRows([rechunk(vec, [2])]), h);
  assert.deepEqual(hashRows([vec], [4, 0]), BigInt64Array.of(h[4]!, h[0]!));
});

test("rows selects and orders the rows hashed, across chunks", () => {
  const cols = sample();
  const whole = hashRows(cols);
  const rows = [8, 0, 3, 3, 7, 1];
  const expected = BigInt64Array.from(rows, (r) => whole[r]!);
  assert.deepEqual(hashRows(cols, rows), expected);
  assert.deepEqual(hashRows(cols.map((c) => rechunk(c, [2, 5])), Int32Array.from(rows)), expected);
  assert.deepEqual(hashRows(cols, []), new BigInt64Array(0));
  assert.throws(() => hashRows(cols, [9]), RangeError);
  assert.deepEqual(hashRows([]), new BigInt64Array(0));
});
