/**
 * Failpoints: named steps of Lancet's write paths that a test (or an operator rehearsing a failure)
 * can make fail or kill the process, to prove what a crash or an error at that exact step does to a
 * table. Switched on by the environment, read once when this module loads:
 *
 * ```sh
 * LANCET_FAILPOINTS=graft.after-publish            # that step throws (a FailpointError)
 * LANCET_FAILPOINTS=graft.before-publish:kill      # that step kills the process (SIGKILL, no cleanup)
 * LANCET_FAILPOINTS=lock.after-create:exit,commit.before-marker:fail@2   # exit(70); fail the 2nd time
 * ```
 *
 * Each entry is `name[:fail|kill|exit][@n]`: the action (default `fail`) happens at the n-th time the
 * step is reached in this process (default: every time). An unknown name or action is refused with
 * CONFIG_INVALID before a job starts ({@link checkFailpoints}, called by option validation) and by
 * every failpoint, so a typo never tests nothing. When the variable is unset, {@link failpoint} is
 * one comparison against `undefined`.
 */
import { BackfillError, ConfigError } from "./errors.ts";

/** Every failpoint Lancet has, with the step it interrupts. */
export const FAILPOINTS = {
  "graft.after-move": "the graft moved a staged column file into the table's data/ folder; no manifest refers to it yet",
  "graft.verify-fail": "the graft's shadow read-back of the staged version (before anything is published) fails",
  "graft.before-publish": "the graft verified its staged version and wrote its transaction file; the manifest is not linked yet",
  "graft.after-publish": "the graft's version was linked as the table's newest; its read-back from the table has not run yet",
  "graft.after-hint": "the graft published and verified its version and updated latest_version_hint.json",
  "commit.before-marker": "a fragment group was committed; its done markers are not written yet",
  "refragment.mid-rewrite": "refragment wrote part of the new fragments; the rewrite is not committed yet",
  "lock.after-create": "a column lock file was created; the lock is not confirmed to its holder yet",
  "chunk.after-flush": "a worker expanding a chunk view appended a buffer of children; the coordinator has not recorded their parents as expanded yet",
  "udtf.after-partition": "a worker computing a UDTF view staged a partition's rows; the coordinator has not recorded the partition as done yet",
  "udtf.before-swap": "a UDTF view's refresh staged every partition; it has not replaced the view's rows yet",
  "udtf.before-split": "a UDTF view's refresh replaced the view's rows and wrote its watermark; it has not split the view's fragments to maxRowsPerFragment yet",
  "view.mid-sync": "a view refresh removed the rows that are gone or changed; it has not appended the new and changed rows yet",
} as const;

export type FailpointName = keyof typeof FAILPOINTS;
type Action = "fail" | "kill" | "exit";

interface Armed {
  readonly action: Action;
  readonly at: number | undefined;
  hits: number;
}

/** Raised at a failpoint whose action is `fail`. */
export class FailpointError extends BackfillError {
  readonly failpoint: FailpointName;
  constructor(name: FailpointName) {
    super("INTERNAL", `failpoint ${name} (LANCET_FAILPOINTS): ${FAILPOINTS[name]}`);
    this.name = "FailpointError";
    this.failpoint = name;
  }
}

/** Parses `LANCET_FAILPOINTS`; throws on an unknown name or action. Exported for tests. */
export function parseFailpoints(spec: string | undefined): Map<FailpointName, Armed> | undefined {
  if (spec === undefined || spec.trim() === "") return undefined;
  const out = new Map<FailpointName, Armed>();
  for (const entry of spec.split(",").map((s) => s.trim()).filter(Boolean)) {
    const m = /^([a-z.-]+)(?::(fail|kill|exit))?(?:@(\d+))?$/.exec(entry);
    if (!m || !(m[1]! in FAILPOINTS)) {
      throw new ConfigError("CONFIG_INVALID", `LANCET_FAILPOINTS entry "${entry}" is not name[:fail|kill|exit][@n] with a known name; use one of ${Object.keys(FAILPOINTS).join(", ")}, or unset LANCET_FAILPOINTS`);
    }
    out.set(m[1] as FailpointName, { action: (m[2] as Action | undefined) ?? "fail", at: m[3] === undefined ? undefined : Number(m[3]), hits: 0 });
  }
  return out;
}

let invalid: unknown;
const armed = ((): Map<FailpointName, Armed> | undefined => {
  try {
    return parseFailpoints(process.env.LANCET_FAILPOINTS);
  } catch (e) {
    invalid = e;
    return new Map();
  }
})();

/** Throws CONFIG_INVALID when `LANCET_FAILPOINTS` is set but not valid. */
export function checkFailpoints(): void {
  if (invalid !== undefined) throw invalid;
}

/** Marks a step; does nothing unless `LANCET_FAILPOINTS` names it. */
export function failpoint(name: FailpointName): void {
  if (armed === undefined) return;
  checkFailpoints();
  const a = armed.get(name);
  if (a === undefined) return;
  a.hits++;
  if (a.at !== undefined && a.hits !== a.at) return;
  switch (a.action) {
    case "kill":
      process.kill(process.pid, "SIGKILL");
      break;
    case "exit":
      process.exit(70);
      break;
    case "fail":
      throw new FailpointError(name);
  }
}
