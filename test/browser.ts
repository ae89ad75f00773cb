/**
 * A real browser for the web console's tests: Debian's Chromium, headless, driven by playwright-core
 * (which never downloads a browser: it launches the one found here), and `lancet console` started as a
 * child process of this clone's `bin/lancet.mjs`, stopped by its PID.
 *
 * Chromium is found at LANCET_TEST_CHROMIUM (`.ci/run` sets it), else /usr/bin/chromium, else
 * `chromium` / `chromium-browser` on the PATH. Without one the browser tests skip — except in CI (CI
 * set) or where LANCET_TEST_CHROMIUM is set, where {@link requireBrowser} makes them fail instead, so a
 * CI run never reports them as skipped.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants } from "node:fs";
import * as path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { test, type TestContext } from "node:test";
import { chromium, type Browser } from "playwright-core";
import { REPO } from "./helpers.ts";

/**
 * Chromium's flags for this closed network: no sandbox (containers), no GPU, and none of its
 * background traffic (component updates, sync, QUIC probes), which otherwise floods the network with
 * refused connections.
 */
export const CHROMIUM_ARGS: readonly string[] = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const INSTALL_HINT = "apt-get install -y chromium; .ci/run does it";

function executable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function onPath(name: string): string | undefined {
  try {
    const found = execFileSync("sh", ["-c", `command -v ${name}`], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
    return found || undefined;
  } catch {
    return undefined;
  }
}

let found: { path: string | undefined; reason: string | false } | undefined;

/** Where Chromium is, or undefined with why not. */
function findChromium(): { path: string | undefined; reason: string | false } {
  if (found) return found;
  const env = process.env.LANCET_TEST_CHROMIUM;
  if (env) {
    found = executable(env) ? { path: env, reason: false } : { path: undefined, reason: `LANCET_TEST_CHROMIUM=${env} is not an executable file (${INSTALL_HINT})` };
    return found;
  }
  const p = executable("/usr/bin/chromium") ? "/usr/bin/chromium" : (onPath("chromium") ?? onPath("chromium-browser"));
  found = p ? { path: p, reason: false } : { path: undefined, reason: `Chromium is not installed: no /usr/bin/chromium, no chromium on the PATH and LANCET_TEST_CHROMIUM is unset (${INSTALL_HINT})` };
  return found;
}

/** Chromium's path (undefined when there is none: see {@link requireBrowser}). */
export function chromiumPath(): string | undefined {
  return findChromium().path;
}

/** In CI (CI set, not "false"/"0") or with LANCET_TEST_CHROMIUM set, a missing browser is a failure, not a skip. */
function browserRequired(): boolean {
  const ci = process.env.CI;
  return (ci !== undefined && ci !== "" && ci !== "false" && ci !== "0") || Boolean(process.env.LANCET_TEST_CHROMIUM);
}

let failingTestAdded = false;

/**
 * Why browser tests are skipped here, or false when they run.
 *
 * Without `t` (for `describe(name, { skip: requireBrowser() })`, as requireS3/requireRedisServer):
 * where a browser is required (CI) and missing, it also adds a failing test that says so, so the run
 * fails instead of reporting the suite as skipped. With a test's context `t`: where a browser is
 * required and missing it throws (the test fails); otherwise it skips `t` with the reason.
 */
export function requireBrowser(t?: TestContext): string | false {
  const { reason } = findChromium();
  if (!reason) return false;
  if (browserRequired()) {
    const message = `${reason}; in CI (CI or LANCET_TEST_CHROMIUM is set) the browser tests must run, not skip`;
    if (t) throw new Error(message);
    if (!failingTestAdded) {
      failingTestAdded = true;
      test("Chromium is installed (CI or LANCET_TEST_CHROMIUM is set, so the browser tests must run)", () => {
        throw new Error(message);
      });
    }
    return reason;
  }
  t?.skip(reason);
  return reason;
}

/** Headless Chromium with {@link CHROMIUM_ARGS}; close it when done. */
export async function launchBrowser(): Promise<Browser> {
  const executablePath = chromiumPath();
  if (!executablePath) throw new Error(findChromium().reason || "no Chromium");
  return chromium.launch({ executablePath, headless: true, args: [...CHROMIUM_ARGS], timeout: 60_000 });
}

export interface ConsoleOptions {
  /** `--token T`: every request must carry it. */
  readonly token?: string;
  /** More arguments for `lancet console`. */
  readonly args?: readonly string[];
  readonly env?: NodeJS.ProcessEnv;
  /** How long to wait for the URL line (ms). */
  readonly startTimeoutMs?: number;
}

export interface ConsoleProcess extends AsyncDisposable {
  /** The URL the console printed (with `?token=…` when it has a token). */
  readonly url: string;
  /** `http://127.0.0.1:PORT` */
  readonly origin: string;
  readonly pid: number;
  readonly child: ChildProcess;
  /** Everything it wrote to stdout and stderr so far. */
  output(): string;
  /** Ends it by its PID (SIGTERM, then SIGKILL after 5 s) and waits for it to exit. */
  stop(): Promise<void>;
}

const URL_RE = /http:\/\/127\.0\.0\.1:(\d+)\/\S*/;

/**
 * Starts `lancet console --db DB --port 0 [--token T]` with this clone's bin/lancet.mjs and this Node,
 * and waits for the line with its URL (`http://127.0.0.1:PORT/…`). Rejects, with what it printed, when
 * it exits or prints no URL in time.
 */
export async function startConsole(db: string, options: ConsoleOptions = {}): Promise<ConsoleProcess> {
  const args = [path.join(REPO, "bin/lancet.mjs"), "console", "--db", db, "--port", "0", ...(options.token === undefined ? [] : ["--token", options.token]), ...(options.args ?? [])];
  // A developer's own console settings must not leak into the console under test.
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== "LANCET_CONSOLE_TOKEN" && k !== "LANCET_DB"));
  const child = spawn(process.execPath, args, { cwd: REPO, env: { ...inherited, ...options.env }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let exitCode: number | null | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once("exit", (code, signal) => {
      exitCode = code ?? (signal ? -1 : null);
      resolve();
    });
  });
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (out += d.toString()));

  const stop = async (): Promise<void> => {
    if (exitCode !== undefined || child.pid === undefined) return;
    try {
      process.kill(child.pid, "SIGTERM");
    } catch {
      return;
    }
    const killed = await Promise.race([exited.then(() => true), sleep(5000).then(() => false)]);
    if (!killed) {
      try {
        process.kill(child.pid, "SIGKILL");
      } catch {
        // gone meanwhile
      }
      await exited;
    }
  };

  const url = await new Promise<string>((resolve, reject) => {
    const deadline = Date.now() + (options.startTimeoutMs ?? 30_000);
    const check = (): void => {
      const m = URL_RE.exec(out);
      if (m) return resolve(m[0]);
      if (exitCode !== undefined) return reject(new Error(`lancet console exited (${exitCode}) before printing its URL; it printed:\n${out}`));
      if (Date.now() > deadline) return reject(new Error(`lancet console printed no http://127.0.0.1:PORT/ URL within ${options.startTimeoutMs ?? 30_000} ms; it printed:\n${out}`));
      setTimeout(check, 50);
    };
    check();
  }).catch(async (e: unknown) => {
    await stop();
    throw e;
  });
  const origin = new URL(url).origin;
  return {
    url,
    origin,
    pid: child.pid!,
    child,
    output: () => out,
    stop,
    [Symbol.asyncDispose]: stop,
  };
}
