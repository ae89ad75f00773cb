/**
 * Blob v2 columns on the worker side. A UDF input that is a LanceDB blob v2 column
 * (`lancedb.blob(name)`: struct `{ data: large_binary, uri }` with the `lance.blob.v2` extension)
 * arrives as a lazy {@link BlobHandle} per row, never as bytes: the worker selects only row ids, and
 * a handle reads the bytes it is asked for, from the table version the job pinned.
 *
 * {@link blobHandles} is the one entry point other worker-side code (chunkers, UDTFs) should use.
 */
import { lancedb } from "../arrow.ts";
import type { LanceNs } from "../arrow.ts";

/** What a UDF receives for one row of a blob input column (`null` for a null blob). */
export interface BlobHandle {
  /** The blob's size in bytes. */
  readonly size: number;
  /**
   * Reads `length` bytes starting at `offset`. A range that runs past the end is cut at the end
   * (reading the first 4 KiB of a 1 KiB blob returns its 1 KiB); an offset at or past the end
   * returns an empty array.
   * @throws RangeError when `offset` or `length` is not a non-negative safe integer
   */
  readRange(offset: number, length: number): Promise<Uint8Array>;
  /** Reads the whole blob (`size` bytes in memory at once: prefer `readRange` for large blobs). */
  bytes(): Promise<Uint8Array>;
}

const HANDLE_MARK = Symbol.for("lancet.blobHandle");

type NativeBlobFile = LanceNs.BlobFile;

class LanceBlobHandle implements BlobHandle {
  readonly size: number;
  readonly #file: NativeBlobFile;
  readonly [HANDLE_MARK] = true;

  constructor(file: NativeBlobFile) {
    this.#file = file;
    this.size = Number(file.size());
  }

  async readRange(offset: number, length: number): Promise<Uint8Array> {
    if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`blob readRange offset must be a non-negative integer (got ${String(offset)})`);
    if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`blob readRange length must be a non-negative integer (got ${String(length)})`);
    const start = Math.min(offset, this.size);
    const end = Math.min(this.size, start + length);
    if (end <= start) return new Uint8Array(0);
    return this.#file.readRange(BigInt(start), BigInt(end));
  }

  bytes(): Promise<Uint8Array> {
    return this.readRange(0, this.size);
  }

  toString(): string {
    return `[BlobHandle ${this.size} bytes]`;
  }
}

/** Whether `v` is a {@link BlobHandle} made by Lancet (works across realms and module copies). */
export function isBlobHandle(v: unknown): v is BlobHandle {
  return typeof v === "object" && v !== null && (v as Record<symbol, unknown>)[HANDLE_MARK] === true;
}

/** The names of a table's blob v2 columns (top-level fields carrying the `lance.blob.v2` marker). */
export async function blobColumnsOf(table: LanceNs.Table): Promise<Set<string>> {
  const schema = await table.schema();
  return new Set(schema.fields.filter((f) => lancedb.isBlobField(f as never)).map((f) => f.name));
}

/**
 * Lazy handles for `column` at `rowIds` (row ids as `_rowid` returns them; they equal row addresses
 * unless the table uses stable row ids), read from `table`'s checkout: open the table at the job's
 * pinned version and the handles read that version's bytes, whatever was written since. Keeps input
 * order; a null blob gives `null`. Opening handles reads no payload bytes.
 * @throws Error from LanceDB when `column` is not a blob v2 column or a row id does not exist
 */
export async function blobHandles(table: LanceNs.Table, column: string, rowIds: readonly bigint[] | BigUint64Array): Promise<(BlobHandle | null)[]> {
  if (rowIds.length === 0) return [];
  const files = await table.fetchBlobFiles(column, Array.from(rowIds));
  return files.map((f) => (f === null || f === undefined ? null : new LanceBlobHandle(f)));
}
