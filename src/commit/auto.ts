/**
 * Choosing a committer. `graft` writes every fragment with the graft committer, `merge` with the
 * public `mergeInsert` committer, and `auto` (the default) grafts every fragment where that is safe
 * and sends the rest to `mergeInsert`:
 *
 * - graft: a fragment that has no file for the column yet (first backfills, appended rows; blob v2
 *   columns too on a filesystem, their sidecar payload files moved with the data file), on a local
 *   or POSIX filesystem (published with `link()`) or S3-compatible object storage (published with
 *   put-if-absent), with no index on the column, in a manifest whose fields Lancet knows;
 * - mergeInsert: a fragment that already has values for the column (a `where` run, refilling skipped
 *   rows, a rebind over filled values: the graft does not replace column files), or any fragment the
 *   graft refuses — before staging, while staging (file version, types, row count), or because its
 *   staged version did not verify. Each fallback comes back in {@link CommitResult.fallbacks} with
 *   its reason (the job records it as an event).
 */
import type { LanceNs } from "../arrow.ts";
import type { Logger } from "../log.ts";
import type { ResolvedTable } from "../table.ts";
import type { CommitResult, Committer, FragmentSource } from "./committer.ts";
import { ConfigError } from "../errors.ts";
import { GraftCommitter, GraftUnsafe, graftSupported } from "./graft.ts";
import { MergeInsertCommitter } from "./merge-insert.ts";

export type CommitMode = "auto" | "graft" | "merge";

export interface CommitterOptions {
  readonly logger: Logger;
  readonly otherJobsRunning?: () => Promise<string | undefined>;
  /** Called right before each publication (a graft's link, a merge); throws to stop it (the column lock's fencing check). */
  readonly fence?: () => Promise<void>;
}

/** Refuses a commit mode the table cannot take: the graft needs the table's version folder (a table LanceDB created). */
export function assertCommitMode(mode: CommitMode, t: ResolvedTable, column: string): void {
  if (mode === "graft" && !graftSupported(t)) {
    throw new ConfigError("CONFIG_INVALID", `commitMode "graft" needs table ${t.name} with its versions in ${t.tableDir}/_versions, which does not exist: check --db and --table, or use "merge"`, { table: t.name, column });
  }
}

export function createCommitter(mode: CommitMode, t: ResolvedTable, column: string, dataType: string, options: CommitterOptions): Committer {
  const fence = options.fence ? { fence: options.fence } : {};
  const merge = (): MergeInsertCommitter => new MergeInsertCommitter(t, column, { logger: options.logger, ...fence, ...(options.otherJobsRunning ? { otherJobsRunning: options.otherJobsRunning } : {}) });
  assertCommitMode(mode, t, column);
  if (mode !== "merge" && !graftSupported(t)) return merge();
  switch (mode) {
    case "merge":
      return merge();
    case "graft":
      return new GraftCommitter(t, column, dataType, { logger: options.logger, ...fence });
    case "auto":
      return new AutoCommitter(new GraftCommitter(t, column, dataType, { logger: options.logger, ...fence }), merge, options.logger);
  }
}

class AutoCommitter implements Committer {
  private readonly graft: GraftCommitter;
  private readonly makeMerge: () => MergeInsertCommitter;
  private merge: MergeInsertCommitter | undefined;
  private table: LanceNs.Table | undefined;
  private readonly log: Logger;

  constructor(graft: GraftCommitter, makeMerge: () => MergeInsertCommitter, log: Logger) {
    this.graft = graft;
    this.makeMerge = makeMerge;
    this.log = log;
  }

  async prepare(table: LanceNs.Table): Promise<void> {
    this.table = table;
  }

  async commit(fragments: readonly FragmentSource[]): Promise<CommitResult> {
    const { staged, refused, writeMs } = await this.graft.stageAll(fragments);
    const results: CommitResult[] = [];
    if (staged.length > 0) {
      try {
        results.push({ ...(await this.graft.publishStaged(staged)), writeMs });
      } catch (e) {
        if (!(e instanceof GraftUnsafe)) throw e;
        for (const s of staged) refused.set(s.fragmentId, e.reason);
      }
    }
    const merged = fragments.filter((f) => refused.has(f.fragmentId));
    if (merged.length > 0) {
      for (const [id, why] of refused) this.log.debug(`fragment ${id} goes through mergeInsert: ${why}`);
      this.merge ??= this.makeMerge();
      await this.merge.prepare(this.table!);
      results.push(await this.merge.commit(merged));
    }
    return {
      version: Math.max(0, ...results.map((r) => r.version)),
      rowsWritten: results.reduce((s, r) => s + r.rowsWritten, 0),
      commits: results.reduce((s, r) => s + r.commits, 0),
      writeMs: results.reduce((s, r) => s + r.writeMs, 0),
      retries: results.reduce((s, r) => s + r.retries, 0),
      fallbacks: [...refused].map(([fragmentId, reason]) => ({ fragmentId, reason })),
    };
  }
}
