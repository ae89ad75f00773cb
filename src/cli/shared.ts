/** What every CLI command shares: injected I/O, usage errors, option helpers and error reporting. */
import { isBackfillError } from "../errors.ts";

export interface CliIo {
  readonly stdout: { write(s: string): unknown };
  readonly stderr: { write(s: string): unknown };
  readonly isTTY: boolean;
}

export class UsageError extends Error {}

export function opt(values: Record<string, unknown>, name: string): string {
  const v = values[name];
  if (typeof v !== "string" || v.length === 0) throw new UsageError(`--${name} is required`);
  return v;
}

/** A string flag's value, else the environment variable standing in for it (`--redis` / LANCET_REDIS_URL). */
export function flagOrEnv(values: Record<string, unknown>, name: string, envName: string): string | undefined {
  const v = values[name];
  return typeof v === "string" ? v : process.env[envName];
}

export function intOpt(values: Record<string, unknown>, name: string): number | undefined {
  const v = values[name];
  if (v === undefined) return undefined;
  const s = String(v);
  if (!/^-?\d+$/.test(s)) throw new UsageError(`--${name} must be an integer (got ${JSON.stringify(s)})`);
  return Number(s);
}

export function fmt(n: number): string {
  return n.toLocaleString("en-US");
}

export function report(e: unknown, io: CliIo, json: boolean, extra: Record<string, unknown> = {}): number {
  if (e instanceof UsageError || (e as { code?: string })?.code?.startsWith?.("ERR_PARSE_ARGS")) {
    io.stderr.write(`lancet: ${(e as Error).message}\n\nRun \`lancet --help\` for usage.\n`);
    if (json) io.stdout.write(JSON.stringify({ status: "failed", error: { code: "USAGE", message: (e as Error).message }, ...extra }) + "\n");
    return 2;
  }
  const code = isBackfillError(e) ? e.code : "INTERNAL";
  const message = (e as Error)?.message ?? String(e);
  io.stderr.write(`lancet: error ${code}: ${message}\n`);
  if (json) io.stdout.write(JSON.stringify({ status: "failed", error: { code, message }, ...extra }) + "\n");
  return 1;
}
