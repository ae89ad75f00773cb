// scatterRows: values placed at their physical rows by buffer copies, window by window, must equal
// the plain JS placement for every type the graft writes, with nulls, gaps and several source chunks.
import { test } from "node:test";
import assert from "node:assert/strict";
import { arrow } from "../../src/arrow.ts";
import type { ArrowNs } from "../../src/arrow.ts";
import { scatterRows } from "../../src/commit/scatter.ts";
import { parseDataType } from "../../src/udf/types.ts";
import { valuesToVector, vectorToValues } from "../../src/udf/values.ts";
import { plainValue } from "../helpers.ts";

const N = 3000;
const VALUES: Record<string, (i: number) => unknown> = {
  int32: (i) => (i % 11 === 0 ? null : i - 1500),
  int64: (i) => (i % 13 === 0 ? null : BigInt(i) * 4_000_000_000n),
  float64: (i) => (i % 7 === 0 ? null : i / 3),
  bool: (i) => (i % 5 === 0 ? null : i % 3 === 0),
  utf8: (i) => (i % 9 === 0 ? null : `row ${i} ${"x".repeat(i % 5)}`),
  binary: (i) => (i % 9 === 1 ? null : new Uint8Array([i & 255, (i >> 8) & 255])),
  date32: (i) => new Date(Date.UTC(2020, 0, 1) + i * 86_400_000),
  "list<float32>": (i) => (i % 6 === 0 ? null : Array.from({ length: i % 4 }, (_, k) => k + 0.5)),
  "fixed_size_list<float32>[3]": (i) => (i % 8 === 0 ? null : [i, i + 1, i + 2]),
  "struct<big:int64,tags:list<utf8>,label:utf8>": (i) => (i % 10 === 0 ? null : { big: BigInt(i), tags: i % 3 === 0 ? null : [`t${i}`], label: i % 4 === 0 ? null : `l${i}` }),
  "list<struct<k:int64,v:float64>>": (i) => Array.from({ length: i % 3 }, (_, k) => ({ k: BigInt(i + k), v: k / 2 })),
};

for (const [typeName, make] of Object.entries(VALUES)) {
  test(`scatterRows places ${typeName} values like the JS path, across windows and source chunks`, async () => {
    const type = parseDataType(typeName);
    // Physical rows 0..N; rows with i % 4 === 1 and a block 1000..1199 are gaps (deleted or unselected).
    const positions = Array.from({ length: N }, (_, i) => i).filter((i) => i % 4 !== 1 && (i < 1000 || i >= 1200));
    const live = positions.map(make);
    // Three source chunks, as checkpoint batches give them.
    const cut = [0, 700, 1500, live.length];
    const chunks = cut.slice(1).map((end, k) => valuesToVector(live.slice(cut[k]!, end), type) as ArrowNs.Vector);
    const values = chunks[0]!.concat(...chunks.slice(1));
    // A window of about 500 rows.
    const bytes = values.data.reduce((sum, d) => sum + d.byteLength, 0);
    const out = await scatterRows(values, (i) => positions[i]!, N, type, bytes / 6);
    assert.ok(out.data.length > 3, "built in several windows");
    assert.equal(out.length, N);
    const expected = new Array<unknown>(N).fill(null);
    positions.forEach((p, i) => (expected[p] = live[i]));
    const want = vectorToValues(valuesToVector(expected, type) as never).map(plainValue);
    const got = vectorToValues(out as never).map(plainValue);
    assert.deepEqual(got, want);
    // What LanceDB receives: the same values through an Arrow table.
    const t = new arrow.Table(new arrow.Schema([new arrow.Field("c", type, true)]), { c: out });
    assert.equal(t.numRows, N);
  });
}
