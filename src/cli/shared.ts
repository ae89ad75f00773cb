/**
 * What every CLI command shares: injected I/O, the flag table each command declares (parsing, help,
 * typo suggestions and option-name translation all come from it, so they cannot drift), usage errors
 * and error reporting.
 */
import { canonical, isRemote, registerStorage } from "../storage/location.ts";
import { parseStorageOption, resolveStorageOptions } from "../storage/object-store.ts";
import { isBackfillError } from "../errors.ts";

export interface CliIo {
  readonly stdout: { write(s: string): unknown };
  readonly stderr: { write(s: string): unknown };
  readonly isTTY: boolean;
}

/** One flag of a command. */
export interface FlagSpec {
  /** Without the dashes: `concurrency` for `--concurrency`. */
  readonly name: string;
  /** `boolean` flags take no value. */
  readonly type: "string" | "boolean";
  /** Repeatable: every occurrence is kept, in order. */
  readonly multiple?: boolean;
  /** The value's placeholder in help (`N`, `DIR`). */
  readonly value?: string;
  readonly help: string;
  /** Shown in help as `(default: …)`. */
  readonly default?: string;
  readonly required?: boolean;
  /** The value is an integer (checked here, named by the flag, before the library sees it). */
  readonly integer?: boolean;
  /**
   * The library option this flag sets (`admissionTimeoutMs` for `--admission-timeout-ms`): messages
   * that name the option are rewritten to name the flag.
   */
  readonly option?: string;
}

/** A command (or a subcommand, `jobs show`): its flags, positionals, help text and an example. */
export interface CommandSpec {
  /** As typed after `lancet`: `backfill`, `jobs show`. */
  readonly name: string;
  /** One line: what the command does. */
  readonly summary: string;
  /** The synopsis after `lancet NAME`, e.g. `--db DIR --table NAME --column COL [options]`. */
  readonly synopsis: string;
  readonly flags: readonly FlagSpec[];
  /** Names of the positional arguments, in order (`ID`); none when absent. */
  readonly positionals?: readonly string[];
  /** Paragraphs printed after the flags. */
  readonly notes?: string;
  /** One runnable example (without the leading `lancet `). */
  readonly example: string;
  /** Subcommands listed in this command's help (`jobs` lists `show`, `cancel`, `watch`). */
  readonly subcommands?: readonly CommandSpec[];
}

/** Flags several commands share, declared once. */
export const DB: FlagSpec = { name: "db", type: "string", value: "DIR|URI", help: "database: a directory or s3://bucket/prefix (what you pass to lancedb.connect())", required: true, default: "$LANCET_DB" };
/** Object storage settings, for a `--db s3://…` (any command with --db takes it). */
export const STORAGE_OPTION: FlagSpec = { name: "storage-option", type: "string", value: "KEY=VALUE", multiple: true, help: "with --db s3://…: a LanceDB storage option (endpoint, region, access_key_id, secret_access_key, allow_http, …)", default: "from AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY" };
export const TABLE: FlagSpec = { name: "table", type: "string", value: "NAME", help: "table name", required: true };
export const COLUMN: FlagSpec = { name: "column", type: "string", value: "COL", help: "column name", required: true };
export const JSON_FLAG: FlagSpec = { name: "json", type: "boolean", help: "machine-readable output: the last line of stdout is one JSON value" };
export const HELP: FlagSpec = { name: "help", type: "boolean", help: "show this help" };

/**
 * `lancet backfill`'s flags. Declared here because job diagnoses (`backfill`'s summary, `jobs show`,
 * `jobs watch`) name backfill options, which {@link flagText} turns into these flags.
 */
export const BACKFILL: CommandSpec = {
  name: "backfill",
  summary: "compute a UDF column's missing values and commit them (checkpointed, resumable)",
  synopsis: "--db DIR --table NAME --column COL [options]",
  flags: [
    DB,
    STORAGE_OPTION,
    TABLE,
    { ...COLUMN, help: "the UDF column to fill" },
    { name: "concurrency", type: "string", value: "N", integer: true, option: "concurrency", help: "worker processes", default: "min(8, cores); with --redis the live workers' slots" },
    { name: "intra-applier-concurrency", type: "string", value: "N", integer: true, option: "intraApplierConcurrency", help: "UDF calls in flight per worker (async UDFs)", default: "1" },
    { name: "checkpoint-size", type: "string", value: "N", integer: true, option: "checkpointSize", help: "rows per checkpoint batch", default: "max(100, 8 × intra), growing adaptively" },
    { name: "max-checkpoint-size", type: "string", value: "N", integer: true, option: "maxCheckpointSize", help: "upper bound of adaptive checkpoint batches", default: "65536" },
    { name: "task-size", type: "string", value: "N", integer: true, option: "taskSize", help: "rows per task", default: "rows / (concurrency × 2)" },
    { name: "commit-granularity", type: "string", value: "N", integer: true, option: "commitGranularity", help: "fragments per commit", default: "min(64, max(1, fragments / 20))" },
    { name: "writer-concurrency", type: "string", value: "N", integer: true, option: "writerConcurrency", help: "fragment writers at once", default: "min(4, concurrency)" },
    { name: "status-interval-ms", type: "string", value: "N", integer: true, option: "statusIntervalMs", help: "how often the job record is saved (and heartbeats)", default: "2000" },
    { name: "error-policy", type: "string", value: "P", option: "errorPolicy", help: "fail | skip | retry:N (overrides the UDF's errorPolicy)", default: "the UDF's, else fail" },
    { name: "commit-mode", type: "string", value: "M", option: "commitMode", help: "auto | graft | merge", default: "auto: graft where safe" },
    { name: "task-timeout-ms", type: "string", value: "N", integer: true, option: "taskTimeoutMs", help: "kill a worker that finishes no batch for N ms", default: "1800000" },
    { name: "worker-memory-mb", type: "string", value: "N", integer: true, option: "workerMemoryMb", help: "heap limit of each worker process", default: "the UDF's memory hint" },
    { name: "where", type: "string", value: "SQL", option: "where", help: "recompute rows matching SQL; other rows keep their values", default: "rows not yet computed" },
    { name: "num-frags", type: "string", value: "N", integer: true, option: "numFrags", help: "only the first N fragments (a pilot run)", default: "all" },
    { name: "max-task-attempts", type: "string", value: "N", integer: true, option: "maxTaskAttempts", help: "attempts per task when its worker dies", default: "3" },
    { name: "env", type: "string", value: "KEY=VALUE", multiple: true, option: "env", help: "environment variable for the UDF's worker processes" },
    { name: "redis", type: "string", value: "URL", option: "redis", help: "run tasks on `lancet worker`s through a BullMQ queue on Redis", default: "$LANCET_REDIS_URL, else run locally" },
    { name: "queue", type: "string", value: "NAME", option: "queue", help: "base queue name with --redis (tasks go to NAME-cpu / NAME-gpu)", default: "$LANCET_QUEUE, else lancet" },
    { name: "admission-timeout-ms", type: "string", value: "N", integer: true, option: "admissionTimeoutMs", help: "with --redis: how long to wait for a live worker that can run the UDF", default: "600000" },
    { name: "plan", type: "boolean", option: "planOnly", help: "print the plan and run nothing" },
    { ...JSON_FLAG, help: "machine-readable output: the last line of stdout is the job record as backfill() returns it" },
    { name: "verbose", type: "boolean", help: "log to stderr" },
  ],
  notes:
    "Progress goes to stderr (a bar on a terminal, a line a second otherwise); the summary to stdout.\n" +
    "Exit 0 when the job finished, 1 when it failed or was cancelled, 2 on a usage error.",
  example: "backfill --db ./data --table docs --column embedding --concurrency 4",
};

/**
 * A command-line mistake: exit 2, the message, then a pointer to the command's help. `command` is
 * the command whose help to point to (`backfill`, `jobs show`); undefined points to `lancet --help`.
 */
export class UsageError extends Error {
  readonly command: string | undefined;
  constructor(message: string, command?: string) {
    super(message);
    this.command = command;
  }
}

export type FlagValues = Record<string, string | boolean | string[] | undefined>;

export interface Parsed {
  readonly values: FlagValues;
  readonly positionals: string[];
  /** `--help` or `-h` was given: print the command's help and do nothing else. */
  readonly help: boolean;
}

/**
 * Parses `args` against the command's flags: `--flag value`, `--flag=value`, `-h`, `--` (the rest is
 * positional). Unknown flags, missing values and extra arguments are UsageErrors naming the flag as
 * typed, with a "did you mean" when a flag is close. Required flags are checked unless `--help`.
 */
export function parseFlags(spec: CommandSpec, args: readonly string[]): Parsed {
  // `--help` wins over everything else on the line, mistakes included (`backfill --concurency 2 --help`).
  const end = args.indexOf("--");
  if ((end < 0 ? args : args.slice(0, end)).some((a) => a === "--help" || a === "-h")) return { values: {}, positionals: [], help: true };
  const byName = new Map(spec.flags.map((f) => [f.name, f]));
  const values: FlagValues = {};
  const positionals: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--") {
      positionals.push(...args.slice(i + 1));
      break;
    }
    if (a.startsWith("--")) {
      const eq = a.indexOf("=");
      const name = a.slice(2, eq < 0 ? undefined : eq);
      const f = byName.get(name);
      if (!f) throw new UsageError(unknownFlag(spec, `--${name}`), spec.name);
      if (f.type === "boolean") {
        if (eq >= 0) throw new UsageError(`--${name} takes no value (got ${JSON.stringify(a.slice(eq + 1))})`, spec.name);
        values[name] = true;
        continue;
      }
      let v: string;
      if (eq >= 0) v = a.slice(eq + 1);
      else {
        const next = args[i + 1];
        if (next === undefined || (next.startsWith("--") && next.length > 2)) throw new UsageError(`--${name} needs a value (${f.value ?? "VALUE"})`, spec.name);
        v = next;
        i++;
      }
      if (f.multiple) values[name] = [...((values[name] as string[] | undefined) ?? []), v];
      else values[name] = v;
      continue;
    }
    if (a.startsWith("-") && a.length > 1 && !/^-\d/.test(a)) throw new UsageError(unknownFlag(spec, a), spec.name);
    positionals.push(a);
  }
  const allowed = spec.positionals ?? [];
  if (positionals.length > allowed.length) {
    const extra = positionals[allowed.length]!;
    const sub = spec.subcommands?.map((s) => s.name.split(" ").at(-1)!) ?? [];
    const near = suggest(extra, sub);
    throw new UsageError(
      allowed.length === 0 && sub.length > 0
        ? `unknown ${spec.name} command ${JSON.stringify(extra)}${near ? `; did you mean ${near}?` : `; use ${sub.join(", ")}`}`
        : `unexpected argument ${JSON.stringify(extra)}`,
      spec.name,
    );
  }
  if (byName.has("db")) useDatabase(spec, values);
  for (const f of spec.flags) {
    const v = values[f.name];
    if (f.required && (v === undefined || v === "")) throw new UsageError(`--${f.name} ${f.value ?? "VALUE"} is required${f.name === "db" ? " (or LANCET_DB)" : ""}`, spec.name);
    if (f.integer && typeof v === "string" && !/^-?\d+$/.test(v)) throw new UsageError(`--${f.name} must be an integer (got ${JSON.stringify(v)})`, spec.name);
  }
  for (const [i, p] of allowed.entries()) if (positionals[i] === undefined) throw new UsageError(`${spec.name} needs ${p}`, spec.name);
  return { values, positionals, help: false };
}

/**
 * `--db` from `LANCET_DB` when not given; for object storage, registers the database's storage
 * options (`--storage-option KEY=VALUE` over the AWS_* environment) for every call this process makes.
 */
function useDatabase(spec: CommandSpec, values: FlagValues): void {
  if ((values.db === undefined || values.db === "") && process.env.LANCET_DB) values.db = process.env.LANCET_DB;
  const given = storageOptionFlags(values, spec.name);
  if (typeof values.db === "string" && isRemote(values.db)) registerStorage(canonical(values.db), resolveStorageOptions(given, process.env));
  else if (Object.keys(given).length > 0) throw new UsageError(`--storage-option is for a database on object storage (--db s3://bucket/prefix); ${JSON.stringify(values.db)} is a directory`, spec.name);
}

/** The `--storage-option KEY=VALUE` flags as an object; a UsageError for one that is not KEY=VALUE. */
export function storageOptionFlags(values: FlagValues, command: string): Record<string, string> {
  const given: Record<string, string> = {};
  for (const o of (values["storage-option"] as string[] | undefined) ?? []) {
    try {
      const [k, v] = parseStorageOption(o);
      given[k] = v;
    } catch (e) {
      throw new UsageError(`--storage-option ${JSON.stringify(o)}: ${(e as Error).message}`, command);
    }
  }
  return given;
}

function unknownFlag(spec: CommandSpec, typed: string): string {
  // Compare in kebab case, so a library option name (`--admissionTimeoutMs`) finds its flag too.
  const kebab = typed.replace(/^-+/, "").replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`).replace(/_/g, "-");
  const near = suggest(kebab, spec.flags.map((f) => f.name));
  return `unknown flag ${typed} for ${spec.name}${near ? `; did you mean --${near}?` : ""}`;
}

/**
 * Damerau–Levenshtein distance (optimal string alignment): insertions, deletions, substitutions and
 * swaps of neighbours each cost 1.
 */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * The candidate closest to `typed`, when it is close enough to be a typo: within 1 edit for words of
 * up to 4 letters, 2 up to 8, 3 beyond; or the only candidate `typed` is a prefix of.
 */
export function suggest(typed: string, candidates: readonly string[]): string | undefined {
  const t = typed.toLowerCase();
  const limit = t.length <= 4 ? 1 : t.length <= 8 ? 2 : 3;
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = editDistance(t, c);
    if (d < bestD) [best, bestD] = [c, d];
  }
  if (best !== undefined && bestD <= limit && bestD < t.length) return best;
  const prefixed = t.length >= 3 ? candidates.filter((c) => c.startsWith(t)) : [];
  return prefixed.length === 1 ? prefixed[0] : undefined;
}

/** A command's help: what it does, the synopsis, each flag with its default, notes and an example. */
export function formatHelp(spec: CommandSpec): string {
  const rows: [string, string][] = spec.flags.map((f) => [
    `--${f.name}${f.type === "string" ? ` ${f.value ?? "VALUE"}` : ""}`,
    `${f.help}${f.required ? " (required)" : ""}${f.multiple ? " (repeatable)" : ""}${f.default !== undefined ? ` (default: ${f.default})` : ""}`,
  ]);
  rows.push(["-h, --help", HELP.help]);
  const width = Math.min(32, Math.max(...rows.map(([l]) => l.length)) + 2);
  const lines = [`lancet ${spec.name} — ${spec.summary}`, "", "Usage:", `  lancet ${spec.name} ${spec.synopsis}`];
  for (const s of spec.subcommands ?? []) lines.push(`  lancet ${s.name} ${s.synopsis}`);
  lines.push("", "Flags:");
  for (const [l, r] of rows) lines.push(`  ${l.length >= width ? `${l}\n  ${" ".repeat(width)}` : l.padEnd(width)}${r}`);
  if (spec.subcommands?.length) {
    lines.push("", "Commands:");
    for (const s of spec.subcommands) lines.push(`  ${s.name.padEnd(width)}${s.summary}`);
    lines.push("", `Run \`lancet ${spec.name} COMMAND --help\` for a command's flags.`);
  }
  if (spec.notes) lines.push("", spec.notes);
  lines.push("", "Example:", `  lancet ${spec.example}`, "");
  return lines.join("\n");
}

/** A string flag's value; a UsageError naming the flag when it is required and missing. */
export function opt(values: FlagValues, name: string): string {
  const v = values[name];
  if (typeof v !== "string" || v.length === 0) throw new UsageError(`--${name} is required`);
  return v;
}

/** A string flag's value, else the environment variable standing in for it (`--redis` / LANCET_REDIS_URL). */
export function flagOrEnv(values: FlagValues, name: string, envName: string): string | undefined {
  const v = values[name];
  return typeof v === "string" ? v : process.env[envName];
}

/** An integer flag's value; a UsageError naming the flag when it is not an integer. */
export function intOpt(values: FlagValues, name: string, command?: string): number | undefined {
  const v = values[name];
  if (v === undefined) return undefined;
  const s = String(v);
  if (!/^-?\d+$/.test(s)) throw new UsageError(`--${name} must be an integer (got ${JSON.stringify(s)})`, command);
  return Number(s);
}

export function fmt(n: number): string {
  return n.toLocaleString("en-US");
}

/**
 * Rewrites a library message to name the command's flags instead of the options they set:
 * `options.concurrency must be …` → `--concurrency must be …`, `raise admissionTimeoutMs` →
 * `raise --admission-timeout-ms`, `pass force: true (CLI: …)` → `pass --force`. The mapping comes
 * from the command's flag table. Returns the message and whether it named a flag's option at the
 * start, or the flag itself (a bad flag value the library caught: a usage error).
 */
export function translateMessage(message: string, spec: CommandSpec | undefined): { message: string; badFlag: boolean } {
  if (!spec) return { message, badFlag: false };
  const flagOf = new Map<string, string>();
  for (const f of spec.flags) if (f.option !== undefined) flagOf.set(f.option, `--${f.name}`);
  let badFlag = false;
  let out = message
    // The library's hint of the executor object's shape means nothing on the command line.
    .replace(/; pass "local" or \{[^}]*\}$/, "")
    .replace(/\boptions\.executor ?\.(\w+)/g, (m, k: string) => flagOf.get(k) ?? m)
    .replace(/\boptions\.(\w+)/g, (m, k: string) => flagOf.get(k) ?? m)
    .replace(/\bpass (\w+): true(?: \(CLI: [^)]*\))?/g, (m, k: string) => (flagOf.has(k) ? `pass ${flagOf.get(k)!}` : m));
  // Bare option names in hints: camelCase ones anywhere (never an ordinary word: "raise
  // admissionTimeoutMs"), one-word ones after a verb of advice ("raise concurrency").
  out = out.replace(/(?<![-.\w])([a-z]+[A-Z]\w*)\b/g, (m, k: string) => flagOf.get(k) ?? m);
  out = out.replace(/\b(raise|lower|set|increase|decrease|reduce) ([a-z]+)\b/g, (m, verb: string, k: string) => (flagOf.has(k) ? `${verb} ${flagOf.get(k)!}` : m));
  // A message that starts with an option a flag sets, or with the flag itself (`--resources: …`).
  const first = /^options\.(?:executor ?\.)?(\w+)/.exec(message);
  if (first && flagOf.has(first[1]!)) badFlag = true;
  const flag = /^--([a-z][a-z-]*)/.exec(message);
  if (flag && spec.flags.some((f) => f.name === flag[1])) badFlag = true;
  return { message: out, badFlag };
}

/** Library text (a diagnosis hint: `raise intraApplierConcurrency`) with backfill's flags named instead. */
export function flagText(text: string): string {
  return translateMessage(text, BACKFILL).message;
}

export interface ReportOptions {
  /** `--json` was given: also print the failure as the last line of stdout. */
  readonly json: boolean;
  /** The command that failed: its flags name options in messages; usage errors point to its help. */
  readonly spec?: CommandSpec | undefined;
  /** The JSON line to print on failure, before `error` is added; `{ status: "failed" }` by default. */
  readonly jsonBase?: Record<string, unknown>;
}

/**
 * Prints a failure and returns the exit code: 2 for usage errors (unknown command or flag, missing or
 * bad flag value, also when the library caught the bad value) with a pointer to the command's help;
 * 1 for runtime errors, printed as `lancet: error CODE: message`.
 */
export function report(e: unknown, io: CliIo, options: ReportOptions): number {
  const spec = options.spec;
  const base = options.jsonBase ?? { status: "failed" };
  const raw = (e as Error)?.message ?? String(e);
  const { message, badFlag } = translateMessage(raw, spec);
  const configCode = isBackfillError(e) && (e.code === "CONFIG_INVALID" || e.code === "WHERE_INVALID") ? e.code : undefined;
  if (e instanceof UsageError || (configCode !== undefined && badFlag)) {
    const command = (e instanceof UsageError ? e.command : undefined) ?? spec?.name;
    io.stderr.write(`lancet: ${message}\n\nRun \`lancet ${command === undefined ? "" : `${command} `}--help\` for usage.\n`);
    if (options.json) io.stdout.write(JSON.stringify({ ...base, error: { code: configCode ?? "USAGE", message } }) + "\n");
    return 2;
  }
  const code = isBackfillError(e) ? e.code : "INTERNAL";
  io.stderr.write(`lancet: error ${code}: ${message}\n`);
  if (options.json) {
    const error = typeof base.error === "object" && base.error !== null ? { ...base.error, code, message } : { code, message };
    io.stdout.write(JSON.stringify({ ...base, error }) + "\n");
  }
  return 1;
}

const guarded = new WeakSet<object>();

/**
 * A reader that goes away (`lancet jobs | head`) ends the command quietly with exit 0, as with any
 * Unix tool: EPIPE on stdout exits; on stderr it is ignored (the job keeps running). Applies to real
 * streams only (those with `on`); injected test I/O is left alone.
 */
export function exitQuietlyOnEpipe(io: CliIo): void {
  const watch = (s: unknown, onPipe: () => void): void => {
    const stream = s as { on?: (ev: string, fn: (e: NodeJS.ErrnoException) => void) => unknown };
    if (typeof stream.on !== "function" || guarded.has(stream)) return;
    guarded.add(stream);
    stream.on("error", (e) => {
      if (e.code === "EPIPE" || e.code === "ERR_STREAM_DESTROYED") return onPipe();
      process.stderr.write(`lancet: error INTERNAL: cannot write output: ${e.message}\n`);
      process.exit(1);
    });
  };
  watch(io.stdout, () => process.exit(0));
  watch(io.stderr, () => {});
}

/**
 * A long-running command's life (`lancet worker`, `lancet console`): resolves once SIGTERM or SIGINT came and
 * `close()` finished — or, with `ended`, once that promise settles by itself (no signal) — and then lets the
 * process exit 0 after `graceMs`: handles a library keeps (LanceDB's runtime, a Redis client reconnecting)
 * must not hold it.
 */
export function untilSignal(io: CliIo, options: { readonly stopping: (signal: string) => string; readonly close: () => Promise<unknown>; readonly graceMs: number; readonly ended?: { readonly closed: Promise<unknown>; readonly message: string } }): Promise<void> {
  return new Promise<void>((resolve) => {
    let stopped = false;
    const finish = (): void => {
      setTimeout(() => process.exit(0), options.graceMs).unref();
      resolve();
    };
    const stop = (message: string): boolean => {
      if (stopped) return false;
      stopped = true;
      process.off("SIGTERM", onTerm);
      process.off("SIGINT", onInt);
      io.stderr.write(message);
      return true;
    };
    const onSignal = (sig: string): void => {
      if (stop(options.stopping(sig))) void options.close().then(finish);
    };
    const onTerm = (): void => onSignal("SIGTERM");
    const onInt = (): void => onSignal("SIGINT");
    process.on("SIGTERM", onTerm);
    process.on("SIGINT", onInt);
    void options.ended?.closed.then(() => {
      if (stop(options.ended!.message)) finish();
    });
  });
}
