/**
 * A real `lancet worker` process for the distributed tests: started on a Redis URL, ready once it says
 * it takes tasks, stopped (SIGTERM, waiting for it) or killed (SIGKILL of its node process).
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { REPO } from "./helpers.ts";

const LANCET = path.join(REPO, "bin/lancet.mjs");

export interface WorkerProc {
  readonly child: ChildProcess;
  /** The node process that runs the worker (the child itself unless wrapped). */
  readonly pid: number;
  output(): string;
  stop(): Promise<void>;
  kill9(): Promise<void>;
}

export interface WorkerStart {
  /** Flags after `lancet worker --redis URL --concurrency 1`. */
  readonly args?: readonly string[];
  /** Added to this process's environment (without its LANCET_TEST_* variables). */
  readonly env?: Readonly<Record<string, string>>;
  /** The worker's working directory. */
  readonly cwd?: string;
  /** Runs the worker under another command (e.g. `unshare`): gets and returns the argv. */
  readonly wrap?: (argv: string[]) => [string, string[]];
}

/** Starts `lancet worker` as a separate process, adds it to `live` (removed when it stops), and waits until it takes tasks. */
export async function startLancetWorker(url: string, live: Set<WorkerProc>, o: WorkerStart = {}): Promise<WorkerProc> {
  const argv = [LANCET, "worker", "--redis", url, "--concurrency", "1", ...(o.args ?? [])];
  const [cmd, cmdArgs] = o.wrap ? o.wrap([process.execPath, ...argv]) : [process.execPath, argv];
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("LANCET_TEST_")));
  const child = spawn(cmd, cmdArgs, { stdio: ["ignore", "pipe", "pipe"], env: { ...base, ...o.env }, ...(o.cwd ? { cwd: o.cwd } : {}) });
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const deadline = Date.now() + 30_000;
  while (!out.includes("taking tasks from")) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`worker did not start: ${out}`);
    await sleep(50);
  }
  const pid = Number(/lancet worker \S+?-(\d+)-/.exec(out)?.[1] ?? child.pid);
  const w: WorkerProc = {
    child,
    pid,
    output: () => out,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      await exited;
      live.delete(w);
    },
    kill9: async () => {
      process.kill(pid, "SIGKILL");
      await exited;
      live.delete(w);
    },
  };
  live.add(w);
  return w;
}
