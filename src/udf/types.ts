/**
 * Output data types: parsing of type strings (`"float64"`, `"list<float32>"`,
 * `"fixed_size_list<float32>[384]"`, `"struct<a:int32,b:utf8>"`) into Arrow types, and the reverse, so
 * a binding can be stored as text in field metadata and rebuilt in any process.
 */
import { arrow } from "../arrow.ts";
import type { ArrowNs } from "../arrow.ts";
import { ConfigError } from "../errors.ts";

export type DataType = ArrowNs.DataType;

/** A type given either as a string or as an Arrow DataType (from any copy of apache-arrow). */
export type DataTypeLike = string | { readonly typeId: number };

const SIMPLE: Record<string, () => DataType> = {
  bool: () => new arrow.Bool(),
  boolean: () => new arrow.Bool(),
  int8: () => new arrow.Int8(),
  int16: () => new arrow.Int16(),
  int32: () => new arrow.Int32(),
  int64: () => new arrow.Int64(),
  uint8: () => new arrow.Uint8(),
  uint16: () => new arrow.Uint16(),
  uint32: () => new arrow.Uint32(),
  uint64: () => new arrow.Uint64(),
  float16: () => new arrow.Float16(),
  float32: () => new arrow.Float32(),
  float: () => new arrow.Float32(),
  float64: () => new arrow.Float64(),
  double: () => new arrow.Float64(),
  utf8: () => new arrow.Utf8(),
  string: () => new arrow.Utf8(),
  large_utf8: () => new arrow.LargeUtf8(),
  binary: () => new arrow.Binary(),
  large_binary: () => new arrow.LargeBinary(),
  date32: () => new arrow.DateDay(),
  timestamp_ms: () => new arrow.TimestampMillisecond(),
  timestamp_us: () => new arrow.TimestampMicrosecond(),
};

class Parser {
  private pos = 0;
  private readonly src: string;
  constructor(src: string) {
    this.src = src;
  }

  fail(what: string): never {
    throw new ConfigError(
      "CONFIG_INVALID",
      `dataType ${JSON.stringify(this.src)} is not a valid type (${what} at position ${this.pos}); ` +
        `use e.g. "float64", "utf8", "blob", "list<float32>", "fixed_size_list<float32>[384]" or "struct<a:int32,b:utf8>"`,
    );
  }
  ws(): void {
    while (this.pos < this.src.length && /\s/.test(this.src[this.pos]!)) this.pos++;
  }
  ident(): string {
    this.ws();
    const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(this.src.slice(this.pos));
    if (!m) this.fail("expected a name");
    this.pos += m[0].length;
    return m[0];
  }
  expect(ch: string): void {
    this.ws();
    if (this.src[this.pos] !== ch) this.fail(`expected "${ch}"`);
    this.pos++;
  }
  peek(): string | undefined {
    this.ws();
    return this.src[this.pos];
  }
  type(): DataType {
    const name = this.ident().toLowerCase();
    if (name === "list" || name === "large_list") {
      this.expect("<");
      const child = this.type();
      this.expect(">");
      const f = new arrow.Field("item", child, true);
      return name === "list" ? new arrow.List(f) : (new (arrow as unknown as { LargeList: new (f: unknown) => DataType }).LargeList(f));
    }
    if (name === "fixed_size_list") {
      this.expect("<");
      const child = this.type();
      this.expect(">");
      this.expect("[");
      this.ws();
      const m = /^\d+/.exec(this.src.slice(this.pos));
      if (!m || Number(m[0]) <= 0) this.fail("expected a positive list size");
      this.pos += m[0].length;
      this.expect("]");
      return new arrow.FixedSizeList(Number(m[0]), new arrow.Field("item", child, true));
    }
    if (name === "struct") {
      this.expect("<");
      const fields: ArrowNs.Field[] = [];
      for (;;) {
        const fname = this.ident();
        this.expect(":");
        fields.push(new arrow.Field(fname, this.type(), true));
        if (this.peek() === ",") {
          this.pos++;
          continue;
        }
        break;
      }
      this.expect(">");
      return new arrow.Struct(fields);
    }
    if (name === "blob") return blobStorageType();
    const simple = SIMPLE[name];
    if (!simple) this.fail(`unknown type "${name}"`);
    return simple();
  }
  parse(): DataType {
    const t = this.type();
    this.ws();
    if (this.pos !== this.src.length) this.fail("unexpected trailing text");
    return t;
  }
}

/**
 * The `blob` type: a LanceDB blob v2 column's storage type, struct `{ data: large_binary, uri: utf8 }`.
 * What makes a column a blob column is its field's `lance.blob.v2` marker (`lancedb.blob(name)`), which
 * a DataType cannot carry; Lancet's type strings call this struct shape `blob`, and an added column of
 * type `blob` is always declared with the marker.
 */
export function blobStorageType(): DataType {
  return new arrow.Struct([new arrow.Field("data", new arrow.LargeBinary(), true), new arrow.Field("uri", new arrow.Utf8(), true)]);
}

/** Whether `t` has the blob v2 storage shape (struct `{ data: large_binary, uri: utf8 }`). */
export function isBlobType(t: { readonly typeId: number }): boolean {
  const dt = t as { typeId: number; children?: { name: string; type: { typeId: number } }[] };
  if (dt.typeId !== arrow.Type.Struct || dt.children?.length !== 2) return false;
  const [a, b] = dt.children;
  return a!.name === "data" && a!.type.typeId === arrow.Type.LargeBinary && b!.name === "uri" && b!.type.typeId === arrow.Type.Utf8;
}

/** Parses a type string into an Arrow type. Throws ConfigError with the accepted forms. */
export function parseDataType(src: string): DataType {
  return new Parser(src).parse();
}

/** Formats an Arrow type (from any apache-arrow copy) as Lancet's canonical type string. */
export function formatDataType(t: { readonly typeId: number }): string {
  const T = arrow.Type;
  const dt = t as unknown as {
    typeId: number;
    bitWidth?: number;
    isSigned?: boolean;
    precision?: number;
    unit?: number;
    listSize?: number;
    children?: { name: string; type: { typeId: number } }[];
  };
  switch (dt.typeId) {
    case T.Bool:
      return "bool";
    case T.Int:
      return `${dt.isSigned ? "int" : "uint"}${dt.bitWidth}`;
    case T.Float:
      return ["float16", "float32", "float64"][dt.precision ?? 2]!;
    case T.Utf8:
      return "utf8";
    case T.LargeUtf8:
      return "large_utf8";
    case T.Binary:
      return "binary";
    case T.LargeBinary:
      return "large_binary";
    case T.Date:
      return "date32";
    case T.Timestamp:
      return dt.unit === 1 ? "timestamp_ms" : "timestamp_us";
    case T.List:
      return `list<${formatDataType(dt.children![0]!.type)}>`;
    case T.FixedSizeList:
      return `fixed_size_list<${formatDataType(dt.children![0]!.type)}>[${dt.listSize}]`;
    case T.Struct:
      if (isBlobType(dt)) return "blob";
      return `struct<${dt.children!.map((c) => `${c.name}:${formatDataType(c.type)}`).join(",")}>`;
    default:
      if ((dt.typeId as number) === 30) return `large_list<${formatDataType(dt.children![0]!.type)}>`;
      throw new ConfigError("CONFIG_INVALID", `dataType ${String(t)} is not supported by Lancet; use one of the documented output types`);
  }
}

/** Normalises a DataTypeLike to [canonical string, Arrow type from Lancet's arrow instance]. */
export function resolveDataType(t: DataTypeLike): { text: string; type: DataType } {
  const text = typeof t === "string" ? formatDataType(parseDataType(t)) : formatDataType(t);
  return { text, type: parseDataType(text) };
}
