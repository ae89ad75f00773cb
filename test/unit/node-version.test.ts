/** The Node.js check that the `lancet` command and the library entry run first (bin/node-version.mjs). */
import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { test } from "node:test";
import { MIN_NODE, unsupportedNode } from "../../bin/node-version.mjs";
import { REPO } from "../helpers.ts";

test("supported: 22.18 and later; refused: anything older, with what to do", () => {
  assert.deepEqual(MIN_NODE, [22, 18]);
  for (const v of ["22.18.0", "22.22.1", "23.11.0", "24.0.0", "24.21.0", "26.1.0"]) assert.equal(unsupportedNode(v), undefined, v);
  for (const v of ["18.20.8", "20.20.2", "22.0.0", "22.17.1", "21.7.3"]) {
    const message = unsupportedNode(v, { installed: true, execPath: "/usr/bin/node" });
    assert.ok(message?.startsWith(`Lancet needs Node.js 22.18 or later, Node 24 LTS recommended (this is Node ${v}, /usr/bin/node); `), message);
  }
});

test("the advice depends on where Lancet is: installed in a project, or a clone", () => {
  const installed = unsupportedNode("20.20.2", { installed: true, execPath: "/usr/bin/node" }) ?? "";
  assert.match(installed, /`nvm install 24`/);
  assert.match(installed, /`npm install --save-dev node@24`, then run `npx lancet …`/);
  assert.doesNotMatch(installed, /clone/);
  const clone = unsupportedNode("20.20.2", { installed: false, execPath: "/usr/bin/node" }) ?? "";
  assert.match(clone, /run `npm install` in the clone, then `npx lancet …`/);
});

// The real thing on a real old Node, where the machine has one (Debian's /usr/bin/node is 20 here).
const oldNode = ["/usr/bin/node", "/usr/local/bin/node"].find((p) => existsSync(p) && Number(spawnSync(p, ["-p", "process.versions.node.split('.')[0]"]).stdout) < 22);
test("on an old Node, `lancet` and the library refuse with the same message", { skip: oldNode === undefined && "no Node older than 22 at /usr/bin/node" }, () => {
  const cli = spawnSync(oldNode!, ["bin/lancet.mjs", "--version"], { cwd: REPO, encoding: "utf8" });
  assert.equal(cli.status, 1);
  assert.match(cli.stderr, /^lancet: error NODE_UNSUPPORTED: Lancet needs Node\.js 22\.18 or later/);
  // The library's first import; src/index.ts itself cannot load on Node 20 (no type stripping), dist/ is what runs there.
  const lib = spawnSync(oldNode!, ["--input-type=module", "-e", 'try { await import("./bin/node-version.mjs"); } catch (e) { console.log(e.code, e.message); }'], { cwd: REPO, encoding: "utf8" });
  assert.equal(lib.stdout, `NODE_UNSUPPORTED ${cli.stderr.replace(/^lancet: error NODE_UNSUPPORTED: /, "")}`);
});
