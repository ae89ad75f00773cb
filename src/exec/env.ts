/**
 * The environment of UDF processes. A job declares the variables its UDF needs (`env` option,
 * `--env KEY=VALUE`); in distributed mode they travel through Redis to every worker, so a name that
 * changes how Node or the system loader starts a process (`NODE_OPTIONS=--require=…`, `LD_PRELOAD`)
 * would let whoever can write to Redis run code on every worker. Such names are refused on both
 * sides: by option validation on the coordinator and by the worker for a task arriving from Redis.
 */
import { ConfigError, type ErrorContext } from "../errors.ts";

/**
 * Prefixes of reserved variable names (compared case-insensitively): Node's own settings
 * (`NODE_OPTIONS`, `NODE_PATH`, `NODE_EXTRA_CA_CERTS`, `NODE_REPL_EXTERNAL_MODULE`, …), the dynamic
 * loader's (`LD_PRELOAD`, `LD_LIBRARY_PATH`, `LD_AUDIT`, macOS `DYLD_*`) and OpenSSL's, which Node
 * reads at start-up (`OPENSSL_CONF` can load an engine, i.e. a shared library).
 */
export const RESERVED_ENV_PREFIXES: readonly string[] = ["NODE_", "LD_", "DYLD_", "OPENSSL_", "BASH_FUNC_", "GIT_", "PERL5", "PYTHON", "RUBY", "JAVA_", "_JAVA_", "JDK_JAVA_"];

/**
 * Reserved variable names besides the prefixes: ones that make a program a UDF may start (a shell,
 * git, Perl, Python, Ruby, Java, less, ssh) load code or send its traffic elsewhere — glibc's
 * charset-module path, shell start-up files, pagers and helpers, proxies.
 */
export const RESERVED_ENV_NAMES: readonly string[] = ["GCONV_PATH", "BASH_ENV", "ENV", "PROMPT_COMMAND", "SHELLOPTS", "IFS", "BROWSER", "EDITOR", "VISUAL", "PAGER", "LESSOPEN", "LESSCLOSE", "SSH_ASKPASS", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "FTP_PROXY"];

/** Whether `name` may be declared for a UDF's process (a valid name that is not reserved). */
export function isReservedEnvName(name: string): boolean {
  const upper = name.toUpperCase();
  return RESERVED_ENV_NAMES.includes(upper) || RESERVED_ENV_PREFIXES.some((p) => upper.startsWith(p));
}

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Checks a declared UDF environment: an object of string values under valid, unreserved names.
 * `where` names it in messages (`options.env`, `task t-f0-… of column y (table t): env`).
 * @throws ConfigError CONFIG_INVALID naming the variable
 */
export function checkUdfEnv(v: unknown, where: string, context: ErrorContext = {}): Readonly<Record<string, string>> {
  if (v === undefined) return Object.freeze({});
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new ConfigError("CONFIG_INVALID", `${where} must map variable names to strings (got ${JSON.stringify(v)})`, context);
  for (const [k, x] of Object.entries(v)) {
    if (!NAME.test(k)) throw new ConfigError("CONFIG_INVALID", `${where}: ${JSON.stringify(k)} is not an environment variable name`, context);
    if (typeof x !== "string") throw new ConfigError("CONFIG_INVALID", `${where}.${k} must be a string (got ${JSON.stringify(x)})`, context);
    if (isReservedEnvName(k)) {
      throw new ConfigError(
        "CONFIG_INVALID",
        `${where} may not set ${k}: it can change how Node, the system loader or a program the UDF starts loads code or routes traffic (reserved: ${RESERVED_ENV_PREFIXES.map((p) => `${p}*`).join(", ")}, ${RESERVED_ENV_NAMES.join(", ")}); pass what the UDF needs under another name and read it in the UDF (or in its setup())`,
        context,
      );
    }
  }
  return Object.freeze({ ...(v as Record<string, string>) });
}

/**
 * Variables of a worker's own environment that its UDF processes get besides the declared ones:
 * what a process needs to find programs, its home and temporary directory, and its locale.
 */
export const BASE_ENV_NAMES: readonly string[] = ["PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "TMP", "TEMP", "LANG", "LANGUAGE", "TZ", "SYSTEMROOT", "WINDIR", "COMSPEC", "PATHEXT"];

/**
 * Checks a task's declared environment on a distributed worker: {@link checkUdfEnv}, and no name the
 * worker itself provides ({@link BASE_ENV_NAMES}, `LC_*`, and `provided`: the names of its UDFs' base
 * environment, `--pass-env` included): a task from Redis may not point a UDF's `PATH` or `HOME` elsewhere.
 * @throws ConfigError CONFIG_INVALID naming the variable
 */
export function checkTaskEnv(v: unknown, where: string, provided: readonly string[], context: ErrorContext = {}): Readonly<Record<string, string>> {
  const env = checkUdfEnv(v, where, context);
  for (const k of Object.keys(env)) {
    const upper = k.toUpperCase();
    if (BASE_ENV_NAMES.includes(upper) || upper.startsWith("LC_") || provided.includes(k)) {
      throw new ConfigError("CONFIG_INVALID", `${where} may not set ${k}: the worker provides it to every UDF process (${BASE_ENV_NAMES.slice(0, 5).join(", ")}, locale, --pass-env names); pass what the UDF needs under another name`, context);
    }
  }
  return env;
}

/**
 * The environment a distributed worker's UDF processes start from: {@link BASE_ENV_NAMES}, `LC_*`,
 * and the names the operator lets through (`lancet worker --pass-env`), taken from `from`. Nothing
 * else of the worker's environment (its Redis URL and password, cloud credentials) reaches a UDF.
 */
export function udfBaseEnv(from: NodeJS.ProcessEnv, pass: readonly string[] = []): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(from)) {
    if (v === undefined) continue;
    const upper = k.toUpperCase();
    if (BASE_ENV_NAMES.includes(upper) || upper.startsWith("LC_") || pass.includes(k)) out[k] = v;
  }
  return out;
}
