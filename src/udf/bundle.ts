/**
 * Snapshots of UDF code. Binding a column bundles its module with esbuild (dependencies included,
 * Node built-ins and `@lancedb/lancedb` left external, `lancet` mapped to the UDF-facing helpers),
 * names the bundle by its content hash and stores it in the table's Lancet store, where any worker can
 * load it. Backfills run the stored bundle, never the module file.
 */
import { createHash } from "node:crypto";
import { existsSync, lstatSync, readFileSync, realpathSync } from "node:fs";
import { mkdir, rename, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import * as path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { ConfigError, type ErrorContext } from "../errors.ts";
import { canonical, isRemote, storeAt } from "../storage/location.ts";
import { isSqlUdf, validateUdfSpec, type SqlUdfSpec, type UdfSpec } from "./udf.ts";

const PUBLIC_ENTRY = fileURLToPath(new URL(`./public${import.meta.url.endsWith(".ts") ? ".ts" : ".js"}`, import.meta.url));
const MODULE_EXTENSIONS = [".ts", ".mts", ".js", ".mjs"];

/** A parsed `MODULE#EXPORT` reference. */
export interface UdfRef {
  /** Absolute path of the module file. */
  readonly module: string;
  /** Export name. */
  readonly exportName: string;
}

/** Parses `MODULE#EXPORT` (EXPORT defaults to `default`), resolving MODULE against `cwd`. */
export function parseUdfRef(ref: string, cwd = process.cwd()): UdfRef {
  if (typeof ref !== "string" || ref.length === 0) {
    throw new ConfigError("CONFIG_INVALID", `UDF reference must be a string like "./udfs.ts#wordCount" (got ${JSON.stringify(ref)})`);
  }
  const hash = ref.lastIndexOf("#");
  const file = hash >= 0 ? ref.slice(0, hash) : ref;
  const exportName = hash >= 0 ? ref.slice(hash + 1) : "default";
  if (exportName.length === 0) throw new ConfigError("CONFIG_INVALID", `UDF reference ${ref} names no export after "#"`);
  const module = path.resolve(cwd, file);
  if (!MODULE_EXTENSIONS.includes(path.extname(module))) {
    throw new ConfigError("CONFIG_INVALID", `UDF module ${file} must end in ${MODULE_EXTENSIONS.join(", ")}`);
  }
  if (!existsSync(module)) {
    throw new ConfigError("UDF_MODULE_NOT_FOUND", `UDF module ${module} does not exist (from ${JSON.stringify(ref)}); check the path, relative to ${cwd}`);
  }
  return { module, exportName };
}

/** Bundles a module into one ESM file; returns its code and content hash. */
export async function bundleModule(module: string): Promise<{ code: string; hash: string }> {
  const esbuild = await import("esbuild");
  let result;
  try {
    result = await esbuild.build({
      entryPoints: [module],
      absWorkingDir: path.dirname(module),
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node22",
      write: false,
      logLevel: "silent",
      legalComments: "none",
      external: ["@lancedb/lancedb", "*.node"],
      alias: { lancet: PUBLIC_ENTRY },
      banner: { js: "import { createRequire as __lancetCreateRequire } from 'node:module'; const require = __lancetCreateRequire(import.meta.url);" },
    });
  } catch (e) {
    const errors = (e as { errors?: { text: string; location?: { file: string; line: number } | null }[] }).errors ?? [];
    const first = errors[0];
    const where = first?.location ? ` at ${first.location.file}:${first.location.line}` : "";
    throw new ConfigError("UDF_BUNDLE_FAILED", `UDF module ${module} could not be bundled${where}: ${first?.text ?? (e as Error).message}; fix the module and bind it again`, { cause: e });
  }
  const code = result.outputFiles[0]!.text;
  return { code, hash: createHash("sha256").update(code).digest("hex") };
}

/** Path (or object-storage URI) of a stored bundle. */
export function bundlePath(storeDir: string, hash: string): string {
  return isRemote(storeDir) ? `${canonical(storeDir)}/udfs/${hash}.mjs` : path.join(storeDir, "udfs", `${hash}.mjs`);
}

/** Where a bundle claims to come from: the table's database and name, the bundle file and the checkpoint folder. */
export interface BundleClaim {
  readonly dbDir: string;
  readonly table: string;
  readonly bundlePath: string;
  /** Checked when given: it must be the table's own store's `ckp` folder. */
  readonly checkpointRoot?: string;
}

/** Options of {@link verifyStoredBundle}. */
export interface VerifyBundleOptions {
  /** What asks, for messages, e.g. "task t-f0-o0-… of column y (table t)". */
  readonly subject: string;
  readonly context?: ErrorContext;
  /** When given, the database must lie inside one of these directories (`lancet worker --allow-db`). */
  readonly allowedDbDirs?: readonly string[];
  /** Checks only the paths' shape, without touching the filesystem (no real paths, no hash). @default false */
  readonly shapeOnly?: boolean;
}

const HASHED_NAME = /^([0-9a-f]{64})\.mjs$/;

function isInside(dir: string, p: string): boolean {
  const rel = path.relative(dir, p);
  return rel === "" || (!rel.startsWith("..") && !path.isAbsolute(rel));
}

/**
 * Checks that `claim.bundlePath` is a content-addressed bundle of the table's own Lancet store, so a
 * worker runs only code that binding the column stored there: an absolute path with no `..`, directly
 * in `DB/_lancet/TABLE/udfs/`, named `<sha256>.mjs`; a plain file (not a symlink) whose real path is
 * in the real store folder (no symlinked folder leading elsewhere); whose content hashes to its name.
 * The checkpoint folder, when given, must be the store's `ckp`. Synchronous: it runs once per pool.
 * @throws ConfigError CONFIG_INVALID naming the subject and the offending path
 */
export function verifyStoredBundle(claim: BundleClaim, options: VerifyBundleOptions): void {
  const { subject, context = {} } = options;
  const refuse = (what: string, p: unknown, why: string): never => {
    throw new ConfigError(
      "CONFIG_INVALID",
      `${subject} names ${what} ${JSON.stringify(p)}, which ${why}; refused: workers run only the content-addressed UDF bundles that binding the column stored in the table's own Lancet store (DB/_lancet/TABLE/udfs/<sha256>.mjs). Rebind the column (lancet alter-column) if its bundle was lost, and check who can write to the queue's Redis`,
      context,
    );
  };
  if (typeof claim !== "object" || claim === null) return refuse("worker configuration", claim, "is not an object");
  if (typeof claim.dbDir === "string" && isRemote(claim.dbDir)) return verifyRemoteClaim(claim, options, refuse);
  const { dbDir, table, bundlePath: file, checkpointRoot } = claim;
  if (typeof table !== "string" || !/^[A-Za-z0-9_.-]+$/.test(table) || table === "." || table === "..") refuse("table", table, "is not a table name");
  if (typeof dbDir !== "string" || !path.isAbsolute(dbDir) || dbDir.split(/[\\/]/).includes("..")) refuse("database directory", dbDir, "is not an absolute path without '..'");
  if (typeof file !== "string" || !path.isAbsolute(file) || file.split(/[\\/]/).includes("..")) refuse("UDF bundle", file, "is not an absolute path without '..'");
  const storeDir = path.join(dbDir, "_lancet", table);
  const folder = path.join(storeDir, "udfs");
  const name = HASHED_NAME.exec(path.basename(file));
  if (path.dirname(path.normalize(file)) !== folder || !name) refuse("UDF bundle", file, `is not a content-addressed bundle of table ${table}'s store (${folder}/<sha256>.mjs)`);
  if (checkpointRoot !== undefined && (typeof checkpointRoot !== "string" || path.normalize(checkpointRoot).replace(/[\\/]+$/, "") !== path.join(storeDir, "ckp"))) {
    refuse("checkpoint folder", checkpointRoot, `is not table ${table}'s own (${path.join(storeDir, "ckp")})`);
  }
  if (options.shapeOnly) return;
  let realDb: string;
  try {
    realDb = realpathSync(dbDir);
  } catch {
    return refuse("database directory", dbDir, "does not exist");
  }
  if (options.allowedDbDirs !== undefined) {
    const allowed = options.allowedDbDirs.flatMap((d) => {
      try {
        return [realpathSync(d)];
      } catch {
        return [];
      }
    });
    if (!allowed.some((d) => isInside(d, realDb))) refuse("database directory", dbDir, `is not inside the directories this worker may use (--allow-db ${options.allowedDbDirs.join(", ")})`);
  }
  let stat;
  let realFile: string;
  let realFolder: string;
  try {
    stat = lstatSync(file);
    realFile = realpathSync(file);
    realFolder = realpathSync(folder);
  } catch {
    return refuse("UDF bundle", file, "does not exist");
  }
  if (!stat.isFile()) refuse("UDF bundle", file, "is a symbolic link or not a regular file");
  if (realFolder !== path.join(realDb, "_lancet", table, "udfs")) refuse("UDF bundle folder", folder, `resolves to ${realFolder}, outside the database ${realDb}`);
  if (path.dirname(realFile) !== realFolder) refuse("UDF bundle", file, `resolves to ${realFile}, outside ${realFolder}`);
  const ckp = path.join(storeDir, "ckp");
  if (checkpointRoot !== undefined && existsSync(ckp)) {
    const realCkp = realpathSync(ckp);
    if (realCkp !== path.join(realDb, "_lancet", table, "ckp")) refuse("checkpoint folder", checkpointRoot, `resolves to ${realCkp}, outside the database ${realDb}`);
  }
  const actual = createHash("sha256").update(readFileSync(file)).digest("hex");
  if (actual !== name![1]) refuse("UDF bundle", file, `does not match its content-addressed name (its content hashes to ${actual.slice(0, 16)}…: it was changed after binding)`);
}

/**
 * {@link verifyStoredBundle} for a database on object storage: the same shape rules on the URIs (the
 * bundle directly in `DB/_lancet/TABLE/udfs/<sha256>.mjs`, the table's own `ckp`, inside an allowed
 * database). Its content is checked against its name when it is fetched ({@link localBundle}).
 */
function verifyRemoteClaim(claim: BundleClaim, options: VerifyBundleOptions, refuse: (what: string, p: unknown, why: string) => never): void {
  const { table, bundlePath: file, checkpointRoot } = claim;
  const dbDir = canonical(claim.dbDir);
  if (typeof table !== "string" || !/^[A-Za-z0-9_.-]+$/.test(table) || table === "." || table === "..") refuse("table", table, "is not a table name");
  if (dbDir.split("/").includes("..")) refuse("database", claim.dbDir, "contains '..'");
  if (typeof file !== "string" || !isRemote(file) || file.split("/").includes("..")) refuse("UDF bundle", file, "is not an object-storage URI without '..'");
  const folder = `${dbDir}/_lancet/${table}/udfs`;
  const f = canonical(file);
  if (f.slice(0, f.lastIndexOf("/")) !== folder || !HASHED_NAME.test(f.slice(f.lastIndexOf("/") + 1))) refuse("UDF bundle", file, `is not a content-addressed bundle of table ${table}'s store (${folder}/<sha256>.mjs)`);
  if (checkpointRoot !== undefined && (typeof checkpointRoot !== "string" || canonical(checkpointRoot) !== `${dbDir}/_lancet/${table}/ckp`)) refuse("checkpoint folder", checkpointRoot, `is not table ${table}'s own (${dbDir}/_lancet/${table}/ckp)`);
  if (options.allowedDbDirs !== undefined && !options.allowedDbDirs.some((d) => isRemote(d) && (dbDir === canonical(d) || dbDir.startsWith(`${canonical(d)}/`)))) {
    refuse("database", claim.dbDir, `is not inside the databases this worker may use (--allow-db ${options.allowedDbDirs.join(", ")})`);
  }
}

/** Whether a stored bundle exists (a file, or an object on object storage). */
export async function bundleExists(file: string): Promise<boolean> {
  if (!isRemote(file)) return existsSync(file);
  const f = canonical(file);
  return (await storeAt(f.slice(0, f.lastIndexOf("/"))).get(f.slice(f.lastIndexOf("/") + 1))) !== undefined;
}

/** Where fetched bundles of object-storage databases are kept on this machine (content-addressed). */
const BUNDLE_CACHE = path.join(process.env.XDG_CACHE_HOME || path.join(homedir(), ".cache"), "lancet", "bundles");

/**
 * A stored bundle as a local file to import: itself for a local database; for one on object storage,
 * a copy in this machine's bundle cache, fetched once and checked against its content-addressed name.
 */
export async function localBundle(file: string): Promise<string> {
  if (!isRemote(file)) return file;
  const f = canonical(file);
  const name = f.slice(f.lastIndexOf("/") + 1);
  const hash = HASHED_NAME.exec(name)?.[1];
  if (hash === undefined) throw new ConfigError("CONFIG_INVALID", `UDF bundle ${f} is not named <sha256>.mjs`);
  const local = path.join(BUNDLE_CACHE, name);
  if (existsSync(local)) return local;
  const code = await storeAt(f.slice(0, f.lastIndexOf("/"))).get(name);
  if (code === undefined) throw new ConfigError("UDF_MODULE_NOT_FOUND", `bound UDF snapshot ${f} is missing; rebind the column with alter-column`);
  const actual = createHash("sha256").update(code).digest("hex");
  if (actual !== hash) throw new ConfigError("CONFIG_INVALID", `UDF bundle ${f} does not match its content-addressed name (its content hashes to ${actual.slice(0, 16)}…: it was changed after binding); refused`);
  await mkdir(BUNDLE_CACHE, { recursive: true });
  const tmp = `${local}.${process.pid}.${Date.now()}.tmp`;
  await writeFile(tmp, code);
  await rename(tmp, local);
  return local;
}

/** Stores a bundle atomically (content-addressed: an existing file is left alone). */
export async function storeBundle(storeDir: string, code: string, hash: string): Promise<string> {
  const file = bundlePath(storeDir, hash);
  if (isRemote(storeDir)) {
    await storeAt(`${canonical(storeDir)}/udfs`).putIfAbsent(`${hash}.mjs`, code);
    return canonical(file);
  }
  if (existsSync(file)) return file;
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.${Date.now()}.tmp`;
  await writeFile(tmp, code);
  await rename(tmp, file);
  return file;
}

/** Imports a stored bundle and returns the named export: a validated UDF declaration, or a SQL UDF. */
export async function loadExport(file: string, exportName: string, label: string): Promise<UdfSpec | SqlUdfSpec> {
  const mod = await importBundle(file, exportName, label);
  const v = mod[exportName];
  if (isSqlUdf(v)) {
    if (v.sql.trim() === "") throw new ConfigError("UDF_INVALID", `export "${exportName}" of ${label} is not a valid UDF: sql must be a non-empty SQL expression`);
    return v;
  }
  return validateUdfSpec(v, `export "${exportName}" of ${label}`);
}

let loads = 0;

export async function importBundle(stored: string, exportName: string, label: string): Promise<Record<string, unknown>> {
  const file = await localBundle(stored);
  if (!existsSync(file)) {
    throw new ConfigError("UDF_MODULE_NOT_FOUND", `bound UDF snapshot ${file} for ${label} is missing; rebind the column with alter-column`);
  }
  let mod: Record<string, unknown>;
  try {
    // Each load is a fresh module instance: a worker process that runs another job after this one
    // (a parked process) starts it with the module's own state, as a new process would.
    mod = (await import(`${pathToFileURL(file).href}?load=${++loads}`)) as Record<string, unknown>;
  } catch (e) {
    throw new ConfigError("UDF_INVALID", `UDF module for ${label} failed to load: ${(e as Error).message}`, { cause: e });
  }
  if (!(exportName in mod)) {
    const names = Object.keys(mod).filter((k) => k !== "default");
    throw new ConfigError("UDF_EXPORT_NOT_FOUND", `UDF module for ${label} has no export "${exportName}"${names.length ? `; it exports ${names.join(", ")}` : ""}`);
  }
  return mod;
}

/** Imports a stored bundle and returns the named export as a validated (JavaScript) UDF declaration. */
export async function loadUdf(file: string, exportName: string, label: string): Promise<UdfSpec> {
  const v = await loadExport(file, exportName, label);
  if (isSqlUdf(v)) throw new ConfigError("UDF_INVALID", `export "${exportName}" of ${label} is a SQL UDF; LanceDB computes it, not a worker`);
  return v;
}
