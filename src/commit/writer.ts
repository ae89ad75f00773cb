/**
 * The per-fragment writer's assembly step: a fragment's checkpointed batches, read back in row
 * order, checked to cover every live row of the fragment, and joined into one {@link FragmentValues}.
 * Incomplete coverage is an error, never a short write.
 */
import { arrow } from "../arrow.ts";
import type { ArrowNs } from "../arrow.ts";
import type { CheckpointStore } from "../checkpoint/store.ts";
import { CheckpointError } from "../errors.ts";
import { gapsOf } from "../plan/plan.ts";
import { formatDataType, parseDataType } from "../udf/types.ts";
import type { FragmentValues } from "./committer.ts";

export interface FragmentToAssemble {
  readonly id: number;
  readonly liveRows: number;
  readonly batchKey: string;
}

export async function assembleFragment(store: CheckpointStore, f: FragmentToAssemble, dataType: string, where: { table: string; column: string }): Promise<FragmentValues> {
  const ranges = await store.listBatches(f.batchKey);
  const gaps = gapsOf(0, f.liveRows, ranges);
  if (gaps.length > 0) {
    throw new CheckpointError(
      `fragment ${f.id} of table ${where.table} is missing checkpoints for rows ${gaps.map((g) => `${g.start}-${g.end - 1}`).join(", ")} of column ${where.column}; run the backfill again to compute them`,
      { table: where.table, column: where.column, fragmentId: f.id },
    );
  }
  const addrParts: BigUint64Array[] = [];
  const valueParts: ArrowNs.Vector[] = [];
  let covered = 0;
  let lastAddr = -1n;
  let total = 0;
  let skippedRows = 0;
  for (const r of ranges) {
    if (r.end <= covered) continue; // wholly inside what earlier ranges gave
    const t = arrow.tableFromIPC(await store.getBatch(f.batchKey, r));
    const addrs = t.getChild("_rowaddr");
    const values = t.getChild("value");
    if (!addrs || !values || formatDataType(values.type) !== dataType) {
      throw new CheckpointError(`checkpoint of fragment ${f.id} rows ${r.start}-${r.end - 1} (column ${where.column}) is not a ${dataType} batch; delete ${f.batchKey} from the checkpoint store and re-run`, { table: where.table, column: where.column, fragmentId: f.id, rowOffset: r.start });
    }
    const a = addrs.toArray() as BigUint64Array;
    let skip = 0;
    while (skip < a.length && a[skip]! <= lastAddr) skip++; // overlap with an earlier range
    const flags = t.getChild("_skipped");
    if (flags) for (let i = skip; i < a.length; i++) if (flags.get(i) === true) skippedRows++;
    if (skip < a.length) {
      addrParts.push(a.subarray(skip));
      valueParts.push(skip === 0 ? values : values.slice(skip));
      lastAddr = a[a.length - 1]!;
      total += a.length - skip;
    }
    covered = Math.max(covered, r.end);
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
