// curate serve: the only script of the pages (no inline script: the CSP forbids it).
// What-if sliders, live-run progress polling and the submit form, all through the JSON API.
"use strict";

// The server puts a fresh random token in <meta name="curate-bind"> (the first of <head>) and on each element this
// script may drive (data-bind). Only those elements are bound: an element smuggled into a page by a value from a
// run file (a form, a section with the same id) does not carry the token, so it is never picked up.
const BIND = (() => {
  const m = document.head && document.head.querySelector("meta[name='curate-bind']");
  return m && m.content && m.content.length >= 16 ? m.content : null;
})();

function bound(selector) {
  if (!BIND) return [];
  return Array.from(document.querySelectorAll(selector)).filter((el) => el.dataset.bind === BIND);
}

function boundOne(selector) {
  const all = bound(selector);
  return all.length === 1 ? all[0] : null;
}

function fmt(n) { return Number(n).toLocaleString("en-US"); }

async function postJSON(url, body) {
  const r = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json"},
                              body: JSON.stringify(body), credentials: "same-origin"});
  let data = null;
  try { data = await r.json(); } catch (e) { data = {detail: r.statusText}; }
  return {ok: r.ok, status: r.status, data: data};
}

function setupWhatIf(sec) {
  const run = sec.dataset.run, column = sec.dataset.column;
  const slider = sec.querySelector(".slider"), out = sec.querySelector(".thr-value");
  const dir = sec.querySelector(".direction"), note = sec.querySelector(".note");
  const svg = sec.querySelector("svg.hist"), line = svg && svg.querySelector("line.thr");
  let timer = null, seq = 0;
  function moveLine(v) {
    if (!line) return;
    const lo = Number(svg.dataset.lo), hi = Number(svg.dataset.hi), pad = Number(svg.dataset.pad);
    const w = svg.viewBox.baseVal.width - 2 * pad;
    const x = pad + w * (hi > lo ? (v - lo) / (hi - lo) : 0);
    line.setAttribute("x1", x); line.setAttribute("x2", x);
  }
  async function update() {
    const mine = ++seq, v = Number(slider.value);
    const res = await postJSON(`/api/runs/${encodeURIComponent(run)}/whatif`,
                               {column: column, threshold: v, direction: dir.value});
    if (mine !== seq) return;  // a newer slider position is on its way
    if (!res.ok) { note.textContent = "error: " + JSON.stringify(res.data.detail); return; }
    const byDomain = {};
    for (const d of res.data.domains) byDomain[d.domain] = d;
    for (const el of sec.querySelectorAll("[data-f]")) {
      const d = el.dataset.d === "" ? {new_docs: res.data.totals.new_docs, new_tokens: res.data.totals.new_tokens,
                                        kept_docs: res.data.totals.kept_docs} : byDomain[el.dataset.d];
      if (!d) continue;
      const val = el.dataset.f === "docs" ? d.new_docs : d.new_tokens;
      el.textContent = fmt(val);
      el.closest("td").classList.toggle("changed", (el.dataset.f === "docs" ? d.kept_docs : d.kept_tokens) !== val);
    }
    const p = res.data.previewed, np = res.data.not_previewed;
    note.textContent = `Previewed: ${fmt(p.kept_with_value)} kept and ${fmt(p.dropped_with_value)} dropped ` +
      `documents with a value (${p.dropped_source}). Not previewed: ${fmt(np.dropped_elsewhere)} documents ` +
      `dropped for other reasons stay dropped; documents that come back never went through later stages, ` +
      `so gains are an upper bound; tokens of moved documents are estimated.`;
  }
  function onInput() {
    out.textContent = Number(slider.value).toPrecision(4).replace(/\.?0+$/, "");
    moveLine(Number(slider.value));
    clearTimeout(timer);
    timer = setTimeout(update, 120);
  }
  slider.addEventListener("input", onInput);
  dir.addEventListener("change", onInput);
}

function setupProgress(sec) {
  const run = sec.dataset.run;
  async function poll() {
    const r = await fetch(`/api/runs/${encodeURIComponent(run)}/progress`, {credentials: "same-origin"});
    if (r.ok) {
      const p = await r.json();
      if (p.state === "finished") { location.reload(); return; }
      sec.querySelector("#progress-state").textContent = p.state;
      sec.querySelector("#progress-tasks").textContent = `${p.tasks_done} of ${p.tasks_total}`;
      sec.querySelector("#progress-eta").textContent = p.eta_s === null ? "–" : `${Math.round(p.eta_s)} s`;
      const cells = sec.querySelectorAll("[data-f=tasks]");
      p.passes.forEach((x, i) => { if (cells[i]) cells[i].textContent = `${x.tasks_done} / ${x.tasks_total}`; });
    }
    setTimeout(poll, 2000);
  }
  setTimeout(poll, 2000);
}

function dotted(loc) {
  // FastAPI's own validation errors carry a dotted string, the job routes a list: show both as a.b.c
  return Array.isArray(loc) ? loc.join(".") : String(loc || "");
}

function fieldError(form, result, loc, msg) {
  // The error goes under the field it names (body.config_yaml, body.overrides, body.run_id), else under the form.
  const parts = dotted(loc).split(".");
  const field = parts[0] === "body" ? parts[1] : parts[0];
  const input = field ? form.querySelector(`[name="${CSS.escape(field)}"]`) : null;
  const el = document.createElement("p");
  el.className = "error field-error";
  el.textContent = (input ? "" : (dotted(loc) ? dotted(loc) + ": " : "")) + msg;
  if (input) {
    input.setAttribute("aria-invalid", "true");
    el.dataset.field = field;
    input.closest("label").after(el);
  } else {
    result.appendChild(el);
  }
}

async function refreshRuns() {
  // The runs table of this page, re-read from the server (a finished job's run is listed). The new table comes
  // from a parsed copy of the page (DOMParser runs no script) and only from its section carrying that copy's token.
  const cur = boundOne("section#runs");
  if (!cur) return;
  const r = await fetch("/", {credentials: "same-origin"});
  if (!r.ok) return;
  const doc = new DOMParser().parseFromString(await r.text(), "text/html");
  const meta = doc.head && doc.head.querySelector("meta[name='curate-bind']");
  const fresh = meta && Array.from(doc.querySelectorAll("section#runs")).filter((el) => el.dataset.bind === meta.content);
  if (!fresh || fresh.length !== 1) return;
  cur.replaceChildren(...Array.from(fresh[0].childNodes).map((n) => document.importNode(n, true)));
  cur.dataset.refreshed = "1";
}

function watchJob(jobId, runId, box) {
  // The job's state and the run's progress, every second, until the job ends; then a link to the run.
  const state = document.createElement("p"), prog = document.createElement("p");
  state.id = "submit-state"; prog.id = "submit-progress";
  box.append(state, prog);
  async function poll() {
    const r = await fetch(`/api/jobs/${encodeURIComponent(jobId)}`, {credentials: "same-origin"});
    if (!r.ok) { state.textContent = `job ${jobId}: HTTP ${r.status}`; setTimeout(poll, 2000); return; }
    const job = await r.json();
    state.textContent = `job ${jobId}: ${job.state}`;
    state.dataset.state = job.state;
    const p = await fetch(`/api/runs/${encodeURIComponent(runId)}/progress`, {credentials: "same-origin"});
    if (p.ok) {
      const x = await p.json();
      prog.textContent = `${x.tasks_done} of ${x.tasks_total} tasks done` +
        (x.eta_s === null || x.eta_s === undefined ? "" : `, ETA ${Math.round(x.eta_s)} s`);
      prog.dataset.done = x.tasks_done;
    }
    if (["finished", "failed", "cancelled"].includes(job.state)) {
      if (job.error) { const e = document.createElement("p"); e.className = "error"; e.textContent = job.error; box.append(e); }
      const a = document.createElement("a");
      a.id = "open-run"; a.href = "/runs/" + encodeURIComponent(runId); a.textContent = "open run " + runId;
      box.append(a);
      refreshRuns();
      return;
    }
    setTimeout(poll, 1000);
  }
  poll();
}

function setupSubmit(form, result) {
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    for (const el of form.parentNode.querySelectorAll(".field-error")) el.remove();
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    const fd = new FormData(form);
    const overrides = String(fd.get("overrides") || "").split("\n").map(s => s.trim()).filter(Boolean);
    const runId = String(fd.get("run_id") || "").trim();
    result.textContent = "submitting…";
    const res = await postJSON("/api/runs", {config_yaml: String(fd.get("config_yaml") || ""),
                                            overrides: overrides, run_id: runId || null});
    result.textContent = "";
    if (res.ok) {
      const id = res.data.run_id || runId;
      const p = document.createElement("p");
      p.id = "submit-ok";
      p.textContent = `submitted run ${id}` + (res.data.warnings && res.data.warnings.length ?
                                                 " (" + res.data.warnings.join("; ") + ")" : "");
      result.appendChild(p);
      if (res.data.job && id) watchJob(res.data.job.job_id, id, result);
      return;
    }
    const detail = res.data && res.data.detail;
    const items = Array.isArray(detail) ? detail : [{loc: "", msg: String(detail || res.status)}];
    for (const d of items) fieldError(form, result, d.loc, d.msg);
  });
}

bound("section.whatif").forEach(setupWhatIf);
const prog = boundOne("section#progress");
if (prog) setupProgress(prog);
const sf = boundOne("form#submit-form"), sr = boundOne("div#submit-result");
if (sf && sr) setupSubmit(sf, sr);
