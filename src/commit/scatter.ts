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

function validity(runs: readonly Run[], length: number): { bitmap: Uint8Array; nulls: number } {
  const bitmap = new Uint8Array((length + 7) >> 3);
  let valid = 0;
  for (const r of runs) {
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
function scatterData(type: ArrowNs.DataType, runs: readonly Run[], length: number): Data | undefined {
  const T = arrow.Type;
  const id = type.typeId;
  const make = (buffers: { offsets?: unknown; values?: unknown }, children: Data[] = []): Data => {
    const { bitmap, nulls } = validity(runs, length);
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
      const first = runs[0]?.src;
      const stride = first?.stride ?? 1;
      const Ctor = (first?.values.constructor ?? (type as unknown as { ArrayType: new (n: number) => ArrayLike<number> }).ArrayType) as new (n: number) => Uint8Array;
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
      );
      return child && make({ offsets }, [child]);
    }
    case T.FixedSizeList: {
      const size = (type as ArrowNs.FixedSizeList).listSize;
      const child = scatterData(
        (type as ArrowNs.FixedSizeList).children[0]!.type,
        runs.map((r) => ({ src: r.src.children[0]!, from: r.from * size, count: r.count * size, to: r.to * size })),
        length * size,
      );
      return child && make({}, [child]);
    }
    case T.Struct: {
      const children: Data[] = [];
      for (const [j, f] of (type as ArrowNs.Struct).children.entries()) {
        const child = scatterData(f.type, runs.map((r) => ({ ...r, src: r.src.children[j]! })), length);
        if (!child) return undefined;
        children.push(child);
      }
      return make({}, children);
    }
    default:
      return undefined;
  }
}

/**
 * `values[i]` placed at row `positions(i)` of a vector of `length` rows, null elsewhere. Positions
 * ascend. Returns one contiguous vector (LanceDB writes it as one data file).
 */
export async function scatterRows(values: ArrowNs.Vector, positions: (i: number) => number, length: number, type: ArrowNs.DataType): Promise<ArrowNs.Vector> {
  const data = scatterData(type, runsOf(values, positions), length);
  if (data) return arrow.makeVector(data) as ArrowNs.Vector;
  // Slow path: JS values, a window at a time, yielding between windows.
  const out = new Array<unknown>(length).fill(null);
  const WINDOW = 1024;
  for (let from = 0; from < values.length; from += WINDOW) {
    const part = vectorToValues(values.slice(from, Math.min(values.length, from + WINDOW)));
    for (let k = 0; k < part.length; k++) out[positions(from + k)] = part[k];
    await yieldToLoop();
  }
  return valuesToVector(out, type) as ArrowNs.Vector;
}
