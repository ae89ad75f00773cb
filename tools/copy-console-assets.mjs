// Copies the console's static page (src/console/assets: index.html, app.js, style.css) into the build,
// dist/console/assets, which `tsc -p tsconfig.build.json` does not do: the published package serves them
// from there. Run by `npm run build` after tsc.
import { cpSync, existsSync, rmSync } from "node:fs";
import { fileURLToPath } from "node:url";

const from = fileURLToPath(new URL("../src/console/assets/", import.meta.url));
const to = fileURLToPath(new URL("../dist/console/assets/", import.meta.url));
if (!existsSync(from)) throw new Error(`console assets not found at ${from}`);
rmSync(to, { recursive: true, force: true });
cpSync(from, to, { recursive: true });
