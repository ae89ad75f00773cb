/**
 * Error policies: what to do when a UDF throws (or times out) on a row or batch.
 *
 * Plain-object forms, on the UDF (`errorPolicy`) or per backfill (`errorPolicy` option,
 * `--error-policy fail|skip|retry:N`):
 *
 * - `"fail"` (default): the job fails on the first error.
 * - `"skip"`: the row's value becomes null, the error is stored in the errors table, the job goes on.
 * - `{ retry: N }`: up to N attempts per row (scalar) or batch, exponential backoff with jitter,
 *   capped; then `then` (default `"fail"`; `"skip"` allowed). `backoffMs` / `maxBackoffMs` tune it.
 * - a list of matchers, first match wins; an error no matcher matches fails the job:
 *   `[{ name: "TimeoutError", action: "retry", attempts: 5 }, { message: "bad input", action: "skip" }]`.
 *   `name` matches the error's `name` or class name; `message` is a regular expression.
 */
import { ConfigError } from "../errors.ts";

export type PolicyAction = "fail" | "skip" | "retry";

export interface PolicyRule {
  readonly action: PolicyAction;
  /** Error name or class name to match. */
  readonly name?: string;
  /** Regular expression (source) the message must match. */
  readonly message?: string;
  /** With `retry`: attempts in all (first call included). @default 3 */
  readonly attempts?: number;
  /** With `retry`: what to do once attempts are used up. @default "fail" */
  readonly then?: "fail" | "skip";
  /** With `retry`: first backoff. @default 1000 */
  readonly backoffMs?: number;
  /** With `retry`: backoff cap. @default 60000 */
  readonly maxBackoffMs?: number;
}

export type ErrorPolicySpec = "fail" | "skip" | { retry: number; then?: "fail" | "skip"; backoffMs?: number; maxBackoffMs?: number } | readonly PolicyRule[];

/** A validated policy: the rules in order. An empty list means fail on everything. */
export interface ErrorPolicy {
  readonly rules: readonly PolicyRule[];
  /** Human form, e.g. `skip` or `retry:3`. */
  readonly label: string;
}

function fail(where: string, what: string): never {
  throw new ConfigError("CONFIG_INVALID", `${where}${what.startsWith(".") ? "" : " "}${what}; use "fail", "skip", { retry: N } or a list of { name?, message?, action: "retry" | "skip" | "fail", attempts? }`);
}

function checkRule(r: unknown, where: string): PolicyRule {
  if (typeof r !== "object" || r === null) fail(where, `must be an object (got ${JSON.stringify(r)})`);
  const o = r as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!["action", "name", "message", "attempts", "then", "backoffMs", "maxBackoffMs"].includes(k)) fail(where, `has an unknown field "${k}"`);
  if (o.action !== "fail" && o.action !== "skip" && o.action !== "retry") fail(where, `.action must be "fail", "skip" or "retry" (got ${JSON.stringify(o.action)})`);
  if (o.name !== undefined && (typeof o.name !== "string" || o.name === "")) fail(where, `.name must be a non-empty string`);
  if (o.message !== undefined) {
    if (typeof o.message !== "string") fail(where, `.message must be a regular expression string`);
    try {
      new RegExp(o.message);
    } catch (e) {
      fail(where, `.message ${JSON.stringify(o.message)} is not a valid regular expression (${(e as Error).message})`);
    }
  }
  for (const k of ["attempts", "backoffMs", "maxBackoffMs"] as const) {
    const v = o[k];
    if (v !== undefined && (typeof v !== "number" || !Number.isInteger(v) || v < (k === "attempts" ? 1 : 0) || v > (k === "attempts" ? 100 : 3_600_000))) {
      fail(where, `.${k} must be an integer ${k === "attempts" ? "from 1 to 100" : "from 0 to 3600000"} (got ${JSON.stringify(v)})`);
    }
  }
  if (o.then !== undefined && o.then !== "fail" && o.then !== "skip") fail(where, `.then must be "fail" or "skip" (got ${JSON.stringify(o.then)})`);
  return o as unknown as PolicyRule;
}

/** Validates any accepted form. @throws ConfigError naming `where` */
export function resolveErrorPolicy(spec: unknown, where: string): ErrorPolicy {
  if (spec === undefined || spec === "fail") return { rules: [], label: "fail" };
  if (spec === "skip") return { rules: [{ action: "skip" }], label: "skip" };
  if (typeof spec === "string") {
    const m = /^retry:(\d+)$/.exec(spec);
    if (m) return resolveErrorPolicy({ retry: Number(m[1]) }, where);
    fail(where, `must be "fail", "skip" or "retry:N" (got ${JSON.stringify(spec)})`);
  }
  if (Array.isArray(spec)) {
    const rules = spec.map((r, i) => checkRule(r, `${where}[${i}]`));
    return { rules, label: `${rules.length} matcher${rules.length === 1 ? "" : "s"}` };
  }
  if (typeof spec === "object" && spec !== null && "retry" in spec) {
    const o = spec as Record<string, unknown>;
    const rule = checkRule({ action: "retry", attempts: o.retry, ...(o.then !== undefined ? { then: o.then } : {}), ...(o.backoffMs !== undefined ? { backoffMs: o.backoffMs } : {}), ...(o.maxBackoffMs !== undefined ? { maxBackoffMs: o.maxBackoffMs } : {}) }, where);
    if (rule.attempts === undefined) fail(where, `.retry must be a number of attempts`);
    return { rules: [rule], label: `retry:${rule.attempts}${rule.then === "skip" ? "+skip" : ""}` };
  }
  return fail(where, `is not a valid error policy (got ${JSON.stringify(spec)})`);
}

/** The first rule matching `e`, or undefined (= fail). */
export function matchRule(policy: ErrorPolicy, e: unknown): PolicyRule | undefined {
  const err = e as { name?: unknown; message?: unknown; constructor?: { name?: string } } | null;
  const name = typeof err?.name === "string" ? err.name : "Error";
  const cls = err?.constructor?.name;
  const message = typeof err?.message === "string" ? err.message : String(e);
  return policy.rules.find(
    (r) => (r.name === undefined || r.name === name || r.name === cls) && (r.message === undefined || new RegExp(r.message).test(message)),
  );
}

/** Exponential backoff with jitter (50–100% of the step), capped. `attempt` is the attempt that failed (1-based). */
export function backoffMs(rule: PolicyRule, attempt: number): number {
  const base = rule.backoffMs ?? 1000;
  const cap = rule.maxBackoffMs ?? 60_000;
  const step = Math.min(cap, base * 2 ** (attempt - 1));
  return Math.round(step * (0.5 + Math.random() * 0.5));
}
