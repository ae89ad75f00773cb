/**
 * The `lancet` CLI. Commands take injected I/O and return an exit code, so they are testable as
 * functions; this is the only module that prints. Each command declares its flags once (a
 * {@link CommandSpec}); parsing, `--help`, typo suggestions and the translation of library option
 * names into flags in messages all read that table.
 *
 * Exit codes: 0 done; 1 a runtime error (`lancet: error CODE: message`); 2 a usage error (unknown
 * command or flag, missing or bad flag value), with a "did you mean" where one is close and a pointer
 * to `lancet COMMAND --help`.
 */
import { readFileSync } from "node:fs";
import { addColumns, alterColumns, backfillAsync, columnStatus, getJob, internalColumns, listErrors, listViews, refragment, stderrLogger } from "../index.ts";
import type { BackfillJob, BackfillOptions, JobRecord } from "../index.ts";
import { JOBS, JOBS_SUBCOMMANDS, jobsCommand } from "./jobs.ts";
import { BACKFILL, COLUMN, DB, STORAGE_OPTION, exitQuietlyOnEpipe, flagOrEnv, fmt, formatHelp, intOpt, JSON_FLAG, parseFlags, report, suggest, TABLE, UsageError, type CliIo, type CommandSpec, type FlagSpec, type FlagValues, flagText } from "./shared.ts";
import { ProgressView } from "./progress.ts";
import { WORKER, WORKERS, workerCommand, workersCommand } from "./worker.ts";
import { CONSOLE, consoleCommand } from "./console.ts";
import { ALTER_VIEW, alterViewCommand, CREATE_VIEW, createViewCommand, REFRESH, refreshCommand, VIEWS, viewsCommand } from "./views.ts";

export type { CliIo } from "./shared.ts";

const ADD_COLUMN: CommandSpec = {
  name: "add-column",
  summary: "add a column computed by a UDF (or by LanceDB from a SQL expression); its values start null",
  synopsis: "--db DIR --table NAME --column COL (--udf MODULE#EXPORT | --sql EXPR) [--json]",
  flags: [
    DB,
    STORAGE_OPTION,
    TABLE,
    { ...COLUMN, help: "name of the new column" },
    { name: "udf", type: "string", value: "MODULE#EXPORT", help: "the UDF: a module path and the name of its export" },
    { name: "sql", type: "string", value: "EXPR", help: "a SQL expression LanceDB computes instead of a UDF" },
    JSON_FLAG,
  ],
  notes: "Run `lancet backfill` afterwards to compute the values.",
  example: "add-column --db ./data --table docs --column word_count --udf ./udfs.ts#wordCount",
};

const ALTER_COLUMN: CommandSpec = {
  name: "alter-column",
  summary: "rebind a UDF column to another UDF, export or version; values are kept until the next backfill",
  synopsis: "--db DIR --table NAME --column COL --udf MODULE#EXPORT [--force] [--json]",
  flags: [
    DB,
    STORAGE_OPTION,
    TABLE,
    COLUMN,
    { name: "udf", type: "string", value: "MODULE#EXPORT", help: "the UDF: a module path and the name of its export", required: true },
    { name: "force", type: "boolean", option: "force", help: "also bind a plain data column (not yet a UDF column): the next backfill overwrites its values" },
    JSON_FLAG,
  ],
  notes: "The UDF must return the column's type. A data column (one no UDF computes, such as a primary key) is refused unless --force.",
  example: "alter-column --db ./data --table docs --column word_count --udf ./udfs.ts#wordCountV2",
};

const STATUS: CommandSpec = {
  name: "status",
  summary: "list a table's UDF columns: binding, version, filled rows, module state",
  synopsis: "--db DIR --table NAME [--json]",
  flags: [DB, STORAGE_OPTION, TABLE, JSON_FLAG],
  example: "status --db ./data --table docs",
};

const REFRAGMENT: CommandSpec = {
  name: "refragment",
  summary: "rewrite a table into fragments of at most N rows (more fragments, more parallel writers)",
  synopsis: "--db DIR --table NAME --max-rows-per-fragment N [--conflict-retries N] [--force] [--json]",
  flags: [
    DB,
    STORAGE_OPTION,
    TABLE,
    { name: "max-rows-per-fragment", type: "string", value: "N", integer: true, required: true, option: "maxRowsPerFragment", help: "rows per fragment at most" },
    { name: "conflict-retries", type: "string", value: "N", integer: true, option: "conflictRetries", help: "restarts after another writer commits meanwhile", default: "2" },
    { name: "force", type: "boolean", option: "force", help: "go ahead even when uncommitted checkpoints of a UDF column would be lost" },
    JSON_FLAG,
  ],
  example: "refragment --db ./data --table docs --max-rows-per-fragment 50000",
};

const ERRORS: CommandSpec = {
  name: "errors",
  summary: "list the rows an error policy skipped (left null), with the UDF's error",
  synopsis: "--db DIR [--job ID] [--table NAME] [--column COL] [--json]",
  flags: [
    DB,
    STORAGE_OPTION,
    { name: "job", type: "string", value: "ID", help: "only this job's errors (JOB_NOT_FOUND when there is no such job)" },
    { ...TABLE, required: false, help: "only this table's errors" },
    { ...COLUMN, required: false, help: "only this column's errors" },
    JSON_FLAG,
  ],
  example: "errors --db ./data --job 3f1c…",
};

const HELP_CMD: CommandSpec = {
  name: "help",
  summary: "show the overview, or a command's flags, defaults and an example",
  synopsis: "[COMMAND [SUBCOMMAND]]",
  flags: [],
  positionals: [],
  example: "help backfill",
};

/** Every command, in the order the overview lists them. */
export const COMMANDS: readonly CommandSpec[] = [ADD_COLUMN, ALTER_COLUMN, BACKFILL, STATUS, JOBS, ...JOBS_SUBCOMMANDS, CREATE_VIEW, ALTER_VIEW, REFRESH, VIEWS, REFRAGMENT, ERRORS, WORKER, WORKERS, CONSOLE, HELP_CMD];

/** Top-level commands (what a typo of the first word is compared with). */
const TOP = COMMANDS.filter((c) => !c.name.includes(" "));

function overview(): string {
  const w = Math.max(...COMMANDS.map((c) => c.name.length)) + 1;
  return (
    "lancet — computed columns for LanceDB tables\n\nUsage:\n" +
    COMMANDS.map((c) => `  lancet ${c.name.padEnd(w)}${c.synopsis}\n`).join("") +
    "  lancet --help | --version\n\nCommands:\n" +
    TOP.map((c) => `  ${c.name.padEnd(w + 7)}${c.summary}\n`).join("") +
    "\nRun `lancet COMMAND --help` (or `lancet help COMMAND`) for a command's flags, their defaults and an example.\n" +
    "--redis and --queue default to the environment variables LANCET_REDIS_URL and LANCET_QUEUE.\n"
  );
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string };
  return pkg.version;
}

/** The spec `lancet help WORDS…` asks about; a UsageError with a suggestion when there is none. */
function specFor(words: readonly string[]): CommandSpec {
  const [first, second] = words;
  const top = TOP.find((c) => c.name === first);
  if (!top) {
    const near = suggest(first ?? "", TOP.map((c) => c.name));
    throw new UsageError(`unknown command ${JSON.stringify(first)}${near ? `; did you mean ${near}?` : ""}`);
  }
  if (second === undefined || !top.subcommands) return top;
  const sub = top.subcommands.find((s) => s.name === `${top.name} ${second}`);
  if (sub) return sub;
  if (second === "list") return top;
  const near = suggest(second, top.subcommands.map((s) => s.name.split(" ")[1]!));
  throw new UsageError(`unknown ${top.name} command ${JSON.stringify(second)}${near ? `; did you mean ${near}?` : ""}`, top.name);
}

/** Runs the CLI; returns the process exit code (0 ok, 1 failed, 2 usage). */
export async function run(argv: readonly string[], io: CliIo): Promise<number> {
  exitQuietlyOnEpipe(io);
  const [command, ...rest] = argv;
  if (command === undefined || command === "--help" || command === "-h") {
    io.stdout.write(overview());
    return command === undefined ? 2 : 0;
  }
  if (command === "--version" || command === "-v") {
    io.stdout.write(`${version()}\n`);
    return 0;
  }
  let spec: CommandSpec | undefined;
  const json = rest.includes("--json");
  try {
    if (command === "help") {
      const words = rest.filter((a) => a !== "--help" && a !== "-h");
      io.stdout.write(words.length === 0 ? (rest.length === 0 ? overview() : formatHelp(HELP_CMD)) : formatHelp(specFor(words)));
      return 0;
    }
    switch (command) {
      case "backfill":
        return await backfillCommand(rest, io);
      case "jobs":
        return await jobsCommand(rest, io);
      case "worker":
        return await workerCommand(rest, io);
      case "workers":
        return await workersCommand(rest, io);
      case "console":
        return await consoleCommand(rest, io);
      case "add-column":
      case "alter-column": {
        spec = command === "add-column" ? ADD_COLUMN : ALTER_COLUMN;
        const { values, help } = parseFlags(spec, rest);
        if (help) return printHelp(spec, io);
        return await columnCommand(command, values, io);
      }
      case "status": {
        spec = STATUS;
        const { values, help } = parseFlags(spec, rest);
        if (help) return printHelp(spec, io);
        return await statusCommand(values, io);
      }
      case "errors": {
        spec = ERRORS;
        const { values, help } = parseFlags(spec, rest);
        if (help) return printHelp(spec, io);
        return await errorsCommand(values, io);
      }
      case "create-view":
      case "alter-view":
      case "refresh":
      case "views": {
        const [s, handler] = command === "create-view" ? [CREATE_VIEW, createViewCommand] : command === "alter-view" ? [ALTER_VIEW, alterViewCommand] : command === "refresh" ? [REFRESH, refreshCommand] : [VIEWS, viewsCommand];
        spec = s;
        const r = await handler(rest, io);
        return r === "help" ? printHelp(s, io) : r;
      }
      case "refragment": {
        spec = REFRAGMENT;
        const { values, help } = parseFlags(spec, rest);
        if (help) return printHelp(spec, io);
        return await refragmentCommand(values, io);
      }
      default: {
        if (command.startsWith("-")) {
          const near = suggest(command.replace(/^-+/, ""), ["help", "version"]);
          throw new UsageError(`unknown flag ${command}${near ? `; did you mean --${near}?` : ""}; a command comes first, e.g. \`lancet backfill --help\``);
        }
        const near = suggest(command, TOP.map((c) => c.name));
        throw new UsageError(`unknown command ${JSON.stringify(command)}${near ? `; did you mean ${near}?` : ""}`);
      }
    }
  } catch (e) {
    return report(e, io, { json, spec });
  }
}

/** Prints a command's help to stdout; exit 0. */
export function printHelp(spec: CommandSpec, io: CliIo): number {
  io.stdout.write(formatHelp(spec));
  return 0;
}

async function columnCommand(command: "add-column" | "alter-column", values: FlagValues, io: CliIo): Promise<number> {
  const json = values.json === true;
  const ref = { db: values.db as string, table: values.table as string };
  const column = values.column as string;
  if (command === "add-column") {
    if (typeof values.sql === "string" && typeof values.udf === "string") throw new UsageError("pass one of --udf MODULE#EXPORT and --sql EXPR, not both", command);
    if (typeof values.sql === "string") {
      const out = await addColumns(ref, { [column]: { sql: values.sql } });
      for (const { binding } of out) io.stdout.write(json ? JSON.stringify({ status: "ok", column, binding }) + "\n" : `added SQL column ${column} = ${binding.sql} (${binding.dataType}), computed by LanceDB\n`);
      return 0;
    }
    if (typeof values.udf !== "string" || values.udf === "") throw new UsageError("--udf MODULE#EXPORT or --sql EXPR is required", command);
  }
  const cols = { [column]: values.udf as string };
  const out = command === "add-column" ? await addColumns(ref, cols) : await alterColumns(ref, cols, { force: values.force === true });
  for (const { column, binding } of out) {
    if (json) io.stdout.write(JSON.stringify({ status: "ok", column, binding }) + "\n");
    else io.stdout.write(`${command === "add-column" ? "added" : "rebound"} column ${column} → ${binding.module}#${binding.exportName} (${binding.dataType}, version ${binding.version})\n`);
  }
  return 0;
}

async function statusCommand(values: FlagValues, io: CliIo): Promise<number> {
  const ref = { db: values.db as string, table: values.table as string };
  const cols = await columnStatus(ref);
  if (values.json === true) {
    io.stdout.write(JSON.stringify(cols) + "\n");
    return 0;
  }
  // A view says what it is a view of, and the source version it reflects.
  const view = (await listViews(ref.db)).find((v) => v.name === ref.table);
  if (view) {
    const d = view.definition;
    const kind = d.chunker ? `chunk view of ${d.source} by chunker ${d.chunker}` : d.udtf ? `UDTF view of ${d.source} by ${d.udtf}` : `view of ${d.source}`;
    io.stdout.write(`${kind} (select ${d.select.join(",") || "-"}${d.where ? `; where ${d.where}` : ""}), ${view.watermark ? `at source version ${view.watermark.sourceVersion}` : "never refreshed"}; refresh with \`lancet refresh --db ${ref.db} --view ${ref.table}\`\n`);
  }
  // Lancet's own columns (the mergeInsert path's row key) are in the user's schema: say what they are.
  for (const c of await internalColumns(ref)) io.stdout.write(`${c.column}  ${c.dataType}  ${c.purpose}\n`);
  if (cols.length === 0) io.stdout.write(`table ${String(values.table)} has no UDF columns\n`);
  for (const c of cols) {
    const note = { current: "", changed: "  [module changed on disk since binding; alter-column to use it]", missing: "  [module file missing]", unbundleable: "  [module on disk no longer bundles]", sql: `  [SQL: ${c.binding.sql}, computed by LanceDB]` }[c.moduleState];
    io.stdout.write(`${c.column}  ${c.binding.dataType}  ${c.binding.module}#${c.binding.exportName}  version ${c.binding.version}  filled ${fmt(c.filledRows)} / ${fmt(c.totalRows)}${note}\n`);
  }
  return 0;
}

async function errorsCommand(values: FlagValues, io: CliIo): Promise<number> {
  const db = values.db as string;
  const job = values.job as string | undefined;
  // An id that names no job is a mistake to report, not a job without errors.
  if (job !== undefined) await getJob(db, job);
  const filter = { ...(job !== undefined ? { jobId: job } : {}), ...(typeof values.table === "string" ? { table: values.table } : {}), ...(typeof values.column === "string" ? { column: values.column } : {}) };
  const errs = await listErrors(db, filter);
  if (values.json === true) io.stdout.write(JSON.stringify(errs) + "\n");
  else if (errs.length === 0) io.stdout.write("no errors\n");
  else for (const e of errs) io.stdout.write(`${e.at}  job ${e.jobId}  ${e.table}.${e.column}  fragment ${e.fragment} row ${e.rowOffset} (address ${e.rowAddress})  attempt ${e.attempt}  ${e.name}: ${e.message}\n`);
  return 0;
}

async function refragmentCommand(values: FlagValues, io: CliIo): Promise<number> {
  const max = intOpt(values, "max-rows-per-fragment")!;
  const retries = intOpt(values, "conflict-retries");
  const r = await refragment({ db: values.db as string, table: values.table as string }, { maxRowsPerFragment: max, force: values.force === true, ...(retries === undefined ? {} : { conflictRetries: retries }) });
  if (values.json === true) io.stdout.write(JSON.stringify({ status: "ok", ...r }) + "\n");
  else {
    const notes = [r.resumed ? "resumed an interrupted run" : "", r.conflicts > 0 ? `restarted ${r.conflicts}× after other writers committed` : ""].filter(Boolean);
    io.stdout.write(
      `refragmented ${r.table}: ${fmt(r.rows)} rows, ${r.fragmentsBefore} → ${r.fragmentsAfter} fragments (version ${r.fromVersion} → ${r.swapVersion}` +
        `${r.indexes.length > 0 ? `; ${r.indexes.length} index(es) rebuilt: ${r.indexes.join(", ")} → version ${r.toVersion}` : ""})${notes.length > 0 ? ` — ${notes.join("; ")}` : ""}\n`,
    );
  }
  return 0;
}

/** The backfill options the integer flags set, read from the flag table. */
const INT_OPTIONS: readonly FlagSpec[] = BACKFILL.flags.filter((f) => f.integer && f.option !== undefined && f.name !== "admission-timeout-ms");

async function backfillCommand(args: readonly string[], io: CliIo): Promise<number> {
  let json = args.includes("--json");
  let job: BackfillJob | undefined;
  try {
    const { values, help } = parseFlags(BACKFILL, args);
    if (help) return printHelp(BACKFILL, io);
    json = values.json === true;
    const ref = { db: values.db as string, table: values.table as string };
    const column = values.column as string;
    const view = new ProgressView(io, json || values.plan === true ? "none" : io.isTTY ? "bar" : "lines");
    const options: BackfillOptions = { onProgress: (p) => view.update(p) };
    for (const f of INT_OPTIONS) {
      const v = intOpt(values, f.name, BACKFILL.name);
      if (v !== undefined) (options as Record<string, unknown>)[f.option!] = v;
    }
    if (typeof values.where === "string") options.where = values.where;
    if (typeof values["error-policy"] === "string") options.errorPolicy = values["error-policy"];
    if (typeof values["commit-mode"] === "string") options.commitMode = values["commit-mode"] as "auto";
    if (values.plan === true) options.planOnly = true;
    if (Array.isArray(values.env)) {
      const env: Record<string, string> = {};
      for (const kv of values.env) {
        const i = kv.indexOf("=");
        if (i <= 0) throw new UsageError(`--env ${JSON.stringify(kv)} must be KEY=VALUE`, BACKFILL.name);
        env[kv.slice(0, i)] = kv.slice(i + 1);
      }
      options.env = env;
    }
    const redis = flagOrEnv(values, "redis", "LANCET_REDIS_URL");
    if (redis !== undefined && redis !== "") {
      const admission = intOpt(values, "admission-timeout-ms", BACKFILL.name);
      const queue = flagOrEnv(values, "queue", "LANCET_QUEUE");
      options.executor = { redis, ...(queue ? { queue } : {}), ...(admission !== undefined ? { admissionTimeoutMs: admission } : {}) };
    } else if (values.queue !== undefined || values["admission-timeout-ms"] !== undefined) {
      throw new UsageError("--queue and --admission-timeout-ms need --redis URL (or LANCET_REDIS_URL)", BACKFILL.name);
    }
    options.logger = stderrLogger(values.verbose === true ? "debug" : "warn");
    job = backfillAsync(ref, column, options);
    const r = await job.wait();
    view.done();
    if (r.metrics.rowsSkipped > 0) {
      io.stderr.write(`lancet: warning: ${r.metrics.rowsSkipped} row(s) were skipped by the error policy and left null; see \`lancet errors --db ${ref.db} --job ${r.id}\`. A re-run retries them.\n`);
    }
    if (options.planOnly) printPlan(r, io, json);
    else printSummary(r, io, json);
    return 0;
  } catch (e) {
    // The --json line: the job's record once the job has started (id, status, metrics, events, error),
    // else a job that never existed (`id: null`).
    const rec = job?.record();
    const jsonBase: Record<string, unknown> = rec && rec.startedAt !== null ? { ...rec } : { id: null, status: "failed" };
    return report(e, io, { json, spec: BACKFILL, jsonBase });
  }
}

function printPlan(r: JobRecord, io: CliIo, json: boolean): void {
  const p = r.plan!;
  if (json) {
    io.stdout.write(JSON.stringify({ ...r, status: "planned" }) + "\n");
    return;
  }
  io.stdout.write(
    `plan for ${r.table}.${r.column} at version ${p.readVersion} (UDF version ${r.udfVersion}):\n` +
      `  selection: ${p.selection}\n` +
      `  fragments: ${p.fragmentsToWrite} to write, ${p.fragmentsDone} already complete, ${p.fragmentsDeferred} deferred by --num-frags\n` +
      `  tasks: ${p.tasks} of up to ${fmt(p.taskSize)} rows; commit every ${p.commitGranularity} fragment(s)\n` +
      `  rows to compute: up to ${fmt(p.rowsPlanned)}\n`,
  );
  for (const f of p.fragments) io.stdout.write(`    fragment ${f.id}: ${fmt(f.liveRows)} rows, ${fmt(f.rowsToCompute)} to compute in ${f.tasks} task(s), selection ${f.selection}\n`);
}

/** `table version 9 → 12`, or `table version 9 (unchanged)` when the job committed nothing. */
function versionText(r: JobRecord): string {
  const from = r.plan?.readVersion;
  if (from === undefined) return "table version unknown";
  return r.committedVersion !== undefined && r.committedVersion !== from ? `table version ${from} → ${r.committedVersion}` : `table version ${from} (unchanged)`;
}

function printSummary(r: JobRecord, io: CliIo, json: boolean): void {
  if (json) {
    io.stdout.write(JSON.stringify(r) + "\n");
    return;
  }
  const m = r.metrics;
  const p = r.plan;
  if (p && p.fragmentsToWrite === 0) {
    io.stdout.write(
      `backfill of ${r.table}.${r.column}: nothing to do: ` +
        (p.fragmentsDone > 1 ? `all ${p.fragmentsDone} fragments already complete` : p.fragmentsDone === 1 ? "its 1 fragment is already complete" : "the table has no rows") +
        ` (${versionText(r)}; job ${r.id})\n`,
    );
    return;
  }
  const secs = m.elapsedMs / 1000;
  io.stdout.write(
    `backfill of ${r.table}.${r.column} finished in ${secs.toFixed(1)} s (job ${r.id})\n` +
      `  rows computed ${fmt(m.rowsComputed)} (${fmt(m.rowsPerSec)} rows/s), committed ${fmt(m.rowsCommitted)} in ${m.commits} commit(s) over ${m.fragmentsCommitted} fragment(s)\n` +
      `  ${versionText(r)}; fragments already complete: ${p?.fragmentsDone ?? 0}` +
      (m.workerCrashes > 0 ? `; worker crashes survived: ${m.workerCrashes}` : "") +
      `\n  time in UDF ${(m.udfMs / 1000).toFixed(1)} s, reads ${(m.readMs / 1000).toFixed(1)} s, checkpoints ${(m.checkpointMs / 1000).toFixed(1)} s (summed over workers), writes ${(m.writeMs / 1000).toFixed(1)} s, commits ${(m.commitMs / 1000).toFixed(1)} s\n` +
      (r.diagnosis && r.diagnosis.bound !== "none" ? `  diagnosis: ${flagText(r.diagnosis.summary)}${r.diagnosis.hint ? ` — ${flagText(r.diagnosis.hint)}` : ""}\n` : ""),
  );
}
