/**
 * Removing checkpoints nothing will read again. A fragment's batches are deleted when it is committed,
 * but a run killed between the commit and that deletion leaves them, and the next run computes the
 * fragment under another key (its selection becomes the rows still null), so they would stay forever.
 */
import { batchKeyFragment } from "./keys.ts";
import type { CheckpointStore } from "./store.ts";

export interface SweepScope {
  /** Fragments whose values are complete and committed for the current UDF version and inputs. */
  readonly complete: ReadonlySet<number>;
  /** Fragment ids of the pinned version, empty ones included. */
  readonly existing: ReadonlySet<number>;
}

/**
 * Deletes a column's batches of complete fragments (under any key: other versions, selections,
 * input files) and of fragments that no longer exist (compacted or deleted; ids above the pinned
 * version's highest are left alone: a newer version may have them). Call it holding the column's
 * lock, after a run, so no task of this column is writing. Returns the keys deleted.
 */
export async function sweepBatches(store: CheckpointStore, column: string, scope: SweepScope): Promise<string[]> {
  let newest = -1;
  for (const id of scope.existing) newest = Math.max(newest, id);
  const deleted: string[] = [];
  for (const key of await store.listBatchKeys(column)) {
    const id = batchKeyFragment(key);
    if (id === undefined) continue;
    if (scope.complete.has(id) || (!scope.existing.has(id) && id <= newest)) {
      await store.deleteBatches(key);
      deleted.push(key);
    }
  }
  return deleted;
}
