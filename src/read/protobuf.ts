/**
 * A minimal protobuf wire-format reader: just enough to walk Lance manifests without a schema
 * compiler. Fields are returned raw (varint as bigint, length-delimited as bytes) in file order.
 */

export interface RawField {
  /** Field number. */
  no: number;
  /** Wire type: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32. */
  wire: number;
  /** Varint / fixed values. */
  int: bigint;
  /** Length-delimited payload (a view into the source buffer). */
  bytes: Uint8Array;
  /** The whole field as encoded (tag included): copy it to keep the field byte for byte. */
  raw: Uint8Array;
}

const EMPTY = new Uint8Array(0);

function readVarint(buf: Uint8Array, pos: number): [bigint, number] {
  let result = 0n;
  let shift = 0n;
  for (;;) {
    if (pos >= buf.length) throw new Error("truncated varint");
    const b = buf[pos++]!;
    result |= BigInt(b & 0x7f) << shift;
    if ((b & 0x80) === 0) return [result, pos];
    shift += 7n;
    if (shift > 70n) throw new Error("varint too long");
  }
}

/** Decodes one message level into its fields. Throws on malformed input. */
export function decodeMessage(buf: Uint8Array): RawField[] {
  const out: RawField[] = [];
  let pos = 0;
  while (pos < buf.length) {
    const fieldStart = pos;
    const [tag, p1] = readVarint(buf, pos);
    pos = p1;
    const no = Number(tag >> 3n);
    const wire = Number(tag & 7n);
    switch (wire) {
      case 0: {
        const [v, p2] = readVarint(buf, pos);
        pos = p2;
        out.push({ no, wire, int: v, bytes: EMPTY, raw: buf.subarray(fieldStart, p2) });
        break;
      }
      case 1: {
        const dv = new DataView(buf.buffer, buf.byteOffset + pos, 8);
        pos += 8;
        out.push({ no, wire, int: dv.getBigUint64(0, true), bytes: EMPTY, raw: buf.subarray(fieldStart, pos) });
        break;
      }
      case 2: {
        const [len, p2] = readVarint(buf, pos);
        const end = p2 + Number(len);
        if (end > buf.length) throw new Error(`truncated field ${no}`);
        out.push({ no, wire, int: 0n, bytes: buf.subarray(p2, end), raw: buf.subarray(fieldStart, end) });
        pos = end;
        break;
      }
      case 5: {
        const dv = new DataView(buf.buffer, buf.byteOffset + pos, 4);
        pos += 4;
        out.push({ no, wire, int: BigInt(dv.getUint32(0, true)), bytes: EMPTY, raw: buf.subarray(fieldStart, pos) });
        break;
      }
      default:
        throw new Error(`unsupported wire type ${wire} for field ${no}`);
    }
  }
  return out;
}

/** Signed interpretation of a 64-bit varint (int32/int64 fields hold negatives as 10-byte varints). */
export function toSigned(v: bigint): number {
  return Number(BigInt.asIntN(64, v));
}

/** Decodes a packed (or a single unpacked) repeated int32 field. */
export function packedInts(f: RawField): number[] {
  if (f.wire === 0) return [toSigned(f.int)];
  const out: number[] = [];
  let pos = 0;
  while (pos < f.bytes.length) {
    const [v, p] = readVarint(f.bytes, pos);
    out.push(toSigned(v));
    pos = p;
  }
  return out;
}

const decoder = new TextDecoder();
export function str(f: RawField): string {
  return decoder.decode(f.bytes);
}

// ---- encoding ---------------------------------------------------------------------------------

/** A varint; negative numbers as 10-byte two's complement, as protobuf encodes int32/int64. */
export function varint(v: number | bigint): Uint8Array {
  let x = BigInt.asUintN(64, BigInt(v));
  const out: number[] = [];
  do {
    let b = Number(x & 0x7fn);
    x >>= 7n;
    if (x !== 0n) b |= 0x80;
    out.push(b);
  } while (x !== 0n);
  return Uint8Array.from(out);
}

export function concat(parts: readonly Uint8Array[]): Uint8Array {
  const n = parts.reduce((s, p) => s + p.length, 0);
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** A varint field. */
export function intField(no: number, v: number | bigint): Uint8Array {
  return concat([varint((no << 3) | 0), varint(v)]);
}

/** A length-delimited field (bytes, string or embedded message). */
export function bytesField(no: number, payload: Uint8Array | string): Uint8Array {
  const b = typeof payload === "string" ? new TextEncoder().encode(payload) : payload;
  return concat([varint((no << 3) | 2), varint(b.length), b]);
}

/** A packed repeated int32 field. */
export function packedField(no: number, values: readonly number[]): Uint8Array {
  return bytesField(no, concat(values.map((v) => varint(v))));
}
