// Which Node.js Lancet runs on, checked before anything else loads: first thing in the `lancet`
// command (bin/lancet.mjs) and first import of the library (src/index.ts, so dist/index.js).
//
// Plain JavaScript on purpose: it must load on the Nodes it refuses. Node 20 cannot import a `.ts`
// file at all, so a check written in TypeScript would fail in a clone with ERR_UNKNOWN_FILE_EXTENSION
// instead of saying what to do. It lives in bin/ because the package ships bin/ and dist/ (not src/).
//
// The floor is 22.18: LanceDB 0.39 declares node >= 22, and 22.18 is the first 22.x that strips
// TypeScript types by default, which a clone's sources, worker entry and .ts UDF modules rely on.
// package.json's `engines` says the same.

/** The oldest supported Node.js, as `[major, minor]`. */
export const MIN_NODE = /** @type {const} */ ([22, 18]);

/**
 * Why `version` cannot run Lancet, as a message that says what to do; `undefined` when it can.
 * @param {string} version - a Node.js version such as `process.versions.node` ("20.20.2")
 * @param {{ installed?: boolean, execPath?: string }} [where] - `installed`: Lancet is a dependency
 *   under node_modules (default: judged from this file's location); `execPath`: the running node
 * @returns {string | undefined}
 */
export function unsupportedNode(version, where = {}) {
  const [major = 0, minor = 0] = version.split(".").map(Number);
  if (major > MIN_NODE[0] || (major === MIN_NODE[0] && minor >= MIN_NODE[1])) return undefined;
  const installed = where.installed ?? import.meta.url.includes("/node_modules/");
  const execPath = where.execPath ?? process.execPath;
  const problem = `Lancet needs Node.js ${MIN_NODE.join(".")} or later, Node 24 LTS recommended (this is Node ${version}, ${execPath})`;
  if (!installed) {
    // A clone: its devDependencies bring Node 24, which npm scripts and npx put first on PATH.
    return `${problem}; run \`npm install\` in the clone, then \`npx lancet …\` or \`npm test\` (npm runs the clone's own Node 24), or install Node 24 (\`nvm install 24\`, or your system's package manager)`;
  }
  return (
    `${problem}; install Node 24 (\`nvm install 24\`, or your system's package manager) and run it again, ` +
    "or give this project its own Node: `npm install --save-dev node@24`, then run `npx lancet …` and your scripts with `npx node script.js` " +
    "or from npm scripts (npx and npm scripts put the project's node_modules/.bin, and so its node, first on PATH)"
  );
}

/** Error code of the failure this module throws on an unsupported Node. */
export const NODE_UNSUPPORTED = "NODE_UNSUPPORTED";

const problem = unsupportedNode(process.versions.node);
if (problem !== undefined) {
  const error = new Error(problem);
  error.name = "NodeUnsupportedError";
  Object.assign(error, { code: NODE_UNSUPPORTED });
  throw error;
}
