/**
 * The web console (`lancet console`) in a real headless Chromium, used as a person would: real
 * LanceDB tables in a temp folder, real `lancet backfill` child processes, the console as a child
 * process, the page driven by playwright-core through the console's data-testid contract.
 *
 * 1. a slow backfill appears on the jobs page as running; its progress rises live (no reload) and
 *    ends finished at 100%; the filters narrow the list;
 * 2. its job page (opened by its link): plan, metrics, chart, events, UDF;
 * 3. a column whose UDF throws on two rows under the skip policy: its job page lists both errors with
 *    message, row address and stack;
 * 4. a console with --token: a running job cancelled from its page (confirm accepted) reads
 *    cancelled there and in `lancet jobs --json`; a wrong or missing token gets 401;
 * 5. tables page and table page (% filled per column, UDF file, fragments); views page;
 * 6. an unknown job, a table dropped while its page is open (the console keeps serving /api/health);
 * 7. with --redis: a live `lancet worker` is listed on the workers page (skipped without redis-server);
 * 8. screenshots of the jobs, job, tables, table and views pages (docs/screenshots when
 *    LANCET_SCREENSHOTS=1 or the files are not there yet, else a temp dir).
 *
 * Skipped without Chromium, except in CI (test/browser.ts).
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import type { Browser, BrowserContext, Locator, Page } from "playwright-core";
import { arrow, lancedb } from "../../src/arrow.ts";
import type { ArrowNs } from "../../src/arrow.ts";
import { addColumns, createView } from "../../src/index.ts";
import { launchBrowser, requireBrowser, startConsole, type ConsoleProcess } from "../browser.ts";
import { REPO, udfRef } from "../helpers.ts";
import { startLancetWorker, type WorkerProc } from "../lancet-worker.ts";
import { RedisServer, requireRedisServer } from "../redis.ts";

const BIN = path.join(REPO, "bin/lancet.mjs");
const TOKEN = "s3cret-console-token";
const FRAGMENTS = 8;
const PER_FRAGMENT = 500;
/** Rows badRows throws on (skip policy): fragment 0 offset 5, fragment 2 offset 234. */
const FAIL_IDS = [5, 1234];
const VIEWPORT = { width: 1280, height: 800 };
/** A slow backfill: slowBatch sleeps 40 ms per 20-row batch, one worker, a commit per fragment, a job record saved every 300 ms (~10–20 s for 4,000 rows). */
const SLOW = ["--concurrency", "1", "--checkpoint-size", "20", "--max-checkpoint-size", "20", "--commit-granularity", "1", "--status-interval-ms", "300"];

/** id 0..n-1 (int64) and x = id (float64), no nulls: a filled column reads 100%. */
function rowsFrom(start: number, n: number): ArrowNs.Table {
  const ids = Array.from({ length: n }, (_, i) => BigInt(start + i));
  return new arrow.Table({
    id: arrow.vectorFromArray(ids, new arrow.Int64()),
    x: arrow.vectorFromArray(ids.map(Number), new arrow.Float64()),
  });
}

interface Child {
  child: ChildProcess;
  out: () => string;
  err: () => string;
  exited: Promise<number | null>;
}

const children: Child[] = [];

/** `lancet ARGS` as a child process of this Node. */
function lancet(args: string[]): Child {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: REPO, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  const c = { child, out: () => out, err: () => err, exited };
  children.push(c);
  return c;
}

/** `lancet ARGS`, to the end. */
function lancetSync(args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: REPO, encoding: "utf8", timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

const lastJson = <T>(s: string): T => JSON.parse(s.trim().split("\n").at(-1)!) as T;

/** A locator whose whole text is `text` (trimmed). */
function exactly(l: Locator, text: string): Locator {
  return l.filter({ hasText: new RegExp(`^\\s*${text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\s*$`) });
}

/** The jobs-page row of the job of `table`.`column` (there is one such job per column here, except where noted). */
function jobRowOf(page: Page, table: string, column: string): Locator {
  return page
    .locator("tr[data-testid=job-row]")
    .filter({ has: exactly(page.locator("[data-testid=job-column]"), column) })
    .filter({ has: exactly(page.locator("[data-testid=job-table]"), table) });
}

async function waitText(l: Locator, text: string | RegExp, timeout: number, what: string): Promise<void> {
  const target = typeof text === "string" ? exactly(l, text) : l.filter({ hasText: text });
  try {
    await target.first().waitFor({ state: "visible", timeout });
  } catch (e) {
    const seen = await l.allTextContents().catch(() => ["(unreadable)"]);
    throw new Error(`${what}: expected ${String(text)} within ${timeout} ms; seen ${JSON.stringify(seen)}: ${(e as Error).message.split("\n")[0]}`);
  }
}

/** A UDF module of this test's own (edited during the test). */
const UDF_SOURCE = `export const inc = { inputs: ["x"], dataType: "float64", fn: (x: number | null) => (x === null ? null : x + 1) };\n`;

const PNG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const SCREENSHOT_DIR = path.join(REPO, "docs", "screenshots");

describe("lancet console in headless Chromium", { skip: requireBrowser(), timeout: 240_000 }, () => {
  let dir: string;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let plain: ConsoleProcess;
  let guarded: ConsoleProcess;
  let scratch: string;
  let udfFile: string;
  const pageErrors: string[] = [];
  let slowJobId = "";
  let errorsJobId = "";

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "lancet-console-"));
    scratch = mkdtempSync(path.join(tmpdir(), "lancet-shots-"));
    const db = await lancedb.connect(dir);
    const t = await db.createTable("t", rowsFrom(0, PER_FRAGMENT));
    for (let f = 1; f < FRAGMENTS; f++) await t.add(rowsFrom(f * PER_FRAGMENT, PER_FRAGMENT));
    await addColumns({ db: dir, table: "t" }, { y: udfRef("slowBatch"), w: udfRef("slowBatch"), z: udfRef("badRows"), h: udfRef("doubled") });
    await db.createTable("src", rowsFrom(0, 40), { storageOptions: { new_table_enable_stable_row_ids: "true" } } as never);
    await createView(dir, "v", { source: "src", where: "x >= 10", select: ["id", "x"], udfs: { dbl: udfRef("doubled") } });
    udfFile = path.join(scratch, "inc.ts");
    writeFileSync(udfFile, UDF_SOURCE);
    await addColumns({ db: dir, table: "src" }, { k: `${udfFile}#inc` });
    await db.createTable("dropme", rowsFrom(0, 10));
    await addColumns({ db: dir, table: "dropme" }, { d: udfRef("doubled") });

    // h: two of eight fragments filled → 25%.
    const h = lancetSync(["backfill", "--db", dir, "--table", "t", "--column", "h", "--num-frags", "2", "--json"]);
    assert.equal(h.code, 0, h.err);
    // z: a UDF that throws on two rows, skipped by its errorPolicy.
    const z = lancetSync(["backfill", "--db", dir, "--table", "t", "--column", "z", "--json", "--concurrency", "1", "--env", `LANCET_TEST_FAIL_IDS=${FAIL_IDS.join(",")}`]);
    assert.equal(z.code, 0, z.err);
    const zJob = lastJson<{ id: string; status: string; metrics: { rowsSkipped: number } }>(z.out);
    assert.equal(zJob.metrics.rowsSkipped, 2);
    errorsJobId = zJob.id;
    // The view, filled once (its page shows the watermark).
    const v = lancetSync(["refresh", "--db", dir, "--view", "v"]);
    assert.equal(v.code, 0, v.err);

    [plain, guarded] = await Promise.all([startConsole(dir), startConsole(dir, { token: TOKEN })]);
    browser = await launchBrowser();
    context = await browser.newContext({ viewport: VIEWPORT });
    page = await context.newPage();
    page.on("pageerror", (e) => pageErrors.push(`${page.url()}: ${e.message}`));
  });

  after(async () => {
    for (const c of children) if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill("SIGKILL");
    await browser?.close().catch(() => {});
    await Promise.all([plain?.stop(), guarded?.stop()]);
    if (dir) rmSync(dir, { recursive: true, force: true });
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  const noPageErrors = (): void => assert.deepEqual(pageErrors, [], "uncaught errors in the page");

  test("1. a running backfill appears on the jobs page; its progress rises live and it ends finished at 100%", { timeout: 120_000 }, async () => {
    await page.goto(`${plain.origin}/#/jobs`);
    await waitText(page.locator("[data-testid=live]"), "live", 20_000, "[data-testid=live] once the SSE stream is connected");
    await page.locator("table[data-testid=jobs]").waitFor({ timeout: 10_000 });
    // Records every change of the t.y row's status and progress (the row may be re-rendered: it is
    // looked up again on each mutation), and a marker that a reload would wipe.
    await page.evaluate(`(() => {
      window.__noReload = true;
      const rec = (window.__rec = { values: [], texts: [], statuses: [], id: null });
      const look = () => {
        for (const row of document.querySelectorAll("tr[data-testid=job-row]")) {
          const col = row.querySelector("[data-testid=job-column]");
          const tab = row.querySelector("[data-testid=job-table]");
          if (!col || !tab || col.textContent.trim() !== "y" || tab.textContent.trim() !== "t") continue;
          rec.id = row.getAttribute("data-job-id");
          const p = row.querySelector("[data-testid=job-progress]");
          const s = row.querySelector("[data-testid=job-status]");
          const v = p ? p.getAttribute("data-value") : null;
          if (v !== null && rec.values.at(-1) !== v) { rec.values.push(v); rec.texts.push(p.textContent.trim()); }
          const st = s ? s.textContent.trim() : null;
          if (st !== null && rec.statuses.at(-1) !== st) rec.statuses.push(st);
        }
      };
      new MutationObserver(look).observe(document.body, { subtree: true, childList: true, attributes: true, characterData: true });
      look();
    })()`);

    const job = lancet(["backfill", "--db", dir, "--table", "t", "--column", "y", "--json", ...SLOW]);
    const row = jobRowOf(page, "t", "y");
    await waitText(row.locator("[data-testid=job-status]"), "running", 30_000, "the t.y job row's [data-testid=job-status]");
    slowJobId = (await row.getAttribute("data-job-id")) ?? "";
    assert.ok(slowJobId, "tr[data-testid=job-row] has a data-job-id");
    await waitText(page.locator(`tr[data-testid=job-row][data-job-id="${slowJobId}"] [data-testid=job-status]`), "finished", 90_000, "the t.y job's status");
    await waitText(page.locator(`tr[data-testid=job-row][data-job-id="${slowJobId}"] [data-testid=job-progress]`), "100%", 10_000, "the finished job's [data-testid=job-progress]");

    const code = await job.exited;
    assert.equal(code, 0, job.err());
    const result = lastJson<{ id: string; status: string }>(job.out());
    assert.equal(result.id, slowJobId, "the row is the backfill's job");
    assert.equal(result.status, "finished");

    const rec = (await page.evaluate("window.__rec")) as { values: string[]; texts: string[]; statuses: string[]; id: string };
    assert.equal(await page.evaluate("window.__noReload === true"), true, "the page was not reloaded");
    assert.ok(rec.statuses.includes("running"), `statuses seen: ${rec.statuses.join(" → ")}`);
    assert.equal(rec.statuses.at(-1), "finished");
    const values = rec.values.map(Number);
    for (const v of values) assert.ok(v >= 0 && v <= 1, `data-value ${v} is a fraction 0..1 (seen ${rec.values.join(", ")})`);
    let rises = 0;
    for (let i = 1; i < values.length; i++) {
      assert.ok(values[i]! >= values[i - 1]!, `progress never goes back: ${rec.values.join(", ")}`);
      if (values[i]! > values[i - 1]!) rises++;
    }
    assert.ok(rises >= 2, `data-value rose at least twice while the page was open (seen ${rec.values.join(", ")}; texts ${rec.texts.join(", ")})`);
    assert.ok(values.some((v) => v > 0 && v < 1), `an intermediate value between 0 and 1 was shown (seen ${rec.values.join(", ")})`);
    assert.equal(values.at(-1), 1);
    // The text is the value as a percentage (42% for 0.42; "<1%" just after the start).
    for (const text of rec.texts) assert.match(text, /^(<1|\d+)%$/, `progress text (seen ${rec.texts.join(", ")})`);
    assert.equal(rec.texts.at(-1), "100%");

    // Filters: by status and by table.
    const status = page.locator("select[data-testid=filter-status]");
    await status.selectOption("failed");
    await row.waitFor({ state: "detached", timeout: 10_000 });
    await status.selectOption("finished");
    await row.waitFor({ timeout: 10_000 });
    for (const s of await page.locator("tr[data-testid=job-row] [data-testid=job-status]").allTextContents()) assert.equal(s.trim(), "finished", "the status filter shows finished jobs only");
    const table = page.locator("input[data-testid=filter-table]");
    await table.fill("no-such-table");
    await table.press("Enter");
    await page.locator("tr[data-testid=job-row]").first().waitFor({ state: "detached", timeout: 10_000 });
    await table.fill("t");
    await table.press("Enter");
    await row.waitFor({ timeout: 10_000 });
    await status.selectOption({ index: 0 });
    await table.fill("");
    await table.press("Enter");
    noPageErrors();
  });

  test("2. a finished job's page, opened by its link: status, plan, metrics, chart, events, UDF", { timeout: 120_000 }, async () => {
    assert.ok(slowJobId, "test 1 found the slow job");
    await page.goto(`${plain.origin}/#/jobs`);
    await page.locator(`tr[data-testid=job-row][data-job-id="${slowJobId}"] a[data-testid=job-link]`).click();
    await page.waitForURL((u) => u.hash === `#/jobs/${slowJobId}`, { timeout: 10_000 });
    await waitText(page.locator("[data-testid=job-title]"), new RegExp(slowJobId), 10_000, "[data-testid=job-title]");
    await waitText(page.locator("[data-testid=job-status]"), "finished", 10_000, "job page [data-testid=job-status]");
    await waitText(page.locator("[data-testid=job-progress]"), "100%", 10_000, "job page [data-testid=job-progress]");
    assert.equal(await page.locator("[data-testid=job-progress]").getAttribute("data-value"), "1");
    for (const id of ["job-plan", "metrics", "metrics-chart", "events", "job-udf"]) await page.locator(`[data-testid=${id}]`).waitFor({ state: "visible", timeout: 10_000 });
    assert.match(await page.locator("[data-testid=metrics]").innerText(), /\b4[,. \u202f]?000\b/, "metrics show the 4,000 rows computed");
    assert.match(await page.locator("[data-testid=job-plan]").innerText(), /\S/, "the plan is not empty");
    const udfText = await page.locator("[data-testid=job-udf]").innerText();
    assert.match(udfText, /udfs\.ts#slowBatch/);
    const chart = page.locator("[data-testid=metrics-chart]");
    // uPlot is loaded on demand (a module import): the canvas comes a moment after the page.
    await chart.locator("canvas, svg").first().waitFor({ state: "attached", timeout: 10_000 });
    const box = await chart.boundingBox();
    assert.ok(box && box.width > 100 && box.height > 50, `the chart has a size (${JSON.stringify(box)})`);
    assert.ok((await chart.locator("canvas, svg").count()) > 0, "the chart draws a canvas or an svg");
    const events = page.locator("[data-testid=events] li[data-testid=event]");
    assert.ok((await events.count()) >= 2, "events are listed");
    assert.ok((await events.allInnerTexts()).some((e) => /finished/.test(e)), "the finished event is listed");
    assert.equal(await page.locator("button[data-testid=cancel-job]").count(), 0, "no cancel button on a finished job");
    assert.doesNotMatch(udfText, /\[object |undefined|NaN/, `the UDF section renders no placeholder text: ${JSON.stringify(udfText)}`);
    noPageErrors();
  });

  test("3. a job whose UDF threw on two rows (skip policy): its page lists both errors with message, row address and stack", { timeout: 60_000 }, async () => {
    await page.goto(`${plain.origin}/#/jobs`);
    const zRow = jobRowOf(page, "t", "z");
    await zRow.waitFor({ timeout: 15_000 });
    assert.equal(await zRow.getAttribute("data-job-id"), errorsJobId);
    await zRow.locator("a[data-testid=job-link]").click();
    await page.waitForURL((u) => u.hash === `#/jobs/${errorsJobId}`, { timeout: 10_000 });
    await waitText(page.locator("[data-testid=job-title]"), new RegExp(errorsJobId), 10_000, "[data-testid=job-title] of the errors job");
    const errorRows = page.locator("[data-testid=errors] tr[data-testid=error-row]");
    await errorRows.first().waitFor({ timeout: 10_000 });
    assert.equal(await errorRows.count(), 2, "one error row per skipped row");
    for (const id of FAIL_IDS) {
      const fragment = Math.floor(id / PER_FRAGMENT);
      const offset = id % PER_FRAGMENT;
      const address = ((BigInt(fragment) << 32n) | BigInt(offset)).toString();
      const er = errorRows.filter({ hasText: `bad row ${id}` });
      assert.equal(await er.count(), 1, `an error row with the message "bad row ${id}"`);
      const text = await er.innerText();
      assert.ok(text.includes(address) || (new RegExp(`\\b${fragment}\\b`).test(text) && new RegExp(`\\b${offset}\\b`).test(text)), `row ${id}'s error names its row address ${address} (fragment ${fragment}, offset ${offset}): ${JSON.stringify(text)}`);
      assert.match(text, /\bz\b/, "the error row names the column");
      const stack = er.locator("details[data-testid=error-stack]");
      await stack.locator("summary").click();
      assert.equal(await stack.getAttribute("open"), "", "the stack opens on a click");
      const st = await stack.innerText();
      assert.match(st, new RegExp(`TypeError: bad row ${id}\\n\\s*at \\S`), "the stack trace is shown");
    }
    await page.locator("[data-testid=diagnosis]").waitFor({ state: "attached", timeout: 5000 });
    await page.locator("[data-testid=failed-fragments]").waitFor({ state: "attached", timeout: 5000 });
    noPageErrors();
  });

  test("4. with --token: cancel a running job from its page; `lancet jobs --json` says cancelled; a wrong token gets 401", { timeout: 120_000 }, async () => {
    const apiUrls: string[] = [];
    const p = await context.newPage();
    p.on("pageerror", (e) => pageErrors.push(`${p.url()}: ${e.message}`));
    p.on("request", (req) => {
      const u = new URL(req.url());
      if (u.origin === guarded.origin && u.pathname.startsWith("/api/") && u.pathname !== "/api/health") apiUrls.push(req.url());
    });
    try {
      const job = lancet(["backfill", "--db", dir, "--table", "t", "--column", "w", "--json", ...SLOW]);
      await p.goto(`${guarded.origin}/?token=${TOKEN}#/jobs`);
      await waitText(p.locator("[data-testid=live]"), "live", 20_000, "[data-testid=live] with a token");
      const row = jobRowOf(p, "t", "w");
      await waitText(row.locator("[data-testid=job-status]"), "running", 30_000, "the t.w job row's status");
      const id = (await row.getAttribute("data-job-id")) ?? "";
      await row.locator("a[data-testid=job-link]").click();
      await p.waitForURL((u) => u.hash === `#/jobs/${id}`, { timeout: 10_000 });
      const button = p.locator("button[data-testid=cancel-job]");
      await button.waitFor({ timeout: 10_000 });
      const dialogs: string[] = [];
      p.once("dialog", (d) => {
        dialogs.push(d.type());
        void d.accept();
      });
      await button.click();
      await waitText(p.locator("[data-testid=job-status]"), "cancelled", 60_000, "the job page's status after the cancel");
      assert.deepEqual(dialogs, ["confirm"], "the cancel asks to confirm");
      await button.waitFor({ state: "detached", timeout: 10_000 });
      assert.equal(await job.exited, 1, "the cancelled backfill exits 1");
      assert.equal(lastJson<{ status: string }>(job.out()).status, "cancelled");
      const listed = lancetSync(["jobs", "--db", dir, "--json"]);
      assert.equal(listed.code, 0, listed.err);
      const record = lastJson<{ id: string; status: string }[]>(listed.out).find((j) => j.id === id);
      assert.equal(record?.status, "cancelled", "lancet jobs --json");

      // The API the page used, without its token and with a wrong one.
      const api = apiUrls.find((u) => new URL(u).searchParams.get("token") === TOKEN || !new URL(u).searchParams.has("token"));
      assert.ok(api, `the page called the API (${apiUrls.join(", ")})`);
      for (const token of [undefined, "wrong"]) {
        const target: URL = new URL(api);
        target.searchParams.delete("token");
        if (token) target.searchParams.set("token", token);
        const res = await fetch(target);
        assert.equal(res.status, 401, `${target.href} answers 401`);
        assert.match(res.headers.get("content-type") ?? "", /json/, "401 from the API is JSON");
        const body = JSON.stringify(await res.json());
        assert.doesNotMatch(body, new RegExp(TOKEN), "the 401 does not give away the token");
      }
      // A person with a wrong token: the page says 401 (its own status, or the console's error box).
      const q = await context.newPage();
      const statuses: number[] = [];
      q.on("response", (res) => {
        if (new URL(res.url()).pathname.startsWith("/api/")) statuses.push(res.status());
      });
      const doc = await q.goto(`${guarded.origin}/?token=wrong#/jobs`);
      if (doc?.status() !== 401) {
        await q.locator("[data-testid=error]").waitFor({ timeout: 10_000 });
        assert.ok(statuses.includes(401), `the page's API calls got 401 (${statuses.join(", ")})`);
        assert.match(await q.locator("[data-testid=error]").innerText(), /token|401|unauthori[sz]ed/i);
      } else {
        assert.match(await q.locator("body").innerText(), /token|401|unauthori[sz]ed/i);
      }
      assert.equal(await q.locator("tr[data-testid=job-row]").count(), 0, "no jobs shown with a wrong token");
      await q.close();
    } finally {
      await p.close();
    }
    noPageErrors();
  });

  test("5. tables page and table page: % filled, UDF file, fragments; views page lists the view", { timeout: 60_000 }, async () => {
    await page.goto(`${plain.origin}/#/jobs`);
    await page.locator("a[data-testid=nav-tables]").click();
    await page.waitForURL((u) => u.hash === "#/tables", { timeout: 10_000 });
    const trow = page.locator('tr[data-testid=table-row][data-table="t"]');
    await trow.waitFor({ timeout: 10_000 });
    await page.locator('tr[data-testid=table-row][data-table="src"]').waitFor({ timeout: 10_000 });
    const link = trow.locator("a");
    if ((await link.count()) > 0) await link.first().click();
    else await page.goto(`${plain.origin}/#/tables/t`);
    await page.waitForURL((u) => u.hash === "#/tables/t", { timeout: 10_000 });
    const filled = (c: string) => page.locator(`tr[data-testid=column-row][data-column="${c}"] [data-testid=column-filled]`);
    // "100%", possibly followed by the counts ("100% (4,000 / 4,000)").
    await waitText(filled("y"), /^\s*100%/, 10_000, "column y's % filled");
    await waitText(filled("h"), /^\s*25%/, 10_000, "column h's % filled (2 of 8 fragments)");
    // z: every row but the two skipped ones; w: cancelled part-way (what `lancet status` says).
    const status = lancetSync(["status", "--db", dir, "--table", "t", "--json"]);
    assert.equal(status.code, 0, status.err);
    for (const s of lastJson<{ column: string; filledRows: number; totalRows: number }[]>(status.out)) {
      const shown = Number.parseFloat((await filled(s.column).innerText()).replace(",", "."));
      const expected = (100 * s.filledRows) / s.totalRows;
      assert.ok(Math.abs(shown - expected) <= 1, `column ${s.column}: page shows ${shown}%, lancet status ${s.filledRows}/${s.totalRows} = ${expected.toFixed(2)}%`);
    }
    assert.doesNotMatch(await filled("w").innerText(), /^\s*100%/, "the cancelled column w is not complete");
    assert.equal((await page.locator('tr[data-testid=column-row][data-column="y"] [data-testid=column-udf-file]').innerText()).trim(), "ok", "y's module file is there, unchanged");
    const fragments = page.locator("[data-testid=fragments]");
    await fragments.waitFor({ timeout: 10_000 });
    const fragText = await fragments.innerText();
    const fragItems = Math.max(...(await Promise.all(["[data-testid=fragment]", "tbody tr", "li", ":scope > *"].map((sel) => fragments.locator(sel).count()))));
    assert.ok(fragItems >= FRAGMENTS, `the ${FRAGMENTS} fragments are shown one by one: ${fragItems} items in ${JSON.stringify(fragText.slice(0, 300))}`);
    assert.match(fragText, new RegExp(`\\b${PER_FRAGMENT}\\b`), "with their rows");
    await page.locator("[data-testid=table-warnings]").waitFor({ state: "attached", timeout: 5000 });

    // A UDF module edited on disk after it was bound: the table page says so, in the column and in the warnings.
    await page.goto(`${plain.origin}/#/tables/src`);
    const kFile = page.locator('tr[data-testid=column-row][data-column="k"] [data-testid=column-udf-file]');
    await waitText(kFile, "ok", 10_000, "column k's module file before the edit");
    assert.doesNotMatch(await page.locator("[data-testid=table-warnings]").innerText(), /changed/);
    writeFileSync(udfFile, UDF_SOURCE.replace("x + 1", "x + 2"));
    await page.reload();
    await waitText(kFile, "changed", 10_000, "column k's module file after the edit");
    assert.match(await page.locator("[data-testid=table-warnings]").innerText(), /\bk\b.*changed/s, "a warning names the column whose module changed");

    await page.locator("a[data-testid=nav-views]").click();
    await page.waitForURL((u) => u.hash === "#/views", { timeout: 10_000 });
    const view = page.locator('tr[data-testid=view-row][data-view="v"]');
    await view.waitFor({ timeout: 10_000 });
    const viewText = await view.innerText();
    assert.match(viewText, /\bsrc\b/, "the view row names its source");
    assert.doesNotMatch(viewText, /never refreshed/, "the view was refreshed");

    // Without --redis there are no workers to list: the page says how to get them (an empty list or an error with that hint).
    await page.locator("a[data-testid=nav-workers]").click();
    await page.waitForURL((u) => u.hash === "#/workers", { timeout: 10_000 });
    await page.locator("main, body").filter({ hasText: /--redis/ }).first().waitFor({ timeout: 10_000 });
    assert.equal(await page.locator("tr[data-testid=worker-row]").count(), 0);
    noPageErrors();
  });

  test("6. bad input: an unknown job, a table dropped while its page is open; the console keeps serving", { timeout: 60_000 }, async () => {
    await page.goto(`${plain.origin}/#/jobs/does-not-exist`);
    const error = page.locator("[data-testid=error]");
    await error.waitFor({ timeout: 10_000 });
    assert.match(await error.innerText(), /does-not-exist|not found|JOB_NOT_FOUND/i, "the error says which job is missing");

    await page.goto(`${plain.origin}/#/tables/dropme`);
    await page.locator('tr[data-testid=column-row][data-column="d"]').waitFor({ timeout: 10_000 });
    assert.equal(await error.count(), 0);
    const db = await lancedb.connect(dir);
    await db.dropTable("dropme");
    await page.reload();
    await error.waitFor({ timeout: 10_000 });
    assert.match(await error.innerText(), /dropme|not found|TABLE_NOT_FOUND/i, "the error names the missing table");
    assert.equal(await page.locator("tr[data-testid=column-row]").count(), 0, "no stale columns");

    await page.locator("a[data-testid=nav-tables]").click();
    await page.locator('tr[data-testid=table-row][data-table="t"]').waitFor({ timeout: 10_000 });
    assert.equal(await page.locator('tr[data-testid=table-row][data-table="dropme"]').count(), 0, "the dropped table is gone from the list");
    const health = await fetch(`${plain.origin}/api/health`);
    assert.equal(health.status, 200, "the console still serves /api/health");
    assert.equal(plain.child.exitCode, null, "the console is still running");
    noPageErrors();
  });

  test("7. with --redis: the workers page lists a live `lancet worker`", { timeout: 60_000, skip: requireRedisServer() }, async () => {
    const redis = await RedisServer.start();
    const live = new Set<WorkerProc>();
    let withRedis: ConsoleProcess | undefined;
    try {
      const worker = await startLancetWorker(redis.url, live, { args: ["--queue", "console"] });
      withRedis = await startConsole(dir, { args: ["--redis", redis.url, "--queue", "console"] });
      const p = await context.newPage();
      p.on("pageerror", (e) => pageErrors.push(`${p.url()}: ${e.message}`));
      try {
        await p.goto(`${withRedis.origin}/#/workers`);
        const row = p.locator("tr[data-testid=worker-row]");
        await row.first().waitFor({ timeout: 15_000 });
        assert.equal(await row.count(), 1, "one live worker");
        assert.match(await row.innerText(), new RegExp(`\\b${worker.pid}\\b`), "the row names the worker's pid");
        assert.equal(await p.locator("[data-testid=error]").count(), 0);
      } finally {
        await p.close();
      }
    } finally {
      await withRedis?.stop();
      for (const w of live) await w.stop();
      await redis.stop();
    }
    noPageErrors();
  });

  test("8. screenshots of the jobs, job, tables, table and views pages", { timeout: 60_000 }, async () => {
    assert.ok(errorsJobId, "the errors job ran");
    const write = process.env.LANCET_SCREENSHOTS === "1";
    const shots: [string, string, () => Promise<void>][] = [
      ["jobs", "#/jobs", () => page.locator("tr[data-testid=job-row]").nth(2).waitFor({ timeout: 10_000 })],
      ["job", `#/jobs/${errorsJobId}`, async () => {
        await page.locator("tr[data-testid=error-row]").nth(1).waitFor({ timeout: 10_000 });
        await page.locator("[data-testid=metrics-chart] canvas, [data-testid=metrics-chart] svg").first().waitFor({ timeout: 10_000 });
      }],
      ["tables", "#/tables", () => page.locator('tr[data-testid=table-row][data-table="t"]').waitFor({ timeout: 10_000 })],
      ["table", "#/tables/t", () => page.locator('tr[data-testid=column-row][data-column="y"]').waitFor({ timeout: 10_000 })],
      ["views", "#/views", () => page.locator('tr[data-testid=view-row][data-view="v"]').waitFor({ timeout: 10_000 })],
    ];
    for (const [name, hash, ready] of shots) {
      await page.goto(`${plain.origin}/${hash}`);
      await ready();
      await waitText(page.locator("[data-testid=live]"), "live", 10_000, "[data-testid=live]");
      const committed = path.join(SCREENSHOT_DIR, `${name}.png`);
      const file = write || !existsSync(committed) ? committed : path.join(scratch, `${name}.png`);
      mkdirSync(path.dirname(file), { recursive: true });
      await page.mouse.move(VIEWPORT.width - 1, VIEWPORT.height - 1); // no hover highlight
      // The job page whole (its errors are below the chart); the others as the viewport shows them.
      const fullPage = name === "job";
      await page.screenshot({ path: file, fullPage });
      const bytes = readFileSync(file);
      assert.ok(bytes.subarray(0, 8).equals(PNG), `${file} is a PNG`);
      assert.ok(statSync(file).size > 5000, `${file} is not empty`);
      // IHDR: width and height.
      const [width, height] = [bytes.readUInt32BE(16), bytes.readUInt32BE(20)];
      assert.equal(width, VIEWPORT.width, `${file} is ${VIEWPORT.width} wide`);
      assert.ok(fullPage ? height >= VIEWPORT.height : height === VIEWPORT.height, `${file} is ${height} high`);
    }
    noPageErrors();
  });
});
