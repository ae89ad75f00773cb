/**
 * Planning: pure, no I/O. From a version-pinned view of the table's fragments and what is already
 * done (completion markers, stored checkpoint ranges), produce the tasks of a backfill: row ranges
 * within one fragment, minus the ranges already checkpointed. Same input, same plan — task ids are
 * deterministic.
 */
import type { BatchRange } from "../checkpoint/store.ts";

export interface PlanFragmentInput {
  readonly id: number;
  readonly liveRows: number;
  /** Offset of the fragment's first live row in a scan of the pinned version. */
  readonly globalOffset: number;
  /** Row selection for this fragment: `""` = every row, else a SQL predicate. */
  readonly selection: string;
  readonly batchKey: string;
  /** Ranges already checkpointed under `batchKey`. */
  readonly covered: readonly BatchRange[];
  /** The fragment's values are complete for this UDF version and input data. */
  readonly done: boolean;
  /**
   * The table's data storage version when a task covering the whole fragment may write the column
   * file itself (a fragment file, `checkpoint/fragment-file.ts`): every row selected, none deleted,
   * a committer that can publish such a file. Undefined: batch checkpoints only.
   */
  readonly fileFormat?: string;
}

export interface PlanInput {
  readonly fragments: readonly PlanFragmentInput[];
  readonly concurrency: number;
  readonly intraApplierConcurrency: number;
  readonly taskSize: number | undefined;
  readonly commitGranularity: number | undefined;
  /** Only the first N fragments. */
  readonly numFrags: number | undefined;
}

export interface PlannedTask {
  readonly id: string;
  readonly fragmentId: number;
  readonly globalOffset: number;
  readonly start: number;
  readonly end: number;
  /** Sub-ranges of `[start, end)` still to compute. */
  readonly gaps: readonly BatchRange[];
  readonly selection: string;
  readonly batchKey: string;
  /** A chunker task's parents (source row ids); `gaps` index into them. */
  readonly parents?: readonly number[];
  /** A UDTF task's partition. */
  readonly partition?: { readonly key: string; readonly filter: string | null };
  /** The task writes its fragment's column file (rows in order, appended from the file's end): the table's data storage version and the fragment's rows. */
  readonly file?: { readonly formatVersion: string; readonly rows: number };
}

export interface PlannedFragment extends PlanFragmentInput {
  readonly tasks: readonly PlannedTask[];
  /** Rows of this fragment still to compute (upper bound: the selection may match fewer; see {@link selectionFilter}). */
  readonly rowsToCompute: number;
}

export interface Plan {
  /** Fragments this run writes (not done), in table order. */
  readonly fragments: readonly PlannedFragment[];
  readonly tasks: readonly PlannedTask[];
  /** Fragments skipped because they are complete. */
  readonly fragmentsDone: number;
  /** Fragments left out by `numFrags`. */
  readonly fragmentsDeferred: number;
  readonly rowsPlanned: number;
  readonly taskSize: number;
  readonly commitGranularity: number;
}

/** `[start, end)` minus the union of `covered`. */
export function gapsOf(start: number, end: number, covered: readonly BatchRange[]): BatchRange[] {
  const sorted = [...covered].sort((a, b) => a.start - b.start);
  const out: BatchRange[] = [];
  let pos = start;
  for (const c of sorted) {
    if (c.end <= pos) continue;
    if (c.start >= end) break;
    if (c.start > pos) out.push({ start: pos, end: Math.min(c.start, end) });
    pos = Math.max(pos, c.end);
    if (pos >= end) break;
  }
  if (pos < end) out.push({ start: pos, end });
  return out;
}

export function planBackfill(input: PlanInput): Plan {
  const selected = input.numFrags === undefined ? input.fragments : input.fragments.slice(0, input.numFrags);
  const deferred = input.fragments.length - selected.length;
  const pending = selected.filter((f) => !f.done);
  const pendingRows = pending.reduce((s, f) => s + f.liveRows, 0);
  const largest = pending.reduce((m, f) => Math.max(m, f.liveRows), 1);
  // About two tasks per worker process. (Geneva divides by intraApplierConcurrency too, but here the
  // calls in flight share one process and one task; dividing would starve them.)
  const taskSize = input.taskSize ?? Math.max(1, Math.min(largest, Math.ceil(pendingRows / (input.concurrency * 2))));
  const commitGranularity = input.commitGranularity ?? Math.min(64, Math.max(1, Math.ceil(pending.length / 20)));

  const fragments: PlannedFragment[] = [];
  const tasks: PlannedTask[] = [];
  let rowsPlanned = 0;
  for (const f of pending) {
    const ftasks: PlannedTask[] = [];
    let rows = 0;
    for (let start = 0; start < f.liveRows; start += taskSize) {
      const end = Math.min(f.liveRows, start + taskSize);
      const gaps = gapsOf(start, end, f.covered);
      if (gaps.length === 0) continue;
      rows += gaps.reduce((s, g) => s + g.end - g.start, 0);
      // One task for the whole fragment, and nothing checkpointed but a fragment file it continues.
      const file = f.fileFormat !== undefined && start === 0 && end === f.liveRows && gaps.length === 1 && f.covered.every((c) => c.file === true && c.start === 0);
      ftasks.push({ id: `${f.batchKey}:${start}-${end}`, fragmentId: f.id, globalOffset: f.globalOffset, start, end, gaps, selection: f.selection, batchKey: f.batchKey, ...(file ? { file: { formatVersion: f.fileFormat!, rows: f.liveRows } } : {}) });
    }
    fragments.push({ ...f, tasks: ftasks, rowsToCompute: rows });
    tasks.push(...ftasks);
    rowsPlanned += rows;
  }
  return {
    fragments,
    tasks,
    fragmentsDone: selected.length - pending.length,
    fragmentsDeferred: deferred,
    rowsPlanned,
    taskSize,
    commitGranularity,
  };
}

/**
 * The filter that counts the rows `selection` matches in the given fragments (`countRows(filter)`), so
 * a plan can report what a `where` or `IS NULL` selection actually selects rather than every row of
 * its ranges. A fragment's id is the high 32 bits of its rows' `_rowaddr`.
 */
export function selectionFilter(selection: string, fragmentIds: readonly number[]): string {
  if (selection === "") throw new RangeError("an empty selection selects every row; there is nothing to count");
  return `(${selection}) AND (_rowaddr >> 32) IN (${fragmentIds.join(", ")})`;
}
