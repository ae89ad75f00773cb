/**
 * `lancet create-view`, `lancet refresh` and `lancet views`: materialized views of a source table
 * (a filtered projection with UDF columns of its own), refreshed incrementally.
 */
import { alterView, createView, listViews, refreshView } from "../index.ts";
import type { RefreshViewOptions } from "../index.ts";
import { BACKFILL, DB, STORAGE_OPTION, fmt, flagOrEnv, intOpt, JSON_FLAG, parseFlags, UsageError, type CliIo, type CommandSpec, type FlagSpec } from "./shared.ts";

const VIEW: FlagSpec = { name: "view", type: "string", value: "NAME", help: "the view's name (a table in the same database)", required: true };
/** The backfill knobs that apply to a refresh, declared once with backfill's. */
const KNOBS = ["concurrency", "intra-applier-concurrency", "checkpoint-size", "commit-granularity", "error-policy", "redis", "queue"].map((n) => BACKFILL.flags.find((f) => f.name === n)!);

export const CREATE_VIEW: CommandSpec = {
  name: "create-view",
  summary: "create a view: a filtered projection of a source table (with stable row ids) with UDF columns of its own",
  synopsis: "--db DIR --view NAME --source TABLE (--select COL[,COL...] | --chunker MODULE#EXPORT [--select COL,...] | --udtf MODULE#EXPORT) [--udf OUT=MODULE#EXPORT]... [--where SQL] [--shuffle-seed N] [--json]",
  flags: [
    DB,
    STORAGE_OPTION,
    VIEW,
    { name: "source", type: "string", value: "TABLE", help: "the source table (created with stable row ids)", required: true },
    { name: "select", type: "string", value: "COL[,COL...]", help: "source columns the view keeps (a chunk view inherits them into every child)", default: "required without --chunker; none with it" },
    { name: "chunker", type: "string", value: "MODULE#EXPORT", help: "a chunker (kind: \"chunker\"): the view holds the children it makes of each source row" },
    { name: "udtf", type: "string", value: "MODULE#EXPORT", help: "a batch UDTF (kind: \"udtf\"): the view holds its output over the source, recomputed per partition" },
    { name: "udf", type: "string", value: "OUT=MODULE#EXPORT", multiple: true, help: "a UDF column of the view, computed from selected columns (repeatable)" },
    { name: "where", type: "string", value: "SQL", help: "keep only source rows matching SQL", default: "every row" },
    { name: "shuffle-seed", type: "string", value: "N", integer: true, help: "append new rows in a deterministic pseudo-random order", default: "source order" },
    JSON_FLAG,
  ],
  notes: "The view starts empty: run `lancet refresh` to fill it. A chunk view's columns: __source_row_id (the parent), __child_index, the selected columns, the chunker's outputs, UDF columns.",
  example: "create-view --db ./data --view train --source docs --select id,text --udf words=./udfs.ts#wordCount --where \"lang = 'en'\"",
};

export const REFRESH: CommandSpec = {
  name: "refresh",
  summary: "bring a view up to date with its source: add, remove and update rows, then compute its UDF columns",
  synopsis: "--db DIR --view NAME [--src-version N] [--full] [--concurrency N] [--redis URL] [...] [--json]",
  flags: [
    DB,
    STORAGE_OPTION,
    VIEW,
    { name: "src-version", type: "string", value: "N", integer: true, help: "refresh to this source version (forwards or backwards)", default: "the source's latest" },
    { name: "source-task-size", type: "string", value: "N", integer: true, option: "sourceTaskSize", help: "chunk views: source rows (parents) per work item", default: "1024" },
    { name: "max-rows-per-fragment", type: "string", value: "N", integer: true, option: "maxRowsPerFragment", help: "chunk and UDTF views: the most rows per fragment of the view (and per append of a worker)", default: "65536" },
    { name: "full", type: "boolean", help: "compare every row of the source and the view, not only those changed since the last refresh", default: "only the changes" },
    ...KNOBS,
    { ...JSON_FLAG, help: "machine-readable output: the last line of stdout is {status, sourceVersion, rowsAdded, rowsDeleted, rowsUpdated, rowsComputed}" },
  ],
  notes: "Incremental: only rows that appeared, disappeared or whose selected columns changed are touched, and only source rows written or deleted since the last refresh are read (every id after a compaction of the source, or with --full); unrelated source writes recompute nothing. Two refreshes of one view never run at once (TABLE_BUSY).",
  example: "refresh --db ./data --view train",
};

export const ALTER_VIEW: CommandSpec = {
  name: "alter-view",
  summary: "rebind a chunk view's chunker or a UDTF view's UDTF (a new version recomputes the view at the next refresh)",
  synopsis: "--db DIR --view NAME (--chunker MODULE#EXPORT | --udtf MODULE#EXPORT) [--json]",
  flags: [DB, STORAGE_OPTION, VIEW, { name: "chunker", type: "string", value: "MODULE#EXPORT", help: "the new chunker of a chunk view (same output columns and types)" }, { name: "udtf", type: "string", value: "MODULE#EXPORT", help: "the new UDTF of a UDTF view (same output columns and types)" }, JSON_FLAG],
  example: "alter-view --db ./data --view passages --chunker ./chunkers.ts#passagesV2",
};

export const VIEWS: CommandSpec = {
  name: "views",
  summary: "list a database's views with their source, selection, UDF columns and the source version they reflect",
  synopsis: "--db DIR [--json]",
  flags: [DB, STORAGE_OPTION, JSON_FLAG],
  example: "views --db ./data",
};

export async function createViewCommand(args: readonly string[], io: CliIo): Promise<number | "help"> {
  const { values, help } = parseFlags(CREATE_VIEW, args);
  if (help) return "help";
  const udfs: Record<string, string> = {};
  for (const spec of (values.udf as string[] | undefined) ?? []) {
    const i = spec.indexOf("=");
    if (i <= 0) throw new UsageError(`--udf ${JSON.stringify(spec)} must be OUT=MODULE#EXPORT`, CREATE_VIEW.name);
    udfs[spec.slice(0, i)] = spec.slice(i + 1);
  }
  const seed = intOpt(values, "shuffle-seed", CREATE_VIEW.name);
  if (values.select === undefined && values.chunker === undefined && values.udtf === undefined) throw new UsageError("--select COL[,COL...] is required (or --chunker MODULE#EXPORT for a chunk view, --udtf MODULE#EXPORT for a UDTF view)", CREATE_VIEW.name);
  const select = ((values.select as string | undefined) ?? "").split(",").map((c) => c.trim()).filter(Boolean);
  const name = values.view as string;
  const info = await createView(values.db as string, name, {
    source: values.source as string,
    ...(select.length > 0 || (values.chunker === undefined && values.udtf === undefined) ? { select } : {}),
    ...(typeof values.udtf === "string" ? { udtf: values.udtf } : {}),
    ...(typeof values.chunker === "string" ? { chunker: values.chunker } : {}),
    ...(Object.keys(udfs).length > 0 ? { udfs } : {}),
    ...(typeof values.where === "string" ? { where: values.where } : {}),
    ...(seed !== undefined ? { shuffleSeed: seed } : {}),
  });
  if (values.json === true) io.stdout.write(JSON.stringify({ status: "ok", view: name, definition: info }) + "\n");
  else io.stdout.write(`created ${typeof values.chunker === "string" ? `chunk view ${name} of ${String(values.source)} by ${values.chunker}` : typeof values.udtf === "string" ? `UDTF view ${name} of ${String(values.source)} by ${values.udtf}` : `view ${name} of ${String(values.source)}`} (${select.join(", ") || "no inherited columns"}${Object.keys(udfs).length > 0 ? `; UDF columns ${Object.keys(udfs).join(", ")}` : ""}); run \`lancet refresh --db ${String(values.db)} --view ${name}\` to fill it\n`);
  return 0;
}

export async function refreshCommand(args: readonly string[], io: CliIo): Promise<number | "help"> {
  const { values, help } = parseFlags(REFRESH, args);
  if (help) return "help";
  const options: RefreshViewOptions = {};
  const src = intOpt(values, "src-version", REFRESH.name);
  if (src !== undefined) options.srcVersion = src;
  if (values.full === true) options.full = true;
  for (const f of ["source-task-size", "max-rows-per-fragment"] as const) {
    const v = intOpt(values, f, REFRESH.name);
    if (v !== undefined) options[f === "source-task-size" ? "sourceTaskSize" : "maxRowsPerFragment"] = v;
  }
  for (const f of KNOBS.filter((k) => k.integer)) {
    const v = intOpt(values, f.name, REFRESH.name);
    if (v !== undefined) (options as Record<string, unknown>)[f.option!] = v;
  }
  if (typeof values["error-policy"] === "string") options.errorPolicy = values["error-policy"];
  const redis = flagOrEnv(values, "redis", "LANCET_REDIS_URL");
  if (redis) {
    const queue = flagOrEnv(values, "queue", "LANCET_QUEUE");
    options.executor = { redis, ...(queue ? { queue } : {}) };
  }
  const r = await refreshView(values.db as string, values.view as string, options);
  const out = { status: r.status, sourceVersion: r.sourceVersion, rowsAdded: r.rowsAdded, rowsDeleted: r.rowsDeleted, rowsUpdated: r.rowsUpdated, rowsComputed: r.rowsComputed, ...(r.parents ? { parents: r.parents } : {}), ...(r.partitions ? { partitions: r.partitions, skipped: r.skipped } : {}) };
  if (values.json === true) io.stdout.write(JSON.stringify(out) + "\n");
  else io.stdout.write(`refreshed view ${String(values.view)} to source version ${r.sourceVersion}: ${fmt(r.rowsAdded)} added, ${fmt(r.rowsDeleted)} removed, ${fmt(r.rowsUpdated)} updated${r.parents ? ` (parents: ${fmt(r.parents.added)} added, ${fmt(r.parents.deleted)} removed, ${fmt(r.parents.updated)} changed)` : ""}, ${fmt(r.rowsComputed)} UDF value(s) computed (${r.status}; job ${r.jobId})\n`);
  return r.status === "finished" ? 0 : 1;
}

export async function alterViewCommand(args: readonly string[], io: CliIo): Promise<number | "help"> {
  const { values, help } = parseFlags(ALTER_VIEW, args);
  if (help) return "help";
  const which = typeof values.chunker === "string" ? "chunker" : typeof values.udtf === "string" ? "udtf" : undefined;
  if (which === undefined || (values.chunker !== undefined && values.udtf !== undefined)) throw new UsageError("give one of --chunker MODULE#EXPORT or --udtf MODULE#EXPORT", ALTER_VIEW.name);
  await alterView(values.db as string, values.view as string, { [which]: values[which] as string });
  if (values.json === true) io.stdout.write(JSON.stringify({ status: "ok", view: values.view, [which]: values[which] }) + "\n");
  else io.stdout.write(`rebound the ${which === "udtf" ? "UDTF" : "chunker"} of view ${String(values.view)} to ${String(values[which])}; run \`lancet refresh --db ${String(values.db)} --view ${String(values.view)}\` (a new version regenerates every child)\n`);
  return 0;
}

export async function viewsCommand(args: readonly string[], io: CliIo): Promise<number | "help"> {
  const { values, help } = parseFlags(VIEWS, args);
  if (help) return "help";
  const views = await listViews(values.db as string);
  if (values.json === true) io.stdout.write(JSON.stringify(views) + "\n");
  else if (views.length === 0) io.stdout.write("no views\n");
  else {
    for (const v of views) {
      const d = v.definition;
      const udfs = Object.entries(d.udfs).map(([c, u]) => `${c}=${u}`).join(", ");
      io.stdout.write(`${v.name}  of ${d.source}${d.chunker ? `  chunker ${d.chunker}` : ""}${d.udtf ? `  udtf ${d.udtf}` : ""}  select ${d.select.join(",") || "-"}${d.where ? `  where ${d.where}` : ""}${udfs ? `  udfs ${udfs}` : ""}${d.shuffleSeed !== null ? `  shuffle-seed ${d.shuffleSeed}` : ""}  ${v.watermark ? `at source version ${v.watermark.sourceVersion} (refreshed ${v.watermark.refreshedAt})` : "never refreshed"}\n`);
    }
  }
  return 0;
}
