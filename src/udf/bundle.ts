/**
 * Snapshots of UDF code. Binding a column bundles its module with esbuild (dependencies included,
 * Node built-ins and `@lancedb/lancedb` left external, `lancet` mapped to the UDF-facing helpers),
 * names the bundle by its content hash and stores it in the table's Lancet store, where any worker can
 * load it. Backfills run the stored bundle, never the module file.
 */
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, rename, writeFile } from "node:fs/promises";
import * as path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { ConfigError } from "../errors.ts";
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

/** Path of a stored bundle. */
export function bundlePath(storeDir: string, hash: string): string {
  return path.join(storeDir, "udfs", `${hash}.mjs`);
}

/** Stores a bundle atomically (content-addressed: an existing file is left alone). */
export async function storeBundle(storeDir: string, code: string, hash: string): Promise<string> {
  const file = bundlePath(storeDir, hash);
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

async function importBundle(file: string, exportName: string, label: string): Promise<Record<string, unknown>> {
  if (!existsSync(file)) {
    throw new ConfigError("UDF_MODULE_NOT_FOUND", `bound UDF snapshot ${file} for ${label} is missing; rebind the column with alter-column`);
  }
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
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
