/**
 * The per-fragment writer's assembly step: a fragment's checkpointed batches, read back in row
 * order, checked to cover every live row of the fragment, and joined into one {@link FragmentValues}.
 * Incomplete coverage is an error, never a short write.
 */
import { arrow } from "../arrow.ts";
import type { ArrowNs } from "../arrow.ts";
import { fragmentFileSkipped, readFragmentFile } from "../checkpoint/fragment-file.ts";
import { FileCheckpointStore, type CheckpointStore } from "../checkpoint/store.ts";
import { CheckpointError } from "../errors.ts";
import { gapsOf } from "../plan/plan.ts";
import { formatDataType, parseDataType } from "../udf/types.ts";
import type { FragmentValues } from "./committer.ts";

export interface FragmentToAssemble {
  readonly id: number;
  readonly liveRows: number;
  readonly batchKey: string;
}

/**
 * A fragment's checkpointed batches in row order, one piece per batch (overlaps with earlier batches
 * dropped), after checking that they cover every live row — so a committer can write a fragment
 * without holding its whole column. Each piece's `rowsSkipped` counts its own skipped rows.
 * @throws CheckpointError for missing or malformed checkpoints
 */
export async function* streamFragment(store: CheckpointStore, f: FragmentToAssemble, dataType: string, where: { table: string; column: string }): AsyncGenerator<FragmentValues> {
  const ranges = await store.listBatches(f.batchKey);
  const gaps = gapsOf(0, f.liveRows, ranges);
  if (gaps.length > 0) {
    throw new CheckpointError(
      `fragment ${f.id} of table ${where.table} is missing checkpoints for rows ${gaps.map((g) => `${g.start}-${g.end - 1}`).join(", ")} of column ${where.column}; run the backfill again to compute them`,
      { table: where.table, column: where.column, fragmentId: f.id },
    );
  }
  let covered = 0;
  let lastAddr = -1n;
  for (const r of ranges) {
    if (r.end <= covered) continue; // wholly inside what earlier ranges gave
    if (r.file) {
      // A fragment file (always from row 0): its rows are the fragment's rows in order.
      if (!(store instanceof FileCheckpointStore) || r.end > f.liveRows || lastAddr >= 0n) {
        throw new CheckpointError(`the fragment file of fragment ${f.id} (column ${where.column}) holds ${r.end} rows for a fragment of ${f.liveRows}; delete ${f.batchKey} from the checkpoint store and re-run`, { table: where.table, column: where.column, fragmentId: f.id });
      }
      const dir = store.batchDir(f.batchKey);
      let skipped = await fragmentFileSkipped(dir, r.end);
      let at = r.start;
      for await (const values of readFragmentFile(dir, where.column, r.start, r.end)) {
        if (formatDataType(values.type) !== dataType) {
          throw new CheckpointError(`the fragment file of fragment ${f.id} (column ${where.column}) is not ${dataType}; delete ${f.batchKey} from the checkpoint store and re-run`, { table: where.table, column: where.column, fragmentId: f.id });
        }
        const rowAddrs = new BigUint64Array(values.length);
        const words = new Uint32Array(rowAddrs.buffer); // little-endian: offset, then fragment id
        for (let i = 0; i < rowAddrs.length; i++) {
          words[2 * i] = at + i;
          words[2 * i + 1] = f.id;
        }
        at += values.length;
        yield { fragmentId: f.id, rowAddrs, values, rowsSkipped: skipped };
        skipped = 0; // counted once, with the first piece
      }
      covered = r.end;
      lastAddr = (BigInt(f.id) << 32n) | BigInt(r.end - 1);
      continue;
    }
    const t = arrow.tableFromIPC(await store.getBatch(f.batchKey, r));
    const addrs = t.getChild("_rowaddr");
    const values = t.getChild("value");
    if (!addrs || !values || formatDataType(values.type) !== dataType) {
      throw new CheckpointError(`checkpoint of fragment ${f.id} rows ${r.start}-${r.end - 1} (column ${where.column}) is not a ${dataType} batch; delete ${f.batchKey} from the checkpoint store and re-run`, { table: where.table, column: where.column, fragmentId: f.id, rowOffset: r.start });
    }
    const a = addrs.toArray() as BigUint64Array;
    let skip = 0;
    while (skip < a.length && a[skip]! <= lastAddr) skip++; // overlap with an earlier range
    let skipped = 0;
    const flags = t.getChild("_skipped");
    if (flags) for (let i = skip; i < a.length; i++) if (flags.get(i) === true) skipped++;
    covered = Math.max(covered, r.end);
    if (skip >= a.length) continue;
    lastAddr = a[a.length - 1]!;
    yield { fragmentId: f.id, rowAddrs: a.subarray(skip), values: skip === 0 ? values : values.slice(skip), rowsSkipped: skipped };
  }
}

/** A fragment's checkpointed batches joined into one {@link FragmentValues} (see {@link streamFragment}). */
export async function assembleFragment(store: CheckpointStore, f: FragmentToAssemble, dataType: string, where: { table: string; column: string }): Promise<FragmentValues> {
  const addrParts: BigUint64Array[] = [];
  const valueParts: ArrowNs.Vector[] = [];
  let total = 0;
  let skippedRows = 0;
  for await (const piece of streamFragment(store, f, dataType, where)) {
    addrParts.push(piece.rowAddrs);
    valueParts.push(piece.values);
    total += piece.rowAddrs.length;
    skippedRows += piece.rowsSkipped;
  }
  const rowAddrs = new BigUint64Array(total);
  let o = 0;
  for (const p of addrParts) {
    rowAddrs.set(p, o);
    o += p.length;
  }
  const values =
    valueParts.length === 0
      ? (arrow.vectorFromArray([], parseDataType(dataType) as never) as ArrowNs.Vector)
      : valueParts.length === 1
        ? valueParts[0]!
        : valueParts[0]!.concat(...valueParts.slice(1));
  return { fragmentId: f.id, rowAddrs, values, rowsSkipped: skippedRows };
}
