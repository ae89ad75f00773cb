/**
 * Output rows of chunkers and UDTFs on the worker side: what `fn` returned, walked one item at a time,
 * and the rows it gave, checked against the declared outputs and buffered column by column until a
 * worker appends them.
 */
import type { ArrowNs } from "../arrow.ts";
import { valuesToVector, ValueTypeError } from "../udf/values.ts";

/**
 * A worker appends its buffered rows once they hold about this many bytes of output values, even
 * before `maxRowsPerFragment` rows: with large rows (KBs each) a row cap alone lets the buffer and
 * the append's copies take gigabytes (BENCHMARKS.md, issue 13).
 */
export const MAX_BUFFER_BYTES = 32 * 2 ** 20;

/** About how many bytes a value takes in an Arrow column (strings and binary values by length, else 8). */
export function approxBytes(v: unknown): number {
  if (typeof v === "string") return v.length + 4;
  if (v instanceof Uint8Array) return v.byteLength + 4;
  if (ArrayBuffer.isView(v)) return (v as ArrayBufferView).byteLength;
  if (Array.isArray(v)) return v.reduce((n: number, x) => n + approxBytes(x), 4);
  return 8;
}

/**
 * The items of what `fn` returned or resolved to: an (async) iterable's items, nothing for null; a
 * value `whole` accepts is one item as it is. Anything else is a TypeError saying what `what` must return.
 */
export async function* eachOutput(x: unknown, what: string, whole: (x: unknown) => boolean = () => false): AsyncGenerator<unknown> {
  if (x === null || x === undefined) return;
  if (whole(x)) {
    yield x;
  } else if (typeof (x as AsyncIterable<unknown>)[Symbol.asyncIterator] === "function") {
    for await (const c of x as AsyncIterable<unknown>) yield c;
  } else if (typeof (x as Iterable<unknown>)[Symbol.iterator] === "function" && typeof x !== "string") {
    yield* x as Iterable<unknown>;
  } else {
    throw new TypeError(`${what}, got ${typeof x}`);
  }
}

/** Output rows buffered column by column: each checked to have exactly the declared outputs. */
export class OutputRows {
  rows = 0;
  /** About how many bytes the buffered values take ({@link approxBytes}). */
  bytes = 0;
  readonly types: readonly [string, ArrowNs.DataType][];
  private columns: unknown[][];

  constructor(types: readonly [string, ArrowNs.DataType][]) {
    this.types = types;
    this.columns = types.map(() => []);
  }

  /** Buffers `row`; `bad` makes the error for a row that is not an object of exactly the outputs. */
  push(row: unknown, bad: (what: string) => Error): void {
    if (row === null || typeof row !== "object" || Array.isArray(row)) throw bad(`expected an object with fields ${this.types.map(([k]) => k).join(", ")}, got ${row === null ? "null" : Array.isArray(row) ? "an array" : typeof row}`);
    const o = row as Record<string, unknown>;
    for (const [k] of this.types) if (!(k in o)) throw bad(`field ${k} is missing`);
    const extra = Object.keys(o).find((k) => !this.types.some(([n]) => n === k));
    if (extra !== undefined) throw bad(`field ${extra} is not one of its outputs`);
    this.types.forEach(([k], i) => {
      this.columns[i]!.push(o[k]);
      this.bytes += approxBytes(o[k]);
    });
    this.rows++;
  }

  /** Whether the buffer is due to be appended: `maxRows` rows, or {@link MAX_BUFFER_BYTES} of values. */
  full(maxRows: number): boolean {
    return this.rows >= maxRows || this.bytes >= MAX_BUFFER_BYTES;
  }

  /**
   * The buffered values as one vector per output, and the buffer emptied. A value of the wrong type is
   * a ValueTypeError whose message `describe` makes from its row (null when unknown), field and problem.
   */
  take(describe: (row: number | null, field: string, problem: string) => string): Record<string, ArrowNs.Vector> {
    const out: Record<string, ArrowNs.Vector> = {};
    this.types.forEach(([k, type], i) => {
      try {
        out[k] = valuesToVector(this.columns[i]!, type) as ArrowNs.Vector;
      } catch (e) {
        if (!(e instanceof ValueTypeError)) throw e;
        throw new ValueTypeError(e.row, describe(e.row >= 0 ? e.row : null, k, e.message));
      }
    });
    this.columns = this.types.map(() => []);
    this.rows = 0;
    this.bytes = 0;
    return out;
  }
}
