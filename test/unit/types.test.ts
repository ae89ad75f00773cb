import { test } from "node:test";
import assert from "node:assert/strict";
import { arrow } from "../../src/arrow.ts";
import { formatDataType, parseDataType, resolveDataType } from "../../src/udf/types.ts";
import { resultToVector, valuesToVector, ValueTypeError, vectorToValues } from "../../src/udf/values.ts";

test("type strings round-trip through Arrow types", () => {
  const cases = ["int32", "int64", "float32", "float64", "bool", "utf8", "binary", "list<float32>", "fixed_size_list<float32>[384]", "struct<a:int32,b:utf8>", "struct<v:list<float64>,n:struct<q:bool>>"];
  for (const c of cases) assert.equal(formatDataType(parseDataType(c)), c);
  assert.equal(resolveDataType("string").text, "utf8");
  assert.equal(resolveDataType(" fixed_size_list< float32 > [ 8 ] ").text, "fixed_size_list<float32>[8]");
  assert.equal(resolveDataType(new arrow.Float32()).text, "float32");
});

test("invalid type strings are rejected with the accepted forms", () => {
  for (const bad of ["float65", "list<>", "fixed_size_list<float32>[0]", "struct<a>", "int32 extra", ""]) {
    assert.throws(() => parseDataType(bad), (e: Error) => /is not a valid type/.test(e.message) && /fixed_size_list<float32>\[384\]/.test(e.message), bad);
  }
});

test("values are validated against the column type, naming the first bad row", () => {
  const t = parseDataType("int32");
  assert.deepEqual([...valuesToVector([1, null, 3], t)], [1, null, 3]);
  assert.throws(() => valuesToVector([1, 2.5], t), (e: ValueTypeError) => e.row === 1 && /got number 2.5, expected int32/.test(e.message));
  assert.throws(() => valuesToVector([2 ** 40], t), /out of range for int32/);
  assert.deepEqual([...valuesToVector([1, 2n], parseDataType("int64"))], [1n, 2n]);
  assert.throws(() => valuesToVector(["a"], parseDataType("bool")), /got the string "a", expected bool/);
  assert.throws(() => valuesToVector([{ a: "x" }], parseDataType("struct<a:int32>")), /field a: got the string "x", expected int32/);
  assert.throws(() => valuesToVector([[1, 2]], parseDataType("fixed_size_list<float32>[3]")), /length 2, expected fixed_size_list<float32>\[3\] \(length 3\)/);
});

test("batched results: Arrow vectors of the right type, typed arrays, arrays; wrong lengths and types rejected", () => {
  const f64 = parseDataType("float64");
  assert.equal(resultToVector(new Float64Array([1, 2]), 2, f64).length, 2);
  assert.equal(resultToVector(arrow.vectorFromArray([1, 2], new arrow.Float64()), 2, f64).length, 2);
  assert.throws(() => resultToVector([1], 2, f64), /got 1 values for 2 rows/);
  assert.throws(() => resultToVector(arrow.vectorFromArray(["a", "b"], new arrow.Utf8()), 2, f64), /got an Arrow vector of utf8, expected float64/);
  assert.throws(() => resultToVector(arrow.vectorFromArray(["a", "b"]), 2, f64), /got an Arrow vector of Dictionary<Int32, Utf8>, expected float64/);
  assert.throws(() => resultToVector(42, 2, f64), /expected an Arrow vector or an array/);
});

test("input vectors become plain JS values", () => {
  const v = arrow.vectorFromArray([[1, 2], null], new arrow.List(new arrow.Field("item", new arrow.Float32(), true)));
  const vals = vectorToValues(v);
  assert.deepEqual(Array.from(vals[0] as Float32Array), [1, 2]);
  assert.equal(vals[1], null);
  const s = arrow.vectorFromArray([{ a: 1, b: "x" }], parseDataType("struct<a:int32,b:utf8>") as never);
  assert.deepEqual(vectorToValues(s), [{ a: 1, b: "x" }]);
});

test("fixed-size lists with nulls, trailing ones included, are well formed", () => {
  const t = parseDataType("fixed_size_list<float32>[2]");
  const v = valuesToVector([[1, 2], null, [3, 4], null, null], t);
  assert.equal(v.length, 5);
  assert.equal(v.nullCount, 3);
  assert.equal(v.data[0]!.children[0]!.length, 10, "every entry has listSize child slots");
  assert.deepEqual(vectorToValues(v).map((x) => (x === null ? null : Array.from(x as Float32Array))), [[1, 2], null, [3, 4], null, null]);
  // Round trip through IPC, as a checkpoint does.
  const back = arrow.tableFromIPC(arrow.tableToIPC(new arrow.Table({ v })));
  assert.deepEqual(vectorToValues(back.getChild("v")!).map((x) => (x === null ? null : Array.from(x as Float32Array))), [[1, 2], null, [3, 4], null, null]);
});
