// LANCET_FAILPOINTS parsing: names, actions, the n-th hit; a typo is a CONFIG_INVALID error, never a no-op.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { FAILPOINTS, parseFailpoints } from "../../src/failpoints.ts";
import { isBackfillError } from "../../src/index.ts";
import { REPO } from "../helpers.ts";

test("entries are name[:fail|kill|exit][@n]; unset or empty arms nothing", () => {
  assert.equal(parseFailpoints(undefined), undefined);
  assert.equal(parseFailpoints(" "), undefined);
  const m = parseFailpoints("graft.after-publish, lock.after-create:kill@3,commit.before-marker:exit")!;
  assert.deepEqual([...m.keys()], ["graft.after-publish", "lock.after-create", "commit.before-marker"]);
  assert.deepEqual({ ...m.get("graft.after-publish") }, { action: "fail", at: undefined, hits: 0 });
  assert.deepEqual({ ...m.get("lock.after-create") }, { action: "kill", at: 3, hits: 0 });
  assert.equal(m.get("commit.before-marker")!.action, "exit");
  for (const name of ["graft.before-publish", "graft.after-publish", "graft.verify-fail", "commit.before-marker", "refragment.mid-rewrite", "lock.after-create"]) assert.ok(name in FAILPOINTS, name);
});

test("an unknown name or action is CONFIG_INVALID naming the entry and the known names", () => {
  for (const bad of ["graft.after-publsh", "graft.after-publish:explode", "lock.after-create@x"]) {
    assert.throws(() => parseFailpoints(bad), (e: unknown) => isBackfillError(e, "CONFIG_INVALID") && (e as Error).message.includes(`"${bad}"`) && (e as Error).message.includes("graft.verify-fail"));
  }
});

test("the CLI refuses a misspelt LANCET_FAILPOINTS with a clear error before doing anything", () => {
  const r = spawnSync(process.execPath, [path.join(REPO, "bin/lancet.mjs"), "backfill", "--db", "/nonexistent", "--table", "t", "--column", "y"], { env: { ...process.env, LANCET_FAILPOINTS: "graft.after-publsh" }, encoding: "utf8" });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /CONFIG_INVALID: LANCET_FAILPOINTS entry "graft.after-publsh"/);
  assert.doesNotMatch(r.stderr, /at parseFailpoints/, "no stack trace");
});
