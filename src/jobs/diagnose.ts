/**
 * Diagnosis: from a job's stage timings, which stage is on the critical path and what to change.
 * Pure. Each stage's critical-path time is its total time divided by the parallelism it actually
 * had: workers for read/UDF/checkpoint, concurrent writers (at most one per fragment) for writes, one
 * for commit bookkeeping.
 */
import type { Diagnosis, JobMetrics, Stage } from "./record.ts";

export interface DiagnoseContext {
  readonly concurrency: number;
  readonly intraApplierConcurrency: number;
  readonly writerConcurrency: number;
  /** Cores on the machine running the workers. */
  readonly cores: number;
  /**
   * What kind of UDF runs, so advice fits it: `intraApplierConcurrency` only overlaps the calls of a
   * scalar UDF that returns promises. When absent, advice that depends on it says so.
   */
  readonly udf?: UdfTraits;
}

/** What the diagnosis knows of the UDF. */
export interface UdfTraits {
  /** Vectorized (`batch: true`): one call per batch, so there are no calls to overlap within a worker. */
  readonly batch: boolean;
  /** The scalar function returns promises; `undefined` when not known. */
  readonly async?: boolean | undefined;
}

const STAGES: Stage[] = ["read", "udf", "checkpoint", "writer", "commit"];

export function diagnose(m: JobMetrics, ctx: DiagnoseContext): Diagnosis {
  const workers = Math.max(1, Math.min(ctx.concurrency, m.tasksTotal || ctx.concurrency));
  const writers = Math.max(1, Math.min(ctx.writerConcurrency, m.fragmentsPlanned || 1));
  const critical: Record<Stage, number> = {
    read: m.readMs / workers,
    udf: m.udfMs / workers,
    checkpoint: m.checkpointMs / workers,
    writer: m.writeMs / writers,
    commit: m.commitMs,
  };
  const total = STAGES.reduce((s, k) => s + critical[k], 0);
  const shares = Object.fromEntries(STAGES.map((k) => [k, total > 0 ? critical[k] / total : 0])) as Record<Stage, number>;
  // A job that had nothing to compute is not bound by anything; its timings are bookkeeping.
  const allDone = m.tasksDone >= m.tasksTotal && m.fragmentsCommitted + m.fragmentsFailed >= m.fragmentsPlanned;
  if (allDone && m.rowsComputed === 0 && m.rowsCommitted === 0 && m.rowsSkipped === 0) {
    const summary = m.rowsProcessed > 0 ? `nothing to do: the row selection matched none of the ${m.rowsProcessed} row${m.rowsProcessed === 1 ? "" : "s"} scanned` : "nothing to do: no rows needed computing";
    return { bound: "none", shares, summary, hint: "" };
  }
  if (allDone && m.rowsComputed === 0 && m.rowsSkipped === 0) {
    return { bound: "none", shares, summary: `nothing computed: committed ${m.rowsCommitted} row${m.rowsCommitted === 1 ? "" : "s"} an earlier run had checkpointed`, hint: "" };
  }
  if (total < 50 || m.rowsProcessed === 0) {
    return { bound: "none", shares, summary: "not enough work done yet to diagnose", hint: "" };
  }
  const bound = STAGES.reduce((a, b) => (critical[b] > critical[a] ? b : a));
  const pct = `${Math.round(shares[bound] * 100)}% of the critical path`;
  switch (bound) {
    case "writer": {
      if (m.fragmentsPlanned < 2 * workers) {
        const want = Math.max(2 * workers, 2 * ctx.writerConcurrency);
        return {
          bound,
          shares,
          summary: `writer-bound (${pct}): ${m.fragmentsPlanned} fragment${m.fragmentsPlanned === 1 ? "" : "s"} for ${workers} worker${workers === 1 ? "" : "s"}; each fragment has one serial writer`,
          hint: `split the table into ≥ ${want} fragments (see \`lancet refragment --max-rows-per-fragment\`)`,
        };
      }
      return {
        bound,
        shares,
        summary: `writer-bound (${pct}): writing the output dominates (${ctx.writerConcurrency} concurrent writer${ctx.writerConcurrency === 1 ? "" : "s"})`,
        hint: writers < Math.min(m.fragmentsPlanned, ctx.cores) ? `raise writerConcurrency (now ${ctx.writerConcurrency})` : "the output is large for this machine's disk and cores; more machines or smaller outputs help",
      };
    }
    case "udf": {
      const ioWait = m.udfCpuMs < 0.5 * m.udfMs;
      if (ioWait) {
        const summary = `UDF-bound (${pct}), mostly waiting: the ${ctx.udf?.batch ? "batch " : ""}UDF used ${Math.round((100 * m.udfCpuMs) / Math.max(1, m.udfMs))}% CPU while running${workers > ctx.cores ? ` (${workers} workers on ${ctx.cores} cores)` : ""}`;
        // Synchronous calls cannot overlap in a worker: more workers help, unless they already wait for CPU.
        const sync = workers > ctx.cores ? `its workers may be waiting for CPU: lower concurrency to ${ctx.cores}` : `raise concurrency (now ${workers} worker process${workers === 1 ? "" : "es"})`;
        const intra = `raise intraApplierConcurrency (now ${ctx.intraApplierConcurrency})`;
        let hint: string;
        if (ctx.udf?.batch) hint = `a batch UDF makes one call at a time per worker (intraApplierConcurrency does not apply): ${sync}`;
        else if (ctx.udf?.async === true) hint = `an async UDF waiting on I/O: ${intra}`;
        else if (ctx.udf?.async === false) hint = `a synchronous UDF blocks its worker (synchronous I/O, sleeps): ${sync}; or make it async and ${intra}`;
        else hint = `if the UDF returns promises (I/O), ${intra}; if it is synchronous, ${sync}`;
        return { bound, shares, summary, hint };
      }
      if (workers < ctx.cores) {
        return { bound, shares, summary: `UDF-bound (${pct}) with idle cores: ${workers} worker${workers === 1 ? "" : "s"} on ${ctx.cores} cores`, hint: `raise concurrency to ${ctx.cores}${m.tasksTotal < ctx.cores ? ` and lower taskSize (only ${m.tasksTotal} tasks)` : ""}` };
      }
      return { bound, shares, summary: `UDF-bound (${pct}): the UDF's compute dominates and every core is busy`, hint: "a faster UDF (batch: true, vectorised) or more machines" };
    }
    case "read":
      return { bound, shares, summary: `read-bound (${pct}): reading input columns dominates`, hint: workers < ctx.cores ? `raise concurrency (now ${workers})` : "select fewer or smaller input columns, or use faster storage" };
    case "checkpoint":
      return { bound, shares, summary: `checkpoint-bound (${pct}): storing checkpoints dominates`, hint: "raise checkpointSize / maxCheckpointSize (fewer, larger checkpoints), or keep checkpoints on faster storage" };
    case "commit":
      if (m.commits === 0) return { bound, shares, summary: `commit-bound (${pct}): preparing the first commit (keys, indexes, layout checks)`, hint: "" };
      return { bound, shares, summary: `commit-bound (${pct}): commit bookkeeping dominates (${m.commits} commit${m.commits === 1 ? "" : "s"})`, hint: "raise commitGranularity, or use fewer, larger fragments" };
  }
}

/** "udf 62% · read 20% · …" for progress lines. */
export function formatShares(d: Diagnosis): string {
  return STAGES.map((k) => `${k} ${Math.round(d.shares[k] * 100)}%`).join(" · ");
}
