/** Draws backfill progress: a redrawn bar on a TTY, a plain line every second otherwise. */
import { formatShares } from "../jobs/diagnose.ts";
import type { BackfillProgress } from "../options.ts";
import { flagText, type CliIo } from "./shared.ts";

export class ProgressView {
  private readonly io: CliIo;
  private readonly mode: "bar" | "lines" | "none";
  private lastDraw = 0;
  private drawn = false;
  private lastLine = "";
  /** Set once the job has started running: nothing is drawn before (a job failing validation draws no bar). */
  private started = false;

  constructor(io: CliIo, mode: "bar" | "lines" | "none") {
    this.io = io;
    this.mode = mode;
  }

  static line(p: BackfillProgress): string {
    const pct = p.rowsPlanned > 0 ? Math.min(100, (100 * p.rowsProcessed) / p.rowsPlanned) : 100;
    const rate = p.elapsedMs > 0 ? Math.round((p.rowsProcessed * 1000) / p.elapsedMs) : 0;
    const left = p.rowsPlanned - p.rowsProcessed;
    // An estimate only while the job is still working toward it: never on a cancelled or failed job.
    const working = p.phase === "running" || p.phase === "committing";
    const eta = working && rate > 0 && left > 0 ? ` eta ${Math.ceil(left / rate)}s` : "";
    return (
      `${p.phase} ${pct.toFixed(1)}% | computed ${p.rowsComputed.toLocaleString("en-US")} checkpointed ${p.rowsCheckpointed.toLocaleString("en-US")} ` +
      `committed ${p.rowsCommitted.toLocaleString("en-US")} of ${p.rowsPlanned.toLocaleString("en-US")} rows | fragments ${p.fragmentsCommitted}/${p.fragmentsPlanned} | ${rate.toLocaleString("en-US")} rows/s${eta}`
    );
  }

  /** The per-stage shares and the diagnosis, when there is one (its advice naming backfill's flags). */
  static diagnosisLine(p: BackfillProgress): string {
    const d = p.diagnosis;
    if (!d || d.bound === "none") return "";
    return `${formatShares(d)} | ${flagText(d.summary)}${d.hint ? ` — ${flagText(d.hint)}` : ""}`;
  }

  /**
   * Draws `p`, at most every 100 ms (bar) or 1 s (lines) unless final or `force`d. Nothing is drawn
   * before the job has started (or unless `force`d, as `jobs watch` does with stored records), nor for
   * a job with nothing to do (no fragments planned): the summary says so instead.
   */
  update(p: BackfillProgress, force = false): void {
    if (this.mode === "none") return;
    if (p.status === "running") this.started = true;
    if (!this.started && !force) return;
    if (p.fragmentsPlanned === 0 && p.rowsPlanned === 0) return;
    const now = Date.now();
    const final = p.phase === "finished" || p.phase === "failed" || p.phase === "cancelled";
    if (!final && !force && now - this.lastDraw < (this.mode === "bar" ? 100 : 1000)) return;
    this.lastDraw = now;
    const line = ProgressView.line(p);
    const diag = ProgressView.diagnosisLine(p);
    if (this.mode === "bar") {
      const pct = p.rowsPlanned > 0 ? Math.min(1, p.rowsProcessed / p.rowsPlanned) : 1;
      const width = 24;
      const fill = Math.round(pct * width);
      // Two lines: the bar, then the diagnosis; redraw both in place.
      this.io.stderr.write(`${this.drawn ? "\x1b[1A\r\x1b[2K" : ""}[${"#".repeat(fill)}${"-".repeat(width - fill)}] ${line}\n\x1b[2K${diag}`);
      this.drawn = true;
    } else if (line !== this.lastLine) {
      this.io.stderr.write(line + (diag ? `\n  ${diag}` : "") + "\n");
      this.lastLine = line;
    }
  }

  done(): void {
    if (this.mode === "bar" && this.drawn) this.io.stderr.write("\n");
  }
}
