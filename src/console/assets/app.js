// The Lancet console's page: a hash router over the console's JSON API (/api/…), live through
// Server-Sent Events. Plain browser JavaScript, no build step. Every element tests look for carries a
// data-testid; every failure renders [data-testid=error] with the message and a hint.

// ---- access: the token from the page's URL, kept for the session, added to every request ------------

const urlToken = new URLSearchParams(location.search).get("token");
if (urlToken) {
  sessionStorage.setItem("lancet-console-token", urlToken);
  // Out of the address bar and the history: the console set a session cookie for reloads.
  history.replaceState(null, "", location.pathname + location.hash);
}
const TOKEN = urlToken ?? sessionStorage.getItem("lancet-console-token");

/** `url` with the token as a query parameter (fetch, EventSource and dynamic imports alike). */
function withToken(url) {
  return TOKEN ? `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(TOKEN)}` : url;
}

/** An API failure as the server describes it: { code, message, hint }. */
class ApiFailure extends Error {
  constructor(error) {
    super(error.message);
    this.code = error.code;
    this.hint = error.hint;
  }
}

/** GETs (or POSTs) an API path; resolves with its JSON, rejects with an ApiFailure. */
async function api(path, init = {}) {
  let res;
  try {
    res = await fetch(withToken(path), { ...init, headers: { accept: "application/json", ...(TOKEN ? { authorization: `Bearer ${TOKEN}` } : {}) } });
  } catch (e) {
    throw new ApiFailure({ code: "NETWORK", message: `cannot reach the console server (${e.message})`, hint: "is `lancet console` still running? Reload once it is" });
  }
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  if (!res.ok) throw new ApiFailure(body?.error ?? { code: `HTTP_${res.status}`, message: `the server answered ${res.status} ${res.statusText} to ${path}`, hint: "see the console's stderr" });
  return body;
}

// ---- DOM helpers --------------------------------------------------------------------------------------

/** Creates an element: h("a", { href, dataset: { testid } }, "text", child…). Text is never parsed as HTML. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces an element's content. */
function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const mainEl = document.getElementById("main");
/**
 * Where the current page renders: a fresh element per route, so a page still loading when the user moves
 * on renders into its own, detached element instead of over the next page.
 */
let main = mainEl;

function errorBox(e) {
  const code = e?.code ?? "ERROR";
  const hint = e?.hint ?? "reload the page; see the console's stderr";
  return h("div", { class: "error", dataset: { testid: "error" }, role: "alert" }, h("strong", {}, code), " ", h("span", { class: "message" }, e?.message ?? String(e)), h("p", { class: "hint" }, hint));
}

// ---- formatting ---------------------------------------------------------------------------------------

const nf = new Intl.NumberFormat("en-US");
const num = (n) => (typeof n === "number" ? nf.format(n) : "–");

/** A job's progress, 0..1: rows processed of rows planned, else tasks done of tasks total. */
function progressOf(job) {
  const m = job.metrics ?? {};
  let f;
  if (m.rowsPlanned > 0) f = m.rowsProcessed / m.rowsPlanned;
  else if (m.tasksTotal > 0) f = m.tasksDone / m.tasksTotal;
  else f = job.status === "finished" ? 1 : 0;
  return Math.max(0, Math.min(1, Number.isFinite(f) ? f : 0));
}

/** A fraction as a percentage that reads 100% only when complete and 0% only when nothing is done. */
function pctText(f) {
  if (!(f > 0)) return "0%";
  if (f >= 1) return "100%";
  const p = Math.floor(f * 100);
  return p === 0 ? "<1%" : `${p}%`;
}

function progressEl(job) {
  const f = progressOf(job);
  const pct = pctText(f);
  return h("span", { class: "progress", dataset: { testid: "job-progress", value: String(f) }, title: `${num(job.metrics?.rowsProcessed)} of ${num(job.metrics?.rowsPlanned)} rows; ${num(job.metrics?.tasksDone)} of ${num(job.metrics?.tasksTotal)} tasks` }, h("span", { class: "bar" }, h("span", { class: "fill", style: `width:${(f * 100).toFixed(1)}%` })), h("span", { class: "pct" }, pct));
}

function statusEl(job) {
  return h("span", { class: `status status-${job.status}`, dataset: { testid: "job-status" }, title: job.abandoned ? "its process stopped heartbeating" : "" }, job.status);
}

function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

function fmtMs(ms) {
  if (typeof ms !== "number" || !Number.isFinite(ms)) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 120) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 120) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

function durationOf(job) {
  if (!job.startedAt) return "–";
  const end = job.finishedAt ? Date.parse(job.finishedAt) : Date.now();
  return fmtMs(end - Date.parse(job.startedAt));
}

function ago(iso) {
  if (!iso) return "–";
  return `${fmtMs(Math.max(0, Date.now() - Date.parse(iso)))} ago`;
}

const initiatorOf = (job) => (job.host ? `pid ${job.pid} on ${job.host}` : "–");
const udfName = (b) => (b ? (b.kind === "sql" ? `SQL: ${b.sql}` : `${b.module}#${b.exportName}`) : "–");

// ---- the live jobs stream (drives the live indicator on every page) ---------------------------------

const live = document.querySelector("[data-testid=live]");
const jobsListeners = new Set();
let lastJobs = null;
let jobsSource = null;

function setLive(on) {
  live.textContent = on ? "live" : "offline";
  live.classList.toggle("offline", !on);
}

function connectJobsStream() {
  jobsSource = new EventSource(withToken("/api/stream"));
  jobsSource.onopen = () => setLive(true);
  jobsSource.onerror = () => setLive(false); // EventSource reconnects by itself
  jobsSource.addEventListener("jobs", (ev) => {
    setLive(true);
    lastJobs = JSON.parse(ev.data).jobs;
    for (const fn of jobsListeners) fn({ jobs: lastJobs });
  });
  jobsSource.addEventListener("failure", (ev) => {
    const { error } = JSON.parse(ev.data);
    for (const fn of jobsListeners) fn({ error });
  });
}

// ---- router ---------------------------------------------------------------------------------------------

/** Teardown of the page shown now (streams, timers, charts). */
let cleanups = [];

function route() {
  for (const fn of cleanups) fn();
  const mine = (cleanups = []);
  main = h("div");
  fill(mainEl, main);
  // A page that registers a cleanup after the user left it (it was still loading) is cleaned up at once.
  const root = main;
  mine.push = (...fns) => {
    if (main !== root) for (const fn of fns) fn();
    else Array.prototype.push.apply(mine, fns);
    return mine.length;
  };
  const hash = location.hash.replace(/^#\/?/, "");
  const [page, ...rest] = hash.split("/");
  let arg;
  try {
    arg = rest.length ? decodeURIComponent(rest.join("/")) : undefined;
  } catch {
    fill(main, errorBox({ code: "NOT_FOUND", message: `no page ${location.hash} (its address is not valid)`, hint: "use the navigation bar: jobs, tables, views, workers" }));
    return;
  }
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.getAttribute("href") === `#/${page || "jobs"}`);
  // Each page renders into its own root (its `main` parameter), never into a later page's.
  const render = { "": () => jobsPage(root), jobs: arg ? () => jobPage(arg, root) : () => jobsPage(root), tables: arg ? () => tablePage(arg, root) : () => tablesPage(root), views: () => viewsPage(root), workers: () => workersPage(root) }[page];
  if (!render) {
    fill(main, errorBox({ code: "NOT_FOUND", message: `no page ${location.hash}`, hint: "use the navigation bar: jobs, tables, views, workers" }));
    return;
  }
  Promise.resolve(render()).catch((e) => fill(root, errorBox(e)));
}

// ---- jobs -------------------------------------------------------------------------------------------------

const filters = { status: "", table: "" };

function jobsPage(main) {
  document.title = "Jobs · Lancet console";
  const status = h(
    "select",
    { dataset: { testid: "filter-status" }, "aria-label": "status", onchange: (e) => { filters.status = e.target.value; draw(); } },
    ["", "pending", "running", "finished", "failed", "cancelled"].map((s) => h("option", { value: s, selected: filters.status === s }, s || "any status")),
  );
  const table = h("input", { dataset: { testid: "filter-table" }, type: "search", placeholder: "table", "aria-label": "table", value: filters.table, oninput: (e) => { filters.table = e.target.value.trim(); draw(); } });
  const body = h("tbody");
  const note = h("p", { class: "muted" });
  const problem = h("div");
  fill(
    main,
    h("h1", {}, "Jobs"),
    h("div", { class: "filters" }, h("label", {}, "Status ", status), h("label", {}, "Table ", table)),
    problem,
    h("table", { class: "grid", dataset: { testid: "jobs" } }, h("thead", {}, h("tr", {}, ["Job", "Kind", "Table", "Column", "Status", "Progress", "Started", "Duration", "Initiator"].map((t) => h("th", {}, t)))), body),
    note,
  );
  let jobs = lastJobs;
  function draw() {
    if (!jobs) return;
    const shown = jobs.filter((j) => (!filters.status || j.status === filters.status) && (!filters.table || j.table.includes(filters.table)));
    fill(
      body,
      shown.map((j) =>
        h(
          "tr",
          { dataset: { testid: "job-row", jobId: j.id } },
          h("td", {}, h("a", { href: `#/jobs/${encodeURIComponent(j.id)}`, dataset: { testid: "job-link" }, class: "mono" }, j.id.slice(0, 8))),
          h("td", {}, j.kind),
          h("td", { dataset: { testid: "job-table" } }, j.table),
          h("td", { dataset: { testid: "job-column" } }, j.column),
          h("td", {}, statusEl(j)),
          h("td", {}, progressEl(j)),
          h("td", { dataset: { testid: "job-started" } }, fmtTime(j.startedAt ?? j.createdAt)),
          h("td", { dataset: { testid: "job-duration" } }, durationOf(j)),
          h("td", { dataset: { testid: "job-initiator" } }, initiatorOf(j)),
        ),
      ),
    );
    fill(note, jobs.length === 0 ? "No jobs yet: start one with `lancet backfill`." : `${shown.length} of ${jobs.length} job${jobs.length === 1 ? "" : "s"}`);
  }
  const onStream = (msg) => {
    if (msg.error) return fill(problem, errorBox(msg.error));
    fill(problem);
    jobs = msg.jobs;
    draw();
  };
  jobsListeners.add(onStream);
  cleanups.push(() => jobsListeners.delete(onStream));
  // Also load at once (the stream may still be connecting, or be refused).
  api("/api/jobs").then((r) => { if (!jobs) onStream(r); }, (e) => fill(problem, errorBox(e)));
  draw();
}

async function jobPage(id, main) {
  document.title = `Job ${id.slice(0, 8)} · Lancet console`;
  const title = h("h1", { dataset: { testid: "job-title" } }, `Job ${id}`);
  const head = h("div", { class: "jobhead" });
  const cancelArea = h("div", { class: "cancel" });
  const problem = h("div");
  const overview = h("div", { class: "overview" });
  const plan = h("div", { dataset: { testid: "job-plan" } });
  const udf = h("div", { dataset: { testid: "job-udf" } });
  const metrics = h("dl", { class: "metrics", dataset: { testid: "metrics" } });
  const chartEl = h("div", { class: "chart", dataset: { testid: "metrics-chart" } });
  const diagnosis = h("div", { dataset: { testid: "diagnosis" } });
  const failed = h("div", { dataset: { testid: "failed-fragments" } });
  const events = h("ul", { class: "events", dataset: { testid: "events" } });
  const errorsNote = h("p", { class: "muted" });
  const errorsBody = h("tbody");
  fill(
    main,
    h("p", {}, h("a", { href: "#/jobs" }, "← Jobs")),
    title,
    head,
    cancelArea,
    problem,
    h("div", { class: "cols" },
      h("section", { class: "card" }, h("h2", {}, "Plan"), plan, h("h2", {}, "UDF"), udf, overview),
      h("section", { class: "card" }, h("h2", {}, "Diagnosis"), diagnosis, h("h2", {}, "Failed fragments"), failed),
    ),
    h("section", { class: "card" }, h("h2", {}, "Rows over time"), chartEl),
    h("section", { class: "card" }, h("h2", {}, "Metrics"), metrics),
    h("section", { class: "card" }, h("h2", {}, "Errors"), errorsNote, h("table", { class: "grid", dataset: { testid: "errors" } }, h("thead", {}, h("tr", {}, ["Error", "Column", "Fragment", "Row offset", "Row address", "Attempt", "At"].map((t) => h("th", {}, t)))), errorsBody)),
    h("section", { class: "card" }, h("h2", {}, "Events"), events),
  );

  // The chart: rows processed and committed over time, from the record's history (one sample per write
  // of the record, kept by the job, timed by the job's clock), rebuilt on every update.
  let samples = [[], [], []];
  let chart = null;
  let uPlot = null;
  const addSample = (job) => {
    const next = [[], [], []];
    const push = (at, processed, committed) => {
      if (next[0].length && at <= next[0][next[0].length - 1]) {
        next[1][next[1].length - 1] = processed;
        next[2][next[2].length - 1] = committed;
        return;
      }
      next[0].push(at);
      next[1].push(processed);
      next[2].push(committed);
    };
    if (job.startedAt) {
      const start = Date.parse(job.startedAt) / 1000;
      push(start, 0, 0);
      const hist = job.history;
      if (hist && Array.isArray(hist.t)) hist.t.forEach((ms, i) => push(start + ms / 1000, hist.rowsProcessed[i] ?? 0, hist.rowsCommitted[i] ?? 0));
      const now = Date.parse(job.finishedAt ?? job.heartbeatAt) / 1000;
      if (Number.isFinite(now)) push(now, job.metrics.rowsProcessed, job.metrics.rowsCommitted);
    }
    samples = next;
  };
  const drawChart = async () => {
    try {
      uPlot ??= (await import(withToken("/vendor/uPlot.esm.js"))).default;
    } catch (e) {
      fill(chartEl, errorBox({ code: "CHART", message: `the chart library did not load (${e.message})`, hint: "reload the page" }));
      return;
    }
    if (chart) return chart.setData(samples);
    const width = Math.max(320, chartEl.clientWidth || 640);
    chart = new uPlot(
      {
        width,
        height: 220,
        scales: { x: { time: true } },
        series: [{}, { label: "rows processed", stroke: "#2563eb", width: 2 }, { label: "rows committed", stroke: "#16a34a", width: 2 }],
        axes: [{}, { size: 70 }],
      },
      samples,
      chartEl,
    );
    cleanups.push(() => chart?.destroy());
  };

  let current = null;
  const update = (detail) => {
    const { job, errors, errorsTotal } = detail;
    current = job;
    fill(problem);
    fill(head, statusEl(job), " ", progressEl(job), h("span", { class: "muted" }, ` ${job.kind} of ${job.table}.${job.column} · started ${fmtTime(job.startedAt)} · ${durationOf(job)} · ${initiatorOf(job)}`));
    if (job.error) head.append(errorBox({ code: job.error.code ?? job.error.name, message: job.error.message, hint: job.abandoned ? "run the backfill again to resume from its checkpoints" : "see the events and errors below" }));
    const active = job.status === "pending" || job.status === "running";
    if (!active) cancelArea.querySelector("button")?.remove();
    else if (!cancelArea.querySelector("button")) cancelArea.prepend(h("button", { class: "danger", dataset: { testid: "cancel-job" }, onclick: () => cancel(job.id) }, "Cancel job"));
    const p = job.plan;
    fill(plan, p ? `version ${p.readVersion}: ${num(p.fragmentsToWrite)} of ${num(p.fragmentsTotal)} fragment(s) to write, ${num(p.tasks)} task(s), up to ${num(p.rowsPlanned)} rows (${p.selection})` : "not planned yet");
    const b = job.binding;
    fill(udf, b ? [h("code", {}, udfName(b)), ` version ${job.udfVersion ?? b.version ?? "–"}`, b.bundle ? [" · bundle ", h("code", { title: b.bundle }, String(b.bundle).slice(0, 12))] : ""] : "–");
    fill(overview, h("p", { class: "muted" }, `created ${fmtTime(job.createdAt)} · finished ${fmtTime(job.finishedAt)} · heartbeat ${ago(job.heartbeatAt)}`));
    const m = job.metrics;
    const pairs = [
      ["rows planned", num(m.rowsPlanned)], ["rows processed", num(m.rowsProcessed)], ["rows computed", num(m.rowsComputed)], ["rows checkpointed", num(m.rowsCheckpointed)],
      ["rows committed", num(m.rowsCommitted)], ["rows skipped", num(m.rowsSkipped)], ["rows / s", num(m.rowsPerSec)], ["tasks", `${num(m.tasksDone)} / ${num(m.tasksTotal)}`],
      ["fragments committed", `${num(m.fragmentsCommitted)} / ${num(m.fragmentsPlanned)}`], ["fragments failed", num(m.fragmentsFailed)], ["commits", `${num(m.commits)} (retries ${num(m.commitRetries)})`],
      ["workers active", num(m.workersActive)], ["worker crashes", num(m.workerCrashes)], ["UDF time", fmtMs(m.udfMs)], ["UDF CPU", fmtMs(m.udfCpuMs)], ["read", fmtMs(m.readMs)],
      ["checkpoint", fmtMs(m.checkpointMs)], ["write", fmtMs(m.writeMs)], ["commit", fmtMs(m.commitMs)], ["elapsed", fmtMs(m.elapsedMs)],
    ];
    fill(metrics, pairs.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v))));
    const d = detail.diagnosis;
    fill(diagnosis, d ? [h("p", { class: "summary" }, d.summary), d.hint ? h("p", { class: "hint" }, d.hint) : null, d.shares ? h("p", { class: "muted" }, Object.entries(d.shares).map(([k, v]) => `${k} ${Math.round(v * 100)}%`).join(" · ")) : null] : h("p", { class: "muted" }, "no diagnosis yet"));
    fill(failed, job.failedFragments?.length ? h("ul", {}, job.failedFragments.map((f) => h("li", {}, `fragment ${f.id}: ${f.reason}`))) : h("p", { class: "muted" }, "none"));
    fill(events, [...job.events].reverse().map((e) => h("li", { dataset: { testid: "event" } }, h("span", { class: "at" }, fmtTime(e.at)), h("span", { class: `evtype evtype-${e.type}` }, e.type), h("span", {}, e.message))));
    fill(errorsNote, errorsTotal === 0 ? "No rows skipped." : errorsTotal > errors.length ? `Showing the first ${errors.length} of ${num(errorsTotal)} error records (all of them: \`lancet errors --job ${job.id}\`).` : `${num(errorsTotal)} error record${errorsTotal === 1 ? "" : "s"}: rows left null by the error policy.`);
    fill(
      errorsBody,
      errors.map((e) =>
        h(
          "tr",
          { dataset: { testid: "error-row" } },
          h("td", {}, h("div", { class: "errmsg", dataset: { testid: "error-message" } }, `${e.name}: ${e.message}`), h("details", { dataset: { testid: "error-stack" } }, h("summary", {}, "stack"), h("pre", {}, e.stack || "(no stack)"))),
          h("td", { dataset: { testid: "error-column" } }, e.column),
          h("td", { dataset: { testid: "error-fragment" } }, e.fragment),
          h("td", { dataset: { testid: "error-row-offset" } }, e.rowOffset),
          h("td", { class: "mono", dataset: { testid: "error-row-address" } }, e.rowAddress),
          h("td", {}, e.attempt),
          h("td", {}, fmtTime(e.at)),
        ),
      ),
    );
    addSample(job);
    void drawChart();
  };

  async function cancel(jobId) {
    if (!confirm(`Cancel job ${jobId}? Workers finish their batch in flight; complete fragments are committed, and a later backfill resumes the rest.`)) return;
    const button = cancelArea.querySelector("button");
    if (button) {
      button.disabled = true;
      button.textContent = "Cancelling…";
    }
    const result = cancelArea.querySelector("[data-testid=cancel-result]") ?? cancelArea.appendChild(h("span", { class: "muted", dataset: { testid: "cancel-result" } }));
    fill(result, " cancel requested; waiting for the job to stop…");
    try {
      const { job } = await api(`/api/jobs/${encodeURIComponent(jobId)}/cancel`, { method: "POST" });
      fill(result, ` job is ${job.status}${job.status === "cancelled" ? ` (${num(job.metrics.fragmentsCommitted)} fragment(s) committed; a later backfill resumes the rest)` : ""}`);
      if (current?.id === job.id) update({ ...lastDetail, job });
    } catch (e) {
      fill(result, errorBox(e));
      if (button) {
        button.disabled = false;
        button.textContent = "Cancel job";
      }
    }
  }

  let lastDetail = null;
  const show = (detail) => {
    lastDetail = detail;
    update(detail);
  };
  try {
    show(await api(`/api/jobs/${encodeURIComponent(id)}`));
  } catch (e) {
    fill(main, h("p", {}, h("a", { href: "#/jobs" }, "← Jobs")), title, errorBox(e));
    return;
  }
  const source = new EventSource(withToken(`/api/jobs/${encodeURIComponent(id)}/stream`));
  source.addEventListener("job", (ev) => show(JSON.parse(ev.data)));
  source.addEventListener("failure", (ev) => fill(problem, errorBox(JSON.parse(ev.data).error)));
  cleanups.push(() => source.close());
}

// ---- tables -----------------------------------------------------------------------------------------------

async function tablesPage(main) {
  document.title = "Tables · Lancet console";
  fill(main, h("h1", {}, "Tables"), h("p", { class: "muted" }, "Loading…"));
  const { tables } = await api("/api/tables");
  fill(
    main,
    h("h1", {}, "Tables"),
    tables.length === 0
      ? h("p", { class: "muted" }, "No tables in this database.")
      : h(
          "table",
          { class: "grid", dataset: { testid: "tables" } },
          h("thead", {}, h("tr", {}, ["Table", "Rows", "Fragments", "Columns", "UDF columns", "Warnings"].map((t) => h("th", {}, t)))),
          h(
            "tbody",
            {},
            tables.map((t) =>
              h(
                "tr",
                { dataset: { testid: "table-row", table: t.name } },
                h("td", {}, h("a", { href: `#/tables/${encodeURIComponent(t.name)}`, dataset: { testid: "table-link" } }, t.name)),
                h("td", { dataset: { testid: "table-rows" } }, num(t.rows)),
                h("td", { dataset: { testid: "table-fragments" } }, num(t.fragments.length)),
                h("td", { dataset: { testid: "table-columns" } }, num(t.columns.length)),
                h("td", {}, num(t.columns.filter((c) => c.udf).length)),
                h("td", { class: "warn", dataset: { testid: "table-warning-count" } }, t.warnings.length ? t.warnings.map((w) => h("div", {}, w)) : ""),
              ),
            ),
          ),
        ),
  );
}

async function tablePage(name, main) {
  document.title = `${name} · Lancet console`;
  fill(main, h("h1", {}, name), h("p", { class: "muted" }, "Loading…"));
  let t;
  try {
    t = await api(`/api/tables/${encodeURIComponent(name)}`);
  } catch (e) {
    fill(main, h("p", {}, h("a", { href: "#/tables" }, "← Tables")), h("h1", {}, name), errorBox(e));
    return;
  }
  const maxRows = Math.max(1, ...t.fragments.map((f) => f.rows + (f.deletedRows ?? 0)));
  fill(
    main,
    h("p", {}, h("a", { href: "#/tables" }, "← Tables")),
    h("h1", { dataset: { testid: "table-title" } }, t.name),
    h("p", { class: "muted" }, `${num(t.rows)} rows · ${num(t.fragments.length)} fragment${t.fragments.length === 1 ? "" : "s"} · version ${t.version}`),
    h("div", { dataset: { testid: "table-warnings" } }, t.warnings.length ? h("ul", { class: "warnings" }, t.warnings.map((w) => h("li", {}, w))) : h("p", { class: "muted" }, "No warnings.")),
    h(
      "section",
      { class: "card" },
      h("h2", {}, "Columns"),
      h(
        "table",
        { class: "grid", dataset: { testid: "columns" } },
        h("thead", {}, h("tr", {}, ["Column", "Type", "Filled", "UDF", "Version", "Module file"].map((x) => h("th", {}, x)))),
        h(
          "tbody",
          {},
          t.columns.map((c) =>
            h(
              "tr",
              { dataset: { testid: "column-row", column: c.name } },
              h("td", {}, c.name),
              h("td", { class: "mono" }, c.type),
              h("td", {}, c.udf ? h("span", { class: "progress", dataset: { testid: "column-filled", value: String(c.fraction) } }, h("span", { class: "bar" }, h("span", { class: "fill", style: `width:${Math.round(c.fraction * 100)}%` })), h("span", { class: "pct" }, `${pctText(c.fraction)} (${num(c.filled)} / ${num(c.total)})`)) : h("span", { class: "muted" }, "data column")),
              h("td", { dataset: { testid: "column-udf" } }, c.udf ? h("code", {}, udfName(c.udf)) : "–"),
              h("td", {}, c.udf?.version ?? "–"),
              h("td", { dataset: { testid: "column-udf-file" }, class: c.udfFile && c.udfFile !== "ok" && c.udfFile !== "sql" ? "warn" : "" }, c.udfFile ?? "–"),
            ),
          ),
        ),
      ),
    ),
    h(
      "section",
      { class: "card" },
      h("h2", {}, "Fragments"),
      h(
        "div",
        { class: "fragments", dataset: { testid: "fragments" } },
        t.fragments.map((f) =>
          h(
            "div",
            { class: "fragment", dataset: { testid: "fragment", fragment: String(f.id) } },
            h("span", { class: "fid" }, `#${f.id}`),
            h("span", { class: "fbar" }, h("span", { class: "fill", style: `width:${(100 * f.rows) / maxRows}%` }), f.deletedRows ? h("span", { class: "deleted", style: `width:${(100 * f.deletedRows) / maxRows}%` }) : null),
            h("span", { class: "frows" }, `${num(f.rows)} rows${f.deletedRows ? ` (+${num(f.deletedRows)} deleted)` : ""}`),
          ),
        ),
      ),
    ),
  );
}

// ---- views ------------------------------------------------------------------------------------------------

function describeView(d) {
  const kind = d.chunker ? `chunk view by ${d.chunker}` : d.udtf ? `UDTF view by ${d.udtf}` : "view";
  const parts = [kind, `select ${d.select?.length ? d.select.join(", ") : "–"}`];
  if (d.where) parts.push(`where ${d.where}`);
  const udfs = Object.entries(d.udfs ?? {});
  if (udfs.length) parts.push(`UDFs ${udfs.map(([c, u]) => `${c} = ${u}`).join(", ")}`);
  return parts.join("; ");
}

async function viewsPage(main) {
  document.title = "Views · Lancet console";
  fill(main, h("h1", {}, "Views"), h("p", { class: "muted" }, "Loading…"));
  const { views } = await api("/api/views");
  fill(
    main,
    h("h1", {}, "Views"),
    views.length === 0
      ? h("p", { class: "muted" }, "No views in this database (create one with `lancet create-view`).")
      : h(
          "table",
          { class: "grid", dataset: { testid: "views" } },
          h("thead", {}, h("tr", {}, ["View", "Definition", "Source", "Watermark", "Last refresh"].map((t) => h("th", {}, t)))),
          h(
            "tbody",
            {},
            views.map((v) =>
              h(
                "tr",
                { dataset: { testid: "view-row", view: v.name } },
                h("td", {}, h("a", { href: `#/tables/${encodeURIComponent(v.name)}` }, v.name)),
                h("td", { dataset: { testid: "view-definition" } }, describeView(v.definition)),
                h("td", { dataset: { testid: "view-source" } }, h("a", { href: `#/tables/${encodeURIComponent(v.definition.source)}` }, v.definition.source)),
                h("td", { dataset: { testid: "view-watermark" } }, v.watermark ? `source version ${v.watermark.sourceVersion}` : "never refreshed"),
                h("td", { dataset: { testid: "view-refreshed" } }, v.watermark ? fmtTime(v.watermark.refreshedAt) : "–"),
              ),
            ),
          ),
        ),
  );
}

// ---- workers ----------------------------------------------------------------------------------------------

async function workersPage(main) {
  document.title = "Workers · Lancet console";
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  fill(main, h("h1", {}, "Workers"), body);
  const load = async () => {
    let r;
    try {
      r = await api("/api/workers");
    } catch (e) {
      fill(body, errorBox(e));
      if (e.code === "NO_REDIS") clearInterval(timer); // it will not change while this console runs
      return;
    }
    const res = (x) => Object.entries(x ?? {}).map(([k, v]) => `${k}=${v}`).join(", ") || "none";
    fill(
      body,
      h("h2", {}, "Live workers"),
      r.workers.length === 0
        ? h("p", { class: "muted" }, "No live workers on this queue (start one with `lancet worker --redis URL`).")
        : h(
            "table",
            { class: "grid", dataset: { testid: "workers" } },
            h("thead", {}, h("tr", {}, ["Worker", "Host", "Queue", "Resources", "Running / slots", "Heartbeat", "Started"].map((t) => h("th", {}, t)))),
            h(
              "tbody",
              {},
              r.workers.map((w) =>
                h(
                  "tr",
                  { dataset: { testid: "worker-row", workerId: w.id } },
                  h("td", { class: "mono" }, w.id),
                  h("td", {}, `${w.host} (pid ${w.pid})`),
                  h("td", {}, `${w.queue}-${w.resourceClass}`),
                  h("td", {}, res(w.resources)),
                  h("td", {}, `${w.active} / ${w.concurrency}`),
                  h("td", {}, ago(w.seenAt)),
                  h("td", {}, fmtTime(w.startedAt)),
                ),
              ),
            ),
          ),
      h("h2", {}, "Queues"),
      h(
        "table",
        { class: "grid", dataset: { testid: "queues" } },
        h("thead", {}, h("tr", {}, ["Queue", "Waiting", "Active", "Delayed", "Failed", "Completed"].map((t) => h("th", {}, t)))),
        h("tbody", {}, r.queues.map((q) => h("tr", { dataset: { testid: "queue-row", queue: q.name } }, h("td", {}, q.name), [q.waiting, q.active, q.delayed, q.failed, q.completed].map((n) => h("td", {}, num(n)))))),
      ),
    );
  };
  const timer = setInterval(() => void load(), 3000);
  cleanups.push(() => clearInterval(timer));
  await load();
}

// ---- start ------------------------------------------------------------------------------------------------

api("/api/health").then(
  (r) => {
    document.getElementById("db").textContent = r.db;
  },
  () => {},
);
connectJobsStream();
window.addEventListener("hashchange", route);
if (!location.hash) history.replaceState(null, "", `${location.pathname}${location.search}#/jobs`);
route();
