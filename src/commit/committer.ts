/**
 * The write side. A {@link Committer} publishes finished fragments' values into the table; the
 * per-fragment writer ({@link assembleFragment}) gathers a fragment's checkpointed batches in row order
 * first. Implementations: the public-API indexed `mergeInsert` path (`merge-insert.ts`).
 */
import type { ArrowNs, LanceNs } from "../arrow.ts";

/** One fragment's computed values: the selected rows, by row address, in row order. */
export interface FragmentValues {
  readonly fragmentId: number;
  /** Row addresses of the rows with new values, ascending. */
  readonly rowAddrs: BigUint64Array;
  /** The new values, aligned with `rowAddrs`. */
  readonly values: ArrowNs.Vector;
  /** Rows whose value is null because the error policy skipped them. */
  readonly rowsSkipped: number;
}

/** A fragment to commit, whose values are loaded (assembled from checkpoints) only when the committer needs them. */
export interface FragmentSource {
  readonly fragmentId: number;
  load(): Promise<FragmentValues>;
  /** The same values in pieces (checkpoint batches, in row order), for a committer that can write them without holding the whole column. */
  stream?(): AsyncIterable<FragmentValues>;
  /**
   * The fragment's checkpoint directory when its values are one whole fragment file (the column file
   * a worker wrote, `checkpoint/fragment-file.ts`), which a committer may link into the table as it
   * is; null otherwise.
   */
  file?(): Promise<string | null>;
}

export interface CommitResult {
  /** Table version after the commit (unchanged when nothing needed writing). */
  readonly version: number;
  readonly rowsWritten: number;
  /** Commits made (a group may need more than one merge). */
  readonly commits: number;
  /** Time spent writing the column data (the rest of a commit's time is bookkeeping). */
  readonly writeMs: number;
  /** Commit attempts beyond the first (conflicts with other writers, retried). */
  readonly retries: number;
  /** Fragments written by another path than the one first chosen (`auto`: graft refused), and why. */
  readonly fallbacks?: readonly { readonly fragmentId: number; readonly reason: string }[];
}

export interface Committer {
  /**
   * Makes the table ready for commits (e.g. a key column and its index). Called once, just before
   * the first commit, so a run that fails before any fragment is complete leaves the table as it was.
   * Must keep fragment ids and row addresses.
   */
  prepare(table: LanceNs.Table): Promise<void>;
  /**
   * Publishes the fragments' values. Each fragment is written whole or not at all. May be called
   * concurrently for disjoint fragments (one writer per fragment). A committer loads each fragment's
   * values when it needs them, so a group need not be in memory all at once.
   */
  commit(fragments: readonly FragmentSource[]): Promise<CommitResult>;
}
