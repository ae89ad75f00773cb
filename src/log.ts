/** A minimal injected logger; Lancet's library code never prints on its own. */
export interface Logger {
  debug(msg: string, meta?: Record<string, unknown>): void;
  info(msg: string, meta?: Record<string, unknown>): void;
  warn(msg: string, meta?: Record<string, unknown>): void;
  error(msg: string, meta?: Record<string, unknown>): void;
  child(meta: Record<string, unknown>): Logger;
}

/** Drops everything. */
export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child() {
    return silentLogger;
  },
};

/** Writes warnings and errors (or everything at `level: "debug"`) to stderr as one line each. */
export function stderrLogger(level: "debug" | "info" | "warn" = "warn", base: Record<string, unknown> = {}): Logger {
  const rank = { debug: 0, info: 1, warn: 2, error: 3 } as const;
  const emit = (l: keyof typeof rank, msg: string, meta?: Record<string, unknown>): void => {
    if (rank[l] < rank[level]) return;
    const m = { ...base, ...meta };
    process.stderr.write(`[lancet] ${l}: ${msg}${Object.keys(m).length ? " " + JSON.stringify(m) : ""}\n`);
  };
  return {
    debug: (m, x) => emit("debug", m, x),
    info: (m, x) => emit("info", m, x),
    warn: (m, x) => emit("warn", m, x),
    error: (m, x) => emit("error", m, x),
    child: (meta) => stderrLogger(level, { ...base, ...meta }),
  };
}
