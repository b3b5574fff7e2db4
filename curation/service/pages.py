"""The browser pages of ``curate serve``: server-rendered HTML, inline SVG charts, one small script.

Pages: ``/`` (runs, compare form, submit form), ``/runs/{id}`` (funnel, drop reasons, domains,
score histograms with a what-if slider, progress of a live run), ``/runs/{id}/drops`` (dropped
documents of one reason with their details), ``/runs/{id}/docs/{doc_id}`` (one document's path),
``/compare?a=&b=``. Every value from a run or a request is HTML-escaped; the page runs no inline
script (the CSP forbids it): ``static/app.js`` reads ``data-`` attributes and calls the JSON API.
"""

from __future__ import annotations

import html
import json
import time
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse

from curation.errors import CurationError
from curation.io.layout import Layout
from curation.io.runs import progress as run_progress
from curation.query_sandbox import Limits
from curation.service import views
from curation.service.auth import COOKIE, role_of
from curation.service.cache import cached_detail, cached_drops, cached_mixture

router = APIRouter(include_in_schema=False)


def e(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _num(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else e(v)


def _bytes(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return str(n)


def _table(headers: list[str], rows: list[list[str]], cls: str = "", numeric_from: int = 1) -> str:
    """An HTML table; cells are already-escaped HTML; columns from ``numeric_from`` align right."""
    th = "".join(f'<th class="{"num" if i >= numeric_from else ""}">{e(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="{"num" if i >= numeric_from else ""}">{c}</td>'
                                     for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def page(request: Request, title: str, body: str, status: int = 200) -> HTMLResponse:
    role = role_of(request)
    s = request.app.state.settings
    who = ""
    if not s.open_access and request.cookies.get(COOKIE):
        who = (f'<span class="role">signed in ({e(role or "invalid token")})</span>'
               '<form method="post" action="/logout" class="inline"><button id="logout">Log out</button></form>')
    elif s.open_access:
        who = '<span class="role">open access (loopback, no tokens configured)</span>'
    # The empty data: icon keeps the browser from fetching /favicon.ico, a 404 that it logs as a console error.
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)} · curate</title><link rel="stylesheet" href="/static/style.css"><link rel="icon" href="data:,"></head>
<body><header><a href="/" class="brand">curate</a><span class="title">{e(title)}</span>{who}</header>
<main>{body}</main><script src="/static/app.js"></script></body></html>"""
    return HTMLResponse(doc, status_code=status)


def login_page(request: Request, error: str | None = None, status: int = 401) -> HTMLResponse:
    err = f'<p class="error" id="login-error">{e(error)}</p>' if error else ""
    body = f"""<section class="card narrow"><h2>Sign in</h2>
<p>This server needs a token. Paste a <b>read</b> token (browse and query) or a <b>submit</b> token (also submit
and cancel runs).</p>{err}
<form method="post" action="/login" id="login-form"><label>Token <input type="password" name="token" id="token"
autocomplete="current-password" required></label> <button type="submit">Sign in</button></form></section>"""
    return page(request, "sign in", body, status)


def _guard(request: Request) -> str | None:
    """The caller's role, or None when the login form must be shown instead."""
    return role_of(request)


def _limits(request: Request) -> Limits:
    s = request.app.state.settings
    return Limits(timeout_s=s.query_timeout_s, memory_limit=s.query_memory_limit)


def _opener(request: Request) -> views.RunOpener:
    """The app's pool of open run sandboxes (``curation.service.sandbox_pool``)."""
    return request.app.state.pool.open_run


def _error_page(request: Request, exc: Exception) -> HTMLResponse:
    if isinstance(exc, HTTPException):
        return page(request, "error", f'<p class="error">{e(exc.detail)}</p><p><a href="/">All runs</a></p>',
                    exc.status_code)
    return page(request, "error", f'<p class="error">{e(exc)}</p><p><a href="/">All runs</a></p>', 400)


def _run_link(run_id: str) -> str:
    return f'<a href="/runs/{quote(run_id, safe="")}">{e(run_id)}</a>'


# -- charts -----------------------------------------------------------------------------------------

def funnel_svg(funnel: list[dict[str, Any]]) -> str:
    """Horizontal bars: documents leaving each stage, as a share of those read; labels on the bars."""
    if not funnel:
        return ""
    top = max(max(f["in"], f["out"]) for f in funnel) or 1
    row, width, label_w = 26, 900, 190
    bar_w = width - label_w - 250  # room on the right for "1,265 kept of 1,265 (100.0%)"
    parts = []
    for i, f in enumerate(funnel):
        y = i * row
        w = max(1.0, bar_w * f["out"] / top)
        kept = f"{100 * f['out'] / f['in']:.1f}%" if f["in"] else "–"
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 17}" text-anchor="end" class="lbl">{e(f["stage"])}</text>'
            f'<rect x="{label_w}" y="{y + 4}" width="{bar_w * f["in"] / top:.1f}" height="18" class="bar-in"/>'
            f'<rect x="{label_w}" y="{y + 4}" width="{w:.1f}" height="18" class="bar-out"/>'
            f'<text x="{label_w + bar_w + 8}" y="{y + 17}" class="val">{f["out"]:,} kept of {f["in"]:,}'
            f' ({kept})</text>')
    h = row * len(funnel) + 4
    return (f'<svg class="chart" id="funnel" viewBox="0 0 {width} {h}" width="{width}" height="{h}" role="img" '
            f'aria-label="documents kept per stage">{"".join(parts)}</svg>')


def histogram_svg(hist: dict[str, Any], threshold: float | None) -> str:
    """Pool documents per bin: kept (dark) stacked under dropped (light), with the threshold marked."""
    bins = hist["bins"]
    if not bins:
        return '<p class="muted">no values</p>'
    width, height, pad = 560, 160, 30
    top = max(b["docs"] for b in bins) or 1
    bw = (width - 2 * pad) / len(bins)
    parts = []
    for i, b in enumerate(bins):
        x = pad + i * bw
        hk = (height - 2 * pad) * b["kept"] / top
        hd = (height - 2 * pad) * (b["docs"] - b["kept"]) / top
        base = height - pad
        parts.append(f'<rect x="{x:.1f}" y="{base - hk:.1f}" width="{bw - 1:.1f}" height="{hk:.1f}" class="bar-out">'
                     f'<title>{b["lo"]:.4g}–{b["hi"]:.4g}: {b["kept"]} kept</title></rect>'
                     f'<rect x="{x:.1f}" y="{base - hk - hd:.1f}" width="{bw - 1:.1f}" height="{hd:.1f}" '
                     f'class="bar-drop"><title>{b["lo"]:.4g}–{b["hi"]:.4g}: {b["docs"] - b["kept"]} dropped'
                     f'</title></rect>')
    lo, hi = hist["min"], hist["max"]
    parts.append(f'<text x="{pad}" y="{height - 8}" class="val">{lo:.4g}</text>'
                 f'<text x="{width - pad}" y="{height - 8}" text-anchor="end" class="val">{hi:.4g}</text>'
                 f'<text x="{pad}" y="14" class="val">dark: kept · light: dropped (could come back) · '
                 f'max {top:,} docs per bar</text>')
    t = threshold if threshold is not None else lo
    x = pad + (width - 2 * pad) * ((t - lo) / (hi - lo) if hi > lo else 0)
    parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{pad - 8}" y2="{height - pad}" class="thr"/>')
    return (f'<svg class="chart hist" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'data-lo="{lo}" data-hi="{hi}" data-pad="{pad}" role="img" aria-label="histogram of {e(hist["column"])}">'
            f'{"".join(parts)}</svg>')


PALETTE = ("#2f6f9f", "#e07b39", "#4f9a5c", "#b3261e", "#8e6bb8", "#8c6d3f", "#d17fb0", "#7a7a7a", "#b5a431",
           "#3fa3b5")


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def schedule_svg(schedule: dict[str, Any]) -> str:
    """One stacked bar per round: the planned share of each skill, with a legend."""
    skills, rounds = schedule["skills"], schedule["rounds"]
    row, width, label_w, bar_w = 24, 760, 80, 520
    parts = []
    for i, r in enumerate(rounds):
        y, x = i * row, float(label_w)
        parts.append(f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end" class="lbl">round '
                     f'{e(r["round"])}</text>')
        for j, s in enumerate(skills):
            w = bar_w * r["planned"][s]
            parts.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="18" '
                         f'fill="{PALETTE[j % len(PALETTE)]}" '
                         f'class="seg" data-skill="{e(s)}"><title>{e(s)}: {_pct(r["planned"][s])}</title></rect>')
            x += w
    legend_y = row * len(rounds) + 8
    for j, s in enumerate(skills):
        lx = label_w + (j % 4) * 170
        ly = legend_y + (j // 4) * 18
        parts.append(f'<rect x="{lx}" y="{ly}" width="12" height="12" fill="{PALETTE[j % len(PALETTE)]}"/>'
                     f'<text x="{lx + 16}" y="{ly + 11}" class="val">{e(s)}</text>')
    h = legend_y + 18 * ((len(skills) + 3) // 4) + 4
    return (f'<svg class="chart" id="schedule-plot" viewBox="0 0 {width} {h}" width="{width}" height="{h}" role="img" '
            f'aria-label="planned mixture per round">{"".join(parts)}</svg>')


def cmr_svg(cmr: dict[str, Any]) -> str:
    """The fitted R_CMR(T) as a line, the critical ratios it was fitted to as dots; axes labelled with the range."""
    pts = cmr["curve"] + cmr["grid"]
    if not pts:
        return '<p class="muted">no points</p>'
    width, height, pad = 560, 220, 44
    t_lo, t_hi = min(p["t"] for p in pts), max(p["t"] for p in pts)
    r_lo, r_hi = min(p["r"] for p in pts), max(p["r"] for p in pts)
    if r_hi <= r_lo:
        r_lo, r_hi = r_lo - 0.5, r_hi + 0.5

    def xy(p: dict[str, float]) -> str:
        x = pad + (width - 2 * pad) * ((p["t"] - t_lo) / (t_hi - t_lo) if t_hi > t_lo else 0.5)
        y = height - pad - (height - 2 * pad) * (p["r"] - r_lo) / (r_hi - r_lo)
        return f"{x:.1f},{y:.1f}"

    line = " ".join(xy(p) for p in cmr["curve"])
    dots = "".join(f'<circle cx="{xy(p).split(",")[0]}" cy="{xy(p).split(",")[1]}" r="3" class="cmr-pt">'
                   f'<title>T={p["t"]:.4g}, R={p["r"]:.4g}</title></circle>' for p in cmr["grid"])
    unit = f'{cmr["token_unit"]:g}'
    axes = (f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" class="axis"/>'
            f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" class="axis"/>'
            f'<text x="{pad}" y="{height - pad + 16}" class="val">{t_lo:.4g}</text>'
            f'<text x="{width - pad}" y="{height - pad + 16}" text-anchor="end" class="val">{t_hi:.4g}</text>'
            f'<text x="{width / 2}" y="{height - 6}" text-anchor="middle" class="val">T ({e(unit)} tokens)</text>'
            f'<text x="{pad - 4}" y="{height - pad}" text-anchor="end" class="val">{r_lo:.3g}</text>'
            f'<text x="{pad - 4}" y="{pad + 4}" text-anchor="end" class="val">{r_hi:.3g}</text>'
            f'<text x="{pad}" y="{pad - 10}" class="val">R ({e(cmr["domain"])} share)</text>')
    return (f'<svg class="chart" id="cmr-plot" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'role="img" aria-label="critical mixture ratio over tokens">{axes}'
            f'<polyline points="{line}" class="cmr-line"/>{dots}</svg>')


def mixture_section(mx: dict[str, Any]) -> str:
    """Tokens per domain and skill; the Skill-It schedule and the CMR fit when the run holds them."""
    share = "share of tokens" if mx["share_of"] == "tokens" else "share of chars"
    doms = [[e(d["domain"]), _num(d["docs"]), _num(d["chars"]), _num(d["tokens"]), _pct(d["share"])]
            for d in mx["domains"]]
    parts = [f'<h3>Per domain</h3>{_table(["domain", "docs", "chars", "tokens", share], doms, "mixture-domains")}']
    if mx["skills"] is not None:
        sk = [[e(s["skill"]), _num(s["docs"]), _num(s["chars"]), _num(s["tokens_est"]), _pct(s["share"])]
              for s in mx["skills"]]
        parts.append('<h3>Per skill</h3><p class="muted">Tokens per skill are estimated from each document\'s '
                     'domain tokens per character.</p>'
                     + _table(["skill", "docs", "chars", "tokens (est.)", "share"], sk, "mixture-skills"))
    sch = mx["schedule"]
    if sch is not None:
        rows = [[e(r["round"])] + [f'{_pct(r["planned"][s])} <span class="muted">({_pct(r["realised"][s])}, '
                                   f'{r["chars"][s]:,} chars)</span>' for s in sch["skills"]] for r in sch["rounds"]]
        parts.append(f'<h3>Skill-It schedule</h3><p class="muted">{e(sch["method"])}: eta {e(sch["eta"])}, window '
                     f'{e(sch["window"])}, alpha {e(sch["alpha"])}; planned share per round (realised share, '
                     f'characters written).</p>{schedule_svg(sch)}'
                     + _table(["round"] + list(sch["skills"]), rows, "mixture-schedule"))
    cmr = mx["cmr"]
    if cmr is not None:
        p = cmr["params"]
        rows = [[f'{g["t"]:.4g}', f'{g["r"]:.4g}'] for g in cmr["grid"]]
        parts.append(f'<h3>Critical mixture ratio</h3><p>R_CMR(T) = {p["a4"]:.4g} · T<sup>{p["s4"]:.4g}</sup> + '
                     f'{p["b3"]:.4g}, T in {cmr["token_unit"]:g} tokens, general loss may rise by at most '
                     f'{cmr["eps"]:g}; fitted on runs at {e(", ".join(f"{r:g}" for r in cmr["ratios"]))} '
                     f'{e(cmr["domain"])} share (from <code>{e(cmr["path"])}</code>).</p>{cmr_svg(cmr)}'
                     + _table(["T", "critical ratio"], rows, "mixture-cmr"))
    return f'<section class="card" id="mixture"><h2>Mixture</h2>{"".join(parts)}</section>'


# -- pages ------------------------------------------------------------------------------------------

@router.get("/")
def index(request: Request) -> HTMLResponse:
    role = _guard(request)
    if role is None:
        return login_page(request)
    runs = request.app.state.registry.list()
    rows = []
    for r in runs:
        t = r.totals
        tokens = sum(int(d.get("tokens", 0)) for d in r.domains.values())
        kept = f"{100 * t['docs_out'] / t['docs_read']:.1f}%" if t.get("docs_read") else "–"
        rows.append([_run_link(r.run_id), f'<span class="state {e(r.state)}">{e(r.state)}</span>', e(r.name),
                     _num(t.get("docs_read")), _num(t.get("docs_out")), kept, _num(tokens if r.domains else None),
                     _bytes(r.shard_bytes) if r.shard_bytes else "–",
                     e(time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created_unix))) if r.created_unix else "–"]
                    + ([f'<span class="error">{e(r.error)}</span>'] if r.error else [""]))
    table = _table(["run", "state", "pipeline", "docs read", "docs kept", "kept", "tokens", "shards", "created",
                    ""], rows, "runs", numeric_from=3) if rows else '<p class="muted">No runs under this root yet.</p>'
    finished = [r.run_id for r in runs if r.state == "finished"]
    compare = (f'<section class="card"><h2>Compare two runs</h2><form method="get" action="/compare" id="compare-form">'
               f'<label>A <select name="a">{_run_options(finished, 0)}</select></label> '
               f'<label>B <select name="b">{_run_options(finished, 1)}</select></label> '
               f'<button type="submit">Compare</button></form></section>') if len(finished) >= 2 else ""
    root = e(request.app.state.registry.root)
    body = f'<section class="card"><h2>Runs <span class="muted">under {root}</span></h2>{table}</section>{compare}'
    if request.app.state.jobs_enabled and role == "submit":
        body += SUBMIT_FORM
    return page(request, "runs", body)


def _run_options(run_ids: list[str], selected: int) -> str:
    """``<option>``s of ``run_ids`` (newest first) with the one at ``selected`` preselected. The compare form
    preselects the newest run for A and the one before it for B: comparing a run with itself is never the
    useful default."""
    return "".join(f'<option value="{e(i)}"{" selected" if k == selected else ""}>{e(i)}</option>'
                   for k, i in enumerate(run_ids))


# The run id's pattern escapes '-' in its class: browsers compile pattern="" with the regex `v` flag, under which
# an unescaped '-' beside '_' is a syntax error (Chromium logs it and ignores the pattern). Same rule as
# jobs.RUN_ID_RE.
SUBMIT_FORM = """<section class="card"><h2>Submit a run</h2>
<form id="submit-form"><label class="block">Pipeline YAML<textarea name="config_yaml" rows="10" spellcheck="false"
required placeholder="name: my-run&#10;input: ...&#10;stages: ..."></textarea></label>
<label class="block">Overrides, one <code>key=value</code> per line<textarea name="overrides" rows="3"
spellcheck="false" placeholder="stages.1.min_score=0.5"></textarea></label>
<label>Run id (optional) <input name="run_id" pattern="[A-Za-z0-9][A-Za-z0-9._\\-]{0,127}"></label>
<button type="submit">Submit</button></form><div id="submit-result" role="status"></div></section>"""


def _progress_section(run_id: str, p: dict[str, Any]) -> str:
    rows = [[f"pass {x['pass']}", f'<span data-f="tasks">{x["tasks_done"]} / {x["tasks_total"]}</span>',
             _num(x["docs"]), _num(x["docs_per_s"]), _bytes(x["bytes_in"])] for x in p["passes"]]
    eta = "–" if p["eta_s"] is None else f"{p['eta_s']:.0f} s"
    return (f'<section class="card" id="progress" data-run="{e(run_id)}"><h2>Progress</h2>'
            f'<p><b id="progress-state">{e(p["state"])}</b>: <span id="progress-tasks">{p["tasks_done"]} of '
            f'{p["tasks_total"]}</span> tasks, input {_bytes(p["input_bytes_done"])} of {_bytes(p["input_bytes"])}, '
            f'ETA <span id="progress-eta">{eta}</span> (updates every 2 s)</p>'
            f'<div id="progress-table">{_table(["pass", "tasks", "docs", "docs/s", "input bytes"], rows)}</div>'
            '</section>')


def _whatif_section(run_id: str, col: str, hist: dict[str, Any], current: float | None,
                    domains: list[dict[str, Any]]) -> str:
    lo, hi = hist["min"], hist["max"]
    start = current if current is not None else lo
    step = (hi - lo) / 200 if hi > lo else 1
    rows = [[e(d["domain"]), _num(d["docs"]), f'<span data-f="docs" data-d="{e(d["domain"])}">{d["docs"]:,}</span>',
             _num(d["tokens"]), f'<span data-f="tokens" data-d="{e(d["domain"])}">{d["tokens"]:,}</span>']
            for d in domains]
    tot_docs, tot_tok = sum(d["docs"] for d in domains), sum(d["tokens"] for d in domains)
    rows.append(["<b>all</b>", _num(tot_docs), f'<b data-f="docs" data-d="">{tot_docs:,}</b>', _num(tot_tok),
                 f'<b data-f="tokens" data-d="">{tot_tok:,}</b>'])
    cur = "" if current is None else f" (this run used {current:g})"
    return f"""<section class="card whatif" data-run="{e(run_id)}" data-column="{e(col)}">
<h3>{e(col)}</h3>{histogram_svg(hist, current)}
<div class="controls"><label>What if the threshold were <output class="thr-value">{start:.4g}</output>{e(cur)}
<input type="range" class="slider" min="{lo}" max="{hi}" step="{step}" value="{start}"
aria-label="threshold of {e(col)}"></label>
<label>keep <select class="direction"><option value="keep_above">≥ threshold</option>
<option value="keep_below">≤ threshold</option></select></label></div>
{_table(["domain", "docs now", "docs at threshold", "tokens now", "tokens at threshold"], rows, "whatif-table")}
<p class="muted note"></p></section>"""


@router.get("/runs/{run_id}")
def run_page(request: Request, run_id: str) -> HTMLResponse:
    if _guard(request) is None:
        return login_page(request)
    reg = request.app.state.registry
    try:
        path = reg.path(run_id)
        state = reg.state(run_id)
        if state != "finished":
            return page(request, run_id, _progress_section(run_id, {**run_progress(path), "state": state}))
        cache = request.app.state.cache
        mx = cached_mixture(cache, path, _limits(request))
        if mx["schedule"] is not None and not Layout(path).run_json.exists():
            # A skill-ordered run (curate skill-order): shards and a schedule, no funnel or decisions.
            return page(request, f"run {run_id}", mixture_section(mx))
        d = cached_detail(cache, path, _limits(request), _opener(request))
    except (HTTPException, CurationError, ValueError) as exc:
        return _error_page(request, exc)
    t = d["totals"]
    rid = quote(run_id, safe="")
    summary = (f'<p class="summary">{t["docs_read"]:,} documents read from {t["input_files"]} files '
               f'({_bytes(t["input_bytes"])}); <b>{t["docs_out"]:,} kept</b> in {d["shards"]} shards '
               f'({_bytes(d["shard_bytes"])}); {t["quarantined"]} input lines quarantined. Tokens counted with '
               f'{e(d["token_counter"])}. Fingerprint <code>{e(str(d["fingerprint"])[:12])}</code>.</p>')
    reasons = [[e(r["stage"]), f'<a class="reason" href="/runs/{rid}/drops?{urlencode({"stage": r["stage"], "reason": r["reason"]})}">'
                f'{e(r["reason"])}</a>', _num(r["docs"]), _num(r["chars"])] for r in d["reasons"]]
    domains = [[e(x["domain"]), _num(x["docs"]), _num(x["chars"]), _num(x["mean_chars"]), _num(x["tokens"])]
               for x in d["domains"]]
    m = {"config": d["config"], "schema": d["schema"]}
    whatifs = "".join(_whatif_section(run_id, col, h, views._current_threshold(m, col), d["domains"])
                      for col, h in d["histograms"].items() if h["bins"])
    others = [r.run_id for r in reg.list() if r.state == "finished" and r.run_id != run_id]
    compare = " ".join(f'<a href="/compare?{urlencode({"a": run_id, "b": o})}">{e(o)}</a>' for o in others[:10])
    body = (f'<section class="card">{summary}<h2>Funnel: documents kept after each stage</h2>'
            f'{funnel_svg(d["funnel"])}</section>'
            f'<section class="card"><h2>Why documents were dropped</h2><p class="muted">Click a reason to read '
            f'the dropped documents and the values behind each decision.</p>'
            f'{_table(["stage", "reason", "docs", "chars"], reasons, "reasons", numeric_from=2)}</section>'
            f'<section class="card"><h2>Kept documents per domain</h2>'
            f'{_table(["domain", "docs", "chars", "mean chars", "tokens"], domains, "domains")}</section>'
            + mixture_section(mx)
            + (f'<section class="card"><h2>Scores and what-if</h2><p class="muted">Move a slider to see what '
               f'this run would keep at another threshold (from the values the run recorded).</p>{whatifs}</section>'
               if whatifs else "")
            + (f'<section class="card"><h2>Compare with</h2><p>{compare}</p></section>' if compare else ""))
    return page(request, f"run {run_id}", body)


def _details_html(details: Any) -> str:
    if details is None:
        return '<span class="muted">no details recorded</span>'
    if isinstance(details, dict):
        return "".join(f"<span class=\"kv\"><b>{e(k)}</b> {e(json.dumps(v) if not isinstance(v, str) else v)}</span>"
                       for k, v in details.items())
    return e(details)


@router.get("/runs/{run_id}/drops")
def drops_page(request: Request, run_id: str, stage: str | None = None, reason: str | None = None,
               domain: str | None = None, offset: int = 0) -> HTMLResponse:
    if _guard(request) is None:
        return login_page(request)
    reg = request.app.state.registry
    offset = max(0, min(offset, 1_000_000))
    try:
        path = reg.path(run_id)
        d = cached_drops(request.app.state.cache, path, _limits(request), _opener(request), stage, reason, domain,
                         None, offset, 20)
    except (HTTPException, CurationError, ValueError) as exc:
        return _error_page(request, exc)
    rid = quote(run_id, safe="")
    items = []
    for s in d["samples"]:
        text = s["text"]
        items.append(f'<article class="sample"><h3><a href="/runs/{rid}/docs/{quote(s["id"], safe="")}">'
                     f'{e(s["id"])}</a> <span class="muted">{e(s["domain"])} · {e(s["source"])} · '
                     f'{_num(s["n_chars"])} chars</span></h3><p class="details">{e(s["stage"])} / '
                     f'<b>{e(s["reason"])}</b>: {_details_html(s["details"])}</p>'
                     + (f'<pre class="text">{e(text)}</pre>' if text else
                        '<p class="muted">text not kept (output.keep_rejected_text is off)</p>') + '</article>')
    q = {k: v for k, v in (("stage", stage), ("reason", reason), ("domain", domain)) if v is not None}
    nav = []
    if offset > 0:
        nav.append(f'<a href="?{urlencode({**q, "offset": max(0, offset - 20)})}">previous</a>')
    if offset + 20 < d["total"]:
        nav.append(f'<a href="?{urlencode({**q, "offset": offset + 20})}" id="next">next</a>')
    title = " / ".join(x for x in (stage, reason) if x) or "all drops"
    body = (f'<p><a href="/runs/{rid}">← run {e(run_id)}</a></p><section class="card"><h2>{e(title)}: '
            f'{d["total"]:,} documents</h2><p class="muted">showing {offset + 1 if d["total"] else 0}–'
            f'{min(offset + 20, d["total"])}</p>{"".join(items)}<p>{" · ".join(nav)}</p></section>')
    return page(request, f"{run_id}: {title}", body)


@router.get("/runs/{run_id}/docs/{doc_id:path}")
def doc_page(request: Request, run_id: str, doc_id: str) -> HTMLResponse:
    if _guard(request) is None:
        return login_page(request)
    reg = request.app.state.registry
    try:
        d = views.document(reg.path(run_id), _limits(request), doc_id, _opener(request))
    except (HTTPException, CurationError, ValueError) as exc:
        return _error_page(request, exc)
    rid = quote(run_id, safe="")
    parts = [f'<p><a href="/runs/{rid}">← run {e(run_id)}</a></p>']
    if d["outcome"] == "unknown":
        parts.append(f'<p class="error">No document {e(doc_id)} in this run.</p>')
        return page(request, doc_id, "".join(parts), 404)
    if d["dropped"]:
        for x in d["dropped"]:
            parts.append(f'<section class="card"><h2 class="outcome dropped">Dropped by {e(x["stage"])}: '
                         f'{e(x["reason"])}</h2><p class="details">{_details_html(x["details"])}</p>'
                         f'<p class="muted">{e(x["domain"])} · {e(x["source"])} · {_num(x["n_chars"])} chars</p>'
                         + (f'<pre class="text">{e(x["text"])}</pre>' if x["text"] else "") + '</section>')
    if d["kept"]:
        k = d["kept"]
        rows = [[e(c), e(v)] for c, v in k.items() if c != "text"]
        parts.append(f'<section class="card"><h2 class="outcome kept">Kept</h2>'
                     f'{_table(["column", "value"], rows, "kv", numeric_from=9)}<pre class="text">{e(k.get("text"))}</pre>'
                     '</section>')
    dup = d["duplicates"]
    if dup and (dup["dropped_members"] or dup["kept_member"] != doc_id):
        members = "".join(f'<li><a href="/runs/{rid}/docs/{quote(x["id"], safe="")}">{e(x["id"])}</a> '
                          f'({e(x["stage"])})</li>' for x in dup["dropped_members"])
        parts.append(f'<section class="card"><h2>Duplicate cluster</h2><p>Kept member: <a href="/runs/{rid}/docs/'
                     f'{quote(dup["kept_member"], safe="")}">{e(dup["kept_member"])}</a></p>'
                     f'<p>Dropped as its duplicates:</p><ul>{members}</ul></section>')
    return page(request, doc_id, "".join(parts))


@router.get("/compare")
def compare_page(request: Request, a: str = "", b: str = "", offset: int = 0) -> HTMLResponse:
    if _guard(request) is None:
        return login_page(request)
    reg = request.app.state.registry
    offset = max(0, min(offset, 10_000_000))
    try:
        pa, pb = reg.path(a), reg.path(b)
        c = views.compare(pa, pb, _limits(request), offset, 50, _opener(request))
    except (HTTPException, CurationError, ValueError) as exc:
        return _error_page(request, exc)

    def cell(side: dict[str, int] | None) -> str:
        return "–" if side is None else f'{side["out"]:,} of {side["in"]:,}'

    funnel = [[e(f["stage"]), cell(f["a"]), cell(f["b"])] for f in c["funnel"]]
    domains = [[e(d["domain"]), _num(d["tokens_a"]), _num(d["tokens_b"]),
                f'<span class="{"pos" if d["delta"] > 0 else "neg" if d["delta"] < 0 else ""}">{d["delta"]:+,}</span>']
               for d in c["domains"]]
    changed = [[f'<a href="/runs/{quote(a, safe="")}/docs/{quote(x["id"], safe="")}">{e(x["id"])}</a>', e(x["a"]),
                e(x["b"])] for x in c["changed"]]
    q = {"a": a, "b": b}
    nav = []
    if offset > 0:
        nav.append(f'<a href="?{urlencode({**q, "offset": max(0, offset - 50)})}">previous</a>')
    if offset + 50 < c["changed_total"]:
        nav.append(f'<a href="?{urlencode({**q, "offset": offset + 50})}">next</a>')
    body = (f'<section class="card"><h2>Funnel: kept of in, per stage</h2>'
            f'{_table(["stage", f"A: {a}", f"B: {b}"], funnel)}</section>'
            f'<section class="card"><h2>Tokens per domain</h2>'
            f'{_table(["domain", "A", "B", "B − A"], domains)}</section>'
            f'<section class="card"><h2>{c["changed_total"]:,} documents with a different decision</h2>'
            f'{_table(["document", f"in A ({a})", f"in B ({b})"], changed, numeric_from=9)}'
            f'<p>{" · ".join(nav)}</p></section>')
    return page(request, f"compare {a} and {b}", body)
