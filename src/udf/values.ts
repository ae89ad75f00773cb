/**
 * Moving values between Arrow and UDFs: Arrow input columns become JS values for scalar UDFs, and
 * UDF results (JS values, typed arrays or Arrow vectors from any apache-arrow copy) are validated
 * against the column's type and built into an Arrow vector. Every rejection names the row.
 */
import { arrow } from "../arrow.ts";
import type { ArrowNs } from "../arrow.ts";
import { isBlobHandle } from "./blob.ts";
import { formatDataType, isBlobType, type DataType } from "./types.ts";

type Vec = ArrowNs.Vector;

/** Thrown for one bad value; the caller adds table/column/fragment context. */
export class ValueTypeError extends Error {
  readonly row: number;
  constructor(row: number, message: string) {
    super(message);
    this.row = row;
  }
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (isBlobHandle(v)) return `a blob handle (${v.size} bytes; return await handle.bytes() to copy its bytes)`;
  if (Array.isArray(v)) return `an array of length ${v.length}`;
  if (ArrayBuffer.isView(v)) return `a ${v.constructor.name}`;
  if (typeof v === "object") return `an object (${v.constructor?.name ?? "Object"})`;
  if (typeof v === "string") return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + "…" : v)}`;
  return `${typeof v} ${String(v)}`;
}

/** A normaliser: returns the value in the form Arrow's builders expect, or throws a message. */
type Check = (v: unknown) => unknown;

function isVectorLike(v: unknown): v is { toArray(): ArrayLike<unknown>; length: number; get(i: number): unknown } {
  return typeof v === "object" && v !== null && typeof (v as { toArray?: unknown }).toArray === "function" && typeof (v as { get?: unknown }).get === "function";
}

/**
 * The largest blob value a UDF may return: 1 GiB (the graft writes it in LanceDB's sidecar blob
 * files; a whole checkpoint batch of such values is held in the worker's memory).
 */
export const MAX_BLOB_VALUE_BYTES = 2 ** 30;

function makeCheck(t: DataType): Check {
  const T = arrow.Type;
  const expected = formatDataType(t);
  const bad = (v: unknown): never => {
    throw new Error(`got ${describe(v)}, expected ${expected}`);
  };
  if (isBlobType(t)) {
    // A blob output: bytes per row, stored as the blob v2 struct with `data` set.
    const sized = (b: Uint8Array): { data: Uint8Array; uri: null } => {
      if (b.byteLength > MAX_BLOB_VALUE_BYTES) {
        throw new Error(`got a value of ${b.byteLength} bytes, more than Lancet writes per blob value (${MAX_BLOB_VALUE_BYTES} bytes); store large media elsewhere and return its URI in a utf8 column`);
      }
      return { data: b, uri: null };
    };
    return (v) => {
      if (v instanceof Uint8Array) return sized(v);
      if (ArrayBuffer.isView(v) && !(v instanceof DataView)) return sized(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
      if (v instanceof ArrayBuffer) return sized(new Uint8Array(v));
      throw new Error(`got ${describe(v)}, expected blob (a Uint8Array or Buffer per row, or null)`);
    };
  }
  switch (t.typeId) {
    case T.Bool:
      return (v) => (typeof v === "boolean" ? v : bad(v));
    case T.Float:
      return (v) => (typeof v === "number" ? v : bad(v));
    case T.Int: {
      const it = t as ArrowNs.Int;
      if (it.bitWidth === 64) {
        const min = it.isSigned ? -(1n << 63n) : 0n;
        const max = it.isSigned ? (1n << 63n) - 1n : (1n << 64n) - 1n;
        return (v) => {
          let b: bigint;
          if (typeof v === "bigint") b = v;
          else if (typeof v === "number" && Number.isInteger(v)) b = BigInt(v);
          else return bad(v);
          if (b < min || b > max) throw new Error(`${b} is out of range for ${expected}`);
          return b;
        };
      }
      const bits = it.bitWidth;
      const min = it.isSigned ? -(2 ** (bits - 1)) : 0;
      const max = it.isSigned ? 2 ** (bits - 1) - 1 : 2 ** bits - 1;
      return (v) => {
        const n = typeof v === "bigint" ? Number(v) : v;
        if (typeof n !== "number" || !Number.isInteger(n)) return bad(v);
        if (n < min || n > max) throw new Error(`${n} is out of range for ${expected}`);
        return n;
      };
    }
    case T.Utf8:
    case T.LargeUtf8:
      return (v) => (typeof v === "string" ? v : bad(v));
    case T.Binary:
    case T.LargeBinary:
      return (v) => {
        if (v instanceof Uint8Array) return v;
        if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
        if (v instanceof ArrayBuffer) return new Uint8Array(v);
        return bad(v);
      };
    case T.List:
    case T.FixedSizeList: {
      const child = (t as ArrowNs.List).children[0]!.type;
      const fixed = t.typeId === T.FixedSizeList ? (t as ArrowNs.FixedSizeList).listSize : -1;
      const inner = makeNullable(makeCheck(child));
      return (v) => {
        let arr: ArrayLike<unknown>;
        if (Array.isArray(v) || (ArrayBuffer.isView(v) && !(v instanceof DataView))) arr = v as ArrayLike<unknown>;
        else if (isVectorLike(v)) arr = v.toArray();
        else return bad(v);
        if (fixed >= 0 && arr.length !== fixed) throw new Error(`got a list of length ${arr.length}, expected ${expected} (length ${fixed})`);
        const out = new Array<unknown>(arr.length);
        for (let i = 0; i < arr.length; i++) out[i] = inner(arr[i]);
        return out;
      };
    }
    case T.Struct: {
      const fields = (t as ArrowNs.Struct).children.map((f) => ({ name: f.name, check: makeNullable(makeCheck(f.type)) }));
      return (v) => {
        if (typeof v !== "object" || v === null || Array.isArray(v) || ArrayBuffer.isView(v)) return bad(v);
        const src = typeof (v as { toJSON?: unknown }).toJSON === "function" ? (v as { toJSON(): Record<string, unknown> }).toJSON() : (v as Record<string, unknown>);
        const out: Record<string, unknown> = {};
        for (const f of fields) {
          try {
            out[f.name] = f.check(src[f.name] ?? null);
          } catch (e) {
            throw new Error(`field ${f.name}: ${(e as Error).message}`);
          }
        }
        return out;
      };
    }
    case T.Date:
      return (v) => (v instanceof Date ? v : typeof v === "number" ? new Date(v) : bad(v));
    case T.Timestamp:
      return (v) => (v instanceof Date ? v.getTime() : typeof v === "number" ? v : bad(v));
    default:
      return (v) => v;
  }
}

function makeNullable(c: Check): Check {
  return (v) => (v === null || v === undefined ? null : c(v));
}

const checkCache = new WeakMap<object, Check>();

/**
 * Validates `values` (one per row) against `type` and builds an Arrow vector. Throws
 * {@link ValueTypeError} naming the first bad row.
 */
export function valuesToVector(values: ArrayLike<unknown>, type: DataType): Vec {
  let check = checkCache.get(type);
  if (!check) {
    check = makeNullable(makeCheck(type));
    checkCache.set(type, check);
  }
  const out = new Array<unknown>(values.length);
  for (let i = 0; i < values.length; i++) {
    try {
      out[i] = check(values[i]);
    } catch (e) {
      throw new ValueTypeError(i, (e as Error).message);
    }
  }
  if (type.typeId === arrow.Type.Binary || type.typeId === arrow.Type.Utf8) checkOffsets(out, type);
  if (type.typeId === arrow.Type.FixedSizeList) return fixedSizeListVector(out, type as ArrowNs.FixedSizeList);
  return arrow.vectorFromArray(out as unknown[], type as never) as Vec;
}

/** The most bytes one batch of a `binary` or `utf8` column can hold (Arrow's 32-bit offsets). */
export const MAX_OFFSET_BYTES = 2 ** 31 - 1;

/**
 * `binary` and `utf8` vectors address their bytes with 32-bit offsets: a value, or a batch of values,
 * past 2 GiB would wrap them. Strings are measured by UTF-16 length × 3 only when that could matter.
 */
function checkOffsets(values: unknown[], type: DataType): void {
  const binary = type.typeId === arrow.Type.Binary;
  if (!binary) {
    let units = 0;
    for (const v of values) if (typeof v === "string") units += v.length;
    if (units * 3 <= MAX_OFFSET_BYTES) return;
  }
  let total = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v === null || v === undefined) continue;
    total += binary ? (v as Uint8Array).byteLength : Buffer.byteLength(v as string);
    if (total > MAX_OFFSET_BYTES) {
      const size = binary ? (v as Uint8Array).byteLength : Buffer.byteLength(v as string);
      const what = size > MAX_OFFSET_BYTES ? `a value of ${size} bytes` : `values totalling ${total} bytes up to this row`;
      throw new ValueTypeError(i, `got ${what}, more than a ${formatDataType(type)} column holds per batch (${MAX_OFFSET_BYTES} bytes, 32-bit offsets); declare dataType "blob" (large payloads, read lazily) or "large_${formatDataType(type)}"`);
    }
  }
}

/**
 * apache-arrow 18's builder writes no child slots for a null fixed-size list, so trailing nulls leave
 * the child array short (a malformed vector Lance then rejects). Build it by hand: every entry gets
 * `listSize` child slots, null entries are marked in the validity bitmap.
 */
function fixedSizeListVector(values: unknown[], type: ArrowNs.FixedSizeList): Vec {
  const size = type.listSize;
  const n = values.length;
  const child = new Array<unknown>(n * size).fill(null);
  const bitmap = new Uint8Array((n + 7) >> 3);
  let nullCount = 0;
  for (let i = 0; i < n; i++) {
    const v = values[i] as unknown[] | null;
    if (v === null) {
      nullCount++;
      continue;
    }
    bitmap[i >> 3]! |= 1 << (i & 7);
    for (let k = 0; k < size; k++) child[i * size + k] = v[k];
  }
  const childVec = arrow.vectorFromArray(child, type.children[0]!.type as never) as Vec;
  const childData = childVec.data.length === 1 ? childVec.data[0]! : arrow.makeVector(childVec.data).data[0]!;
  const data = arrow.makeData({ type, length: n, nullCount, nullBitmap: nullCount > 0 ? bitmap : null, child: childData } as never);
  return arrow.makeVector(data) as Vec;
}

const TYPED_FAST: [new (n: number) => ArrayLike<number>, string][] = [
  [Float64Array, "float64"],
  [Float32Array, "float32"],
  [Int32Array, "int32"],
];

function typeName(t: { typeId: number }): string {
  try {
    return formatDataType(t);
  } catch {
    return String(t);
  }
}

/**
 * Turns a batched UDF's result into a vector of `type`: an Arrow vector of exactly that type is used
 * as is (re-built when it comes from another apache-arrow copy), a typed array of the matching
 * primitive type is wrapped without copying, anything else is validated value by value.
 */
export function resultToVector(result: unknown, expectedLength: number, type: DataType): Vec {
  const want = formatDataType(type);
  const len = (result as { length?: unknown } | null)?.length;
  if (typeof len !== "number") {
    throw new ValueTypeError(-1, `got ${describe(result)}, expected an Arrow vector or an array of ${expectedLength} values`);
  }
  if (len !== expectedLength) throw new ValueTypeError(-1, `got ${len} values for ${expectedLength} rows`);
  if (result instanceof arrow.Vector) {
    const got = typeName(result.type);
    if (got !== want) throw new ValueTypeError(-1, `got an Arrow vector of ${got}, expected ${want}`);
    return result;
  }
  if (isVectorLike(result) && typeof (result as { type?: { typeId?: unknown } }).type?.typeId === "number") {
    const got = typeName((result as unknown as { type: { typeId: number } }).type);
    if (got !== want) throw new ValueTypeError(-1, `got an Arrow vector of ${got}, expected ${want}`);
    const vals = new Array<unknown>(len);
    for (let i = 0; i < len; i++) vals[i] = result.get(i);
    return valuesToVector(vals, type);
  }
  for (const [ctor, name] of TYPED_FAST) {
    if (result instanceof ctor && name === want) return arrow.makeVector(result as Float64Array) as Vec;
  }
  if (!Array.isArray(result) && !ArrayBuffer.isView(result)) {
    throw new ValueTypeError(-1, `got ${describe(result)}, expected an Arrow vector or an array`);
  }
  return valuesToVector(result as ArrayLike<unknown>, type);
}

/** Converts one Arrow value (as `Vector.get` returns it) into the plain JS form scalar UDFs receive. */
function plain(v: unknown): unknown {
  if (v === null || typeof v !== "object") return v;
  if (v instanceof Uint8Array) return v;
  if (isVectorLike(v)) {
    const a = v.toArray();
    return Array.isArray(a) ? a.map(plain) : a;
  }
  if (typeof (v as { toJSON?: unknown }).toJSON === "function" && !(v instanceof Date)) {
    const o = (v as { toJSON(): Record<string, unknown> }).toJSON();
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(o)) out[k] = plain(o[k]);
    return out;
  }
  return v;
}

/**
 * The rows of an input column as JS values: numbers, bigints (64-bit integers), booleans, strings,
 * Uint8Array (binary), typed arrays or arrays (lists), plain objects (structs), null.
 */
export function vectorToValues(vec: Vec): unknown[] {
  const n = vec.length;
  const out = new Array<unknown>(n);
  const T = arrow.Type;
  const id = vec.type.typeId;
  const primitive = id === T.Float || id === T.Int || id === T.Bool || id === T.Utf8 || id === T.LargeUtf8 || id === T.Dictionary;
  if (primitive) {
    for (let i = 0; i < n; i++) out[i] = vec.get(i);
    return out;
  }
  for (let i = 0; i < n; i++) out[i] = plain(vec.get(i));
  return out;
}

/** The rows at `rows` (sorted indices) of `v`, as one vector built from contiguous slices. */
export function takeRows(v: Vec, rows: number[]): Vec {
  const parts: Vec[] = [];
  for (let k = 0; k < rows.length; ) {
    let e = k + 1;
    while (e < rows.length && rows[e] === rows[e - 1]! + 1) e++;
    parts.push(v.slice(rows[k]!, rows[e - 1]! + 1));
    k = e;
  }
  if (parts.length === 0) return v.slice(0, 0);
  return parts.length === 1 ? parts[0]! : parts[0]!.concat(...parts.slice(1));
}
