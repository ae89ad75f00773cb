/**
 * `npm run demo:rag` (demo/rag.ts) as a user runs it: a real child process on a temp directory. Its
 * output must show the pipeline end to end — documents loaded, a chunk view refreshed, a nearest-
 * neighbour search — and the second refresh incremental (exactly one parent added, one deleted, one
 * updated; only the new passages embedded), after which the edited document ranks first for its phrase.
 */
import { strict as assert } from "node:assert";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, test } from "node:test";
import { lancedb } from "../../src/arrow.ts";
import { REPO } from "../helpers.ts";

const scratch = mkdtempSync(path.join(tmpdir(), "lancet-demo-rag-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

function run(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string; seconds: number }> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(REPO, "demo", "rag.ts"), ...args], { cwd: scratch, stdio: ["ignore", "pipe", "pipe"], timeout: 180_000 });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (status) => resolve({ status, stdout, stderr, seconds: (performance.now() - t0) / 1000 }));
  });
}

/** The numbers of a "Refresh N: parents added A, deleted D, updated U; passages added PA, removed PR; embeddings computed C" line. */
function refreshLine(stdout: string, n: number): { added: number; deleted: number; updated: number; passagesAdded: number; passagesRemoved: number; computed: number } {
  const m = new RegExp(`^Refresh ${n}: parents added (\\d+), deleted (\\d+), updated (\\d+); passages added (\\d+), removed (\\d+); embeddings computed (\\d+)`, "m").exec(stdout);
  assert.ok(m, `no "Refresh ${n}:" line in the demo's output:\n${stdout}`);
  const [added, deleted, updated, passagesAdded, passagesRemoved, computed] = m.slice(1).map(Number) as [number, number, number, number, number, number];
  return { added, deleted, updated, passagesAdded, passagesRemoved, computed };
}

/** The doc ids of the hits printed under `Top 3 for "TEXT":`, in rank order. */
function hitsFor(stdout: string, text: string): string[] {
  const lines = stdout.split("\n");
  const at = lines.findIndex((l) => l === `Top 3 for "${text}":`);
  assert.ok(at >= 0, `no hits printed for "${text}":\n${stdout}`);
  return lines.slice(at + 1).filter((l) => /^ {2}\d\. /.test(l)).slice(0, 3).map((l) => l.trim().split(/\s+/)[1]!);
}

test("npm run demo:rag: documents → chunks → embeddings → nearest neighbours, refreshed incrementally after edits", async () => {
  const dir = path.join(scratch, "rag");
  const r = await run([dir, "--docs", "600"]);
  assert.equal(r.status, 0, `the demo exited ${r.status}:\n${r.stderr}\n${r.stdout}`);
  const out = r.stdout;
  assert.match(out, /^Loaded 600 of the corpus's \d+ ham e-mails/m);

  // First refresh: every document is a new parent; one embedding per passage.
  const first = refreshLine(out, 1);
  assert.deepEqual([first.added, first.deleted, first.updated, first.passagesRemoved], [600, 0, 0, 0]);
  assert.ok(first.passagesAdded > 600, `expected more passages than documents, got ${first.passagesAdded}`);
  assert.equal(first.computed, first.passagesAdded);
  assert.match(out, new RegExp(`^Built an IVF_PQ index on embedding over ${first.passagesAdded} passages`, "m"));
  assert.equal(hitsFor(out, "install the new kernel rpm package on red hat linux").length, 3);

  // The edits, then an incremental refresh: one parent of each kind, only the new passages embedded.
  const edits = /^Edits: (\S+) rewritten to start with "(.+)"; (\S+) deleted; (\S+) added$/m.exec(out);
  assert.ok(edits, `no "Edits:" line:\n${out}`);
  const [, edited, phrase, deleted, added] = edits as unknown as [string, string, string, string, string];
  const second = refreshLine(out, 2);
  assert.deepEqual([second.added, second.deleted, second.updated], [1, 1, 1]);
  assert.ok(second.passagesAdded >= 2 && second.passagesRemoved >= 2, `the edited, deleted and added documents' passages: ${JSON.stringify(second)}`);
  assert.equal(second.computed, second.passagesAdded, "the second refresh embeds only the new passages");
  assert.ok(second.computed < first.computed / 10);

  // The edited document ranks first for its phrase.
  const hits = hitsFor(out, phrase);
  assert.equal(hits[0], edited, `expected ${edited} first for "${phrase}", got ${hits.join(", ")}`);
  assert.match(out, new RegExp(`^${edited.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")} ranks first after the refresh\\.$`, "m"));
  assert.match(out, /^Demo finished in [\d.]+ s\.$/m);

  // What it left: the view holds the added document's passages and none of the deleted one's.
  assert.ok(existsSync(dir));
  const db = await lancedb.connect(dir);
  const view = await db.openTable("passages");
  const count = async (id: string): Promise<number> => view.countRows(`doc_id = '${id}'`);
  assert.equal(await count(deleted), 0);
  assert.ok((await count(added)) > 0);
  assert.equal(await view.countRows(), first.passagesAdded + second.passagesAdded - second.passagesRemoved);
  view.close();
});

test("demo/rag.ts with few documents searches brute force (no index) and still ranks the edited document first", async () => {
  const r = await run([path.join(scratch, "small"), "--docs", "40"]);
  assert.equal(r.status, 0, `the demo exited ${r.status}:\n${r.stderr}\n${r.stdout}`);
  assert.match(r.stdout, /^\d+ passages: too few to train IVF_PQ \(needs 1024\), so the search is brute force \(flat\)$/m);
  assert.doesNotMatch(r.stdout, /Built an IVF_PQ index/);
  assert.deepEqual(Object.values(refreshLine(r.stdout, 2)).slice(0, 3), [1, 1, 1]);
  assert.match(r.stdout, /ranks first after the refresh\./);
});
