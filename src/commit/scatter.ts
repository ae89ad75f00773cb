/**
 * Places a fragment's computed values at their physical rows (nulls at deleted or unselected slots)
 * by copying Arrow buffers run by run, never converting values to JS and back: a 100k-row fragment
 * of 384-dim vectors with deletions takes milliseconds instead of seconds on the coordinator's event
 * loop. Types without a buffer-level path here (dictionaries, maps, unions) are converted in small
 * windows that yield to the event loop between them.
 */
import { setImmediate as yieldToLoop } from "node:timers/promises";
import { arrow } from "../arrow.ts";
import type { ArrowNs } from "../arrow.ts";
import { valuesToVector, vectorToValues } from "../udf/values.ts";

type Data = ArrowNs.Data;

/** `count` rows of `src` from row `from` go to output rows `to`… */
interface Run {
  readonly src: Data;
  readonly from: number;
  readonly count: number;
  readonly to: number;
}

/** The runs of consecutive positions, per source chunk. `positions[i]` is the output row of value i (ascending). */
function runsOf(values: ArrowNs.Vector, positions: (i: number) => number): Run[] {
  const runs: Run[] = [];
  let i = 0;
  for (const src of values.data) {
    for (let k = 0; k < src.length; ) {
      const to = positions(i + k);
      let e = k + 1;
      while (e < src.length && positions(i + e) === to + (e - k)) e++;
      runs.push({ src, from: k, count: e - k, to });
      k = e;
    }
    i += src.length;
  }
  return runs;
}

/** Sets bits [from, from + n) of `bitmap`: whole bytes at once. */
function setBits(bitmap: Uint8Array, from: number, n: number): void {
  let i = from;
  const end = from + n;
  for (; i < end && (i & 7) !== 0; i++) bitmap[i >> 3]! |= 1 << (i & 7);
  const fullEnd = end & ~7;
  if (i < fullEnd) {
    bitmap.fill(0xff, i >> 3, fullEnd >> 3);
    i = fullEnd;
  }
  for (; i < end; i++) bitmap[i >> 3]! |= 1 << (i & 7);
}

/**
 * The validity bitmap of the output: a run's rows copied (whole bytes when its source has no nulls),
 * gap rows null. Without `gapsNull` (children of a list or struct, whose gap rows sit under a null
 * parent and are never read) and no nulls in any source, no bitmap at all.
 */
function validity(runs: readonly Run[], length: number, gapsNull: boolean): { bitmap: Uint8Array | undefined; nulls: number } {
  if (!gapsNull && runs.every((r) => r.src.nullCount === 0)) return { bitmap: undefined, nulls: 0 };
  const bitmap = new Uint8Array((length + 7) >> 3);
  let valid = 0;
  for (const r of runs) {
    if (r.src.nullCount === 0) {
      setBits(bitmap, r.to, r.count);
      valid += r.count;
      continue;
    }
    for (let k = 0; k < r.count; k++) {
      if (r.src.getValid(r.from + k)) {
        const at = r.to + k;
        bitmap[at >> 3]! |= 1 << (at & 7);
        valid++;
      }
    }
  }
  return { bitmap, nulls: length - valid };
}

/** Offsets (32- or 64-bit) of the output rows, and the source ranges to copy into the values buffer or child. */
function offsetsOf(runs: readonly Run[], length: number, large: boolean): { offsets: Int32Array | BigInt64Array; spans: Run[]; total: number } {
  const out: number[] = new Array<number>(length + 1);
  const spans: Run[] = [];
  let cursor = 0;
  let row = 0;
  for (const r of runs) {
    const vo = r.src.valueOffsets as unknown as ArrayLike<number | bigint>;
    for (; row <= r.to; row++) out[row] = cursor; // gap rows are empty
    const base = Number(vo[r.from]!);
    for (let k = 0; k < r.count; k++) out[r.to + k + 1] = cursor + Number(vo[r.from + k + 1]!) - base;
    const n = Number(vo[r.from + r.count]!) - base;
    spans.push({ src: r.src, from: base, count: n, to: cursor });
    cursor += n;
    row = r.to + r.count + 1;
  }
  for (; row <= length; row++) out[row] = cursor;
  return { offsets: large ? BigInt64Array.from(out, (x) => BigInt(x)) : Int32Array.from(out), spans, total: cursor };
}

/** The output Data, or undefined for a type this buffer-level path does not handle. */
function scatterData(type: ArrowNs.DataType, runs: readonly Run[], length: number, gapsNull = true): Data | undefined {
  const T = arrow.Type;
  const id = type.typeId;
  const make = (buffers: { offsets?: unknown; values?: unknown }, children: Data[] = []): Data => {
    const { bitmap, nulls } = validity(runs, length, gapsNull);
    return new arrow.Data(type, 0, length, nulls, [buffers.offsets, buffers.values, bitmap, undefined] as never, children) as Data;
  };
  switch (id) {
    case T.Null:
      return new arrow.Data(type, 0, length, length) as Data;
    case T.Bool: {
      const out = new Uint8Array((length + 7) >> 3);
      for (const r of runs) {
        const bits = r.src.values as Uint8Array;
        for (let k = 0; k < r.count; k++) {
          const b = r.src.offset + r.from + k;
          if ((bits[b >> 3]! >> (b & 7)) & 1) out[(r.to + k) >> 3]! |= 1 << ((r.to + k) & 7);
        }
      }
      return make({ values: out });
    }
    case T.Int:
    case T.Float:
    case T.Date:
    case T.Time:
    case T.Timestamp:
    case T.Duration:
    case T.Interval:
    case T.Decimal:
    case T.FixedSizeBinary: {
      // A window with no values still needs the type's stride (FixedSizeBinary, Decimal: several units a row).
      const first = runs[0]?.src ?? (arrow.makeData({ type, length: 0 } as never) as Data);
      const stride = first.stride;
      const Ctor = ((type as unknown as { ArrayType: new (n: number) => ArrayLike<number> }).ArrayType ?? first.values.constructor) as new (n: number) => Uint8Array;
      const out = new Ctor(length * stride);
      for (const r of runs) out.set((r.src.values as Uint8Array).subarray(r.from * stride, (r.from + r.count) * stride), r.to * stride);
      return make({ values: out });
    }
    case T.Utf8:
    case T.Binary:
    case T.LargeUtf8:
    case T.LargeBinary: {
      const { offsets, spans, total } = offsetsOf(runs, length, id === T.LargeUtf8 || id === T.LargeBinary);
      const out = new Uint8Array(total);
      for (const s of spans) out.set((s.src.values as Uint8Array).subarray(s.from, s.from + s.count), s.to);
      return make({ offsets, values: out });
    }
    case T.List: {
      const { offsets, spans, total } = offsetsOf(runs, length, false);
      const child = scatterData(
        (type as ArrowNs.List).children[0]!.type,
        spans.filter((s) => s.count > 0).map((s) => ({ ...s, src: s.src.children[0]! })),
        total,
        false,
      );
      return child && make({ offsets }, [child]);
    }
    case T.FixedSizeList: {
      const size = (type as ArrowNs.FixedSizeList).listSize;
      const child = scatterData(
        (type as ArrowNs.FixedSizeList).children[0]!.type,
        runs.map((r) => ({ src: r.src.children[0]!, from: r.from * size, count: r.count * size, to: r.to * size })),
        length * size,
        false,
      );
      return child && make({}, [child]);
    }
    case T.Struct: {
      const children: Data[] = [];
      for (const [j, f] of (type as ArrowNs.Struct).children.entries()) {
        const child = scatterData(f.type, runs.map((r) => ({ ...r, src: r.src.children[j]! })), length, false);
        if (!child) return undefined;
        children.push(child);
      }
      return make({}, children);
    }
    default:
      return undefined;
  }
}

/** About this many bytes of output are built between two yields to the event loop. */
const WINDOW_BYTES = 8 * 1024 * 1024;

/**
 * `values[i]` placed at row `positions(i)` of a vector of `length` rows, null elsewhere. Positions
 * ascend. Built a window of rows at a time (about {@link WINDOW_BYTES} each), yielding to the event
 * loop between windows, so a large fragment never blocks the coordinator for long.
 */
export async function scatterRows(values: ArrowNs.Vector, positions: (i: number) => number, length: number, type: ArrowNs.DataType, windowBytes = WINDOW_BYTES): Promise<ArrowNs.Vector> {
  const runs = runsOf(values, positions);
  const bytes = values.data.reduce((sum, d) => sum + d.byteLength, 0);
  const window = Math.max(64, Math.floor((length * windowBytes) / Math.max(1, bytes)));
  const parts: Data[] = [];
  let next = 0;
  for (let start = 0; start < length; start += window) {
    const end = Math.min(length, start + window);
    // The runs (or parts of runs) that land in [start, end), relative to start.
    const inWindow: Run[] = [];
    for (; next < runs.length && runs[next]!.to < end; next++) {
      const r = runs[next]!;
      const cut = Math.min(r.count, end - r.to);
      inWindow.push({ src: r.src, from: r.from, count: cut, to: r.to - start });
      if (cut < r.count) {
        runs[next] = { src: r.src, from: r.from + cut, count: r.count - cut, to: r.to + cut };
        break;
      }
    }
    const data = scatterData(type, inWindow, end - start);
    if (!data) return scatterSlowly(values, positions, length, type);
    parts.push(data);
    if (end < length) await yieldToLoop();
  }
  if (parts.length === 0) return valuesToVector([], type) as ArrowNs.Vector;
  return arrow.makeVector(parts as never) as ArrowNs.Vector;
}

/** Types without a buffer-level path: JS values, a window at a time, yielding between windows. */
async function scatterSlowly(values: ArrowNs.Vector, positions: (i: number) => number, length: number, type: ArrowNs.DataType): Promise<ArrowNs.Vector> {
  const out = new Array<unknown>(length).fill(null);
  const WINDOW = 1024;
  for (let from = 0; from < values.length; from += WINDOW) {
    const part = vectorToValues(values.slice(from, Math.min(values.length, from + WINDOW)));
    for (let k = 0; k < part.length; k++) out[positions(from + k)] = part[k];
    await yieldToLoop();
  }
  return valuesToVector(out, type) as ArrowNs.Vector;
}
