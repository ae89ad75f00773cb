/**
 * The write side. A {@link Committer} publishes finished fragments' values into the table; the
 * per-fragment writer ({@link assembleFragment}) gathers a fragment's checkpointed batches in row order
 * first. Implementations: the public-API indexed `mergeInsert` path (`merge-insert.ts`).
 */
import type { ArrowNs, LanceNs } from "../arrow.ts";

/** One fragment's computed values: the selected rows, by row address, in row order. */
export interface FragmentValues {
  readonly fragmentId: number;
  /** Offset of the fragment's first live row in a scan of the pinned version. */
  readonly globalOffset: number;
  readonly liveRows: number;
  /** Row addresses of the rows with new values, ascending. */
  readonly rowAddrs: BigUint64Array;
  /** The new values, aligned with `rowAddrs`. */
  readonly values: ArrowNs.Vector;
}

export interface CommitResult {
  /** Table version after the commit (unchanged when nothing needed writing). */
  readonly version: number;
  readonly rowsWritten: number;
  /** Commits made (a group may need more than one merge). */
  readonly commits: number;
}

export interface Committer {
  /**
   * Makes the table ready for commits before the plan's version is pinned (e.g. a key column and
   * its index). Only called by runs that will write.
   */
  prepare(table: LanceNs.Table): Promise<void>;
  /** Called with the pinned version before the first commit. */
  begin(version: number): Promise<void>;
  /** Publishes the fragments' values. Each fragment is written whole or not at all. */
  commit(fragments: readonly FragmentValues[]): Promise<CommitResult>;
}
