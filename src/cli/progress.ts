/** Draws backfill progress: a redrawn bar on a TTY, a plain line every second otherwise. */
import type { BackfillProgress } from "../options.ts";
import type { CliIo } from "./main.ts";

export class ProgressView {
  private readonly io: CliIo;
  private readonly mode: "bar" | "lines" | "none";
  private lastDraw = 0;
  private drawn = false;
  private lastLine = "";

  constructor(io: CliIo, mode: "bar" | "lines" | "none") {
    this.io = io;
    this.mode = mode;
  }

  static line(p: BackfillProgress): string {
    const pct = p.rowsPlanned > 0 ? Math.min(100, (100 * p.rowsProcessed) / p.rowsPlanned) : 100;
    const rate = p.elapsedMs > 0 ? Math.round((p.rowsProcessed * 1000) / p.elapsedMs) : 0;
    const left = p.rowsPlanned - p.rowsProcessed;
    const eta = rate > 0 && left > 0 ? ` eta ${Math.ceil(left / rate)}s` : "";
    return (
      `${p.phase} ${pct.toFixed(1)}% | computed ${p.rowsComputed.toLocaleString("en-US")} checkpointed ${p.rowsCheckpointed.toLocaleString("en-US")} ` +
      `committed ${p.rowsCommitted.toLocaleString("en-US")} of ${p.rowsPlanned.toLocaleString("en-US")} rows | fragments ${p.fragmentsCommitted}/${p.fragmentsPlanned} | ${rate.toLocaleString("en-US")} rows/s${eta}`
    );
  }

  update(p: BackfillProgress): void {
    if (this.mode === "none") return;
    const now = Date.now();
    const final = p.phase === "finished" || p.phase === "failed";
    if (!final && now - this.lastDraw < (this.mode === "bar" ? 100 : 1000)) return;
    this.lastDraw = now;
    const line = ProgressView.line(p);
    if (this.mode === "bar") {
      const pct = p.rowsPlanned > 0 ? Math.min(1, p.rowsProcessed / p.rowsPlanned) : 1;
      const width = 24;
      const fill = Math.round(pct * width);
      this.io.stderr.write(`\r\x1b[2K[${"#".repeat(fill)}${"-".repeat(width - fill)}] ${line}`);
      this.drawn = true;
    } else if (line !== this.lastLine) {
      this.io.stderr.write(line + "\n");
      this.lastLine = line;
    }
  }

  done(): void {
    if (this.mode === "bar" && this.drawn) this.io.stderr.write("\n");
  }
}
