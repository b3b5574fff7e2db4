"""The browser pages of ``curate serve``: Jinja2 templates (``templates/``), inline SVG charts, one small script.

Pages: ``/`` (runs, compare form, submit form), ``/runs/{id}`` (funnel, drop reasons, domains,
score histograms with a what-if slider, progress of a live run), ``/runs/{id}/drops`` (dropped
documents of one reason with their details), ``/runs/{id}/docs/{doc_id}`` (one document's path),
``/compare?a=&b=``.

Run files (``progress.json``, the manifest, the shards) are written by whoever can write the run directory, so
every value read from them is untrusted. The templates are rendered with autoescaping on, so every value is
HTML-escaped unless the code marks it safe (none is); the template filters below render numbers only as numbers and
strings only as strings (anything else becomes the placeholder "–", never its raw text), and chart geometry is
computed here from checked numbers. The page runs no inline script (the CSP forbids it): ``static/app.js``
binds only to elements that carry this response's random ``data-bind`` token (``<meta name="curate-bind">``), so
an element smuggled into a page is never picked up by it.
"""

from __future__ import annotations

import json
import math
import posixpath
import secrets
import time
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse

from curation.errors import CurationError
from curation.io.layout import Layout
from curation.io.manifest import ManifestError
from curation.io.runs import progress as run_progress
from curation.query_sandbox import Limits
from curation.service import views
from curation.service.auth import COOKIE, role_of
from curation.service.cache import cached_detail, cached_drops, cached_mixture

router = APIRouter(include_in_schema=False)
TEMPLATES = Path(__file__).resolve().parent / "templates"
PLACEHOLDER = "–"


# -- checked values ---------------------------------------------------------------------------------

def _number(v: Any) -> int | float | None:
    """``v`` when it is a finite int or float (not a bool), else None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return v if isinstance(v, int) or math.isfinite(v) else None


def _n0(v: Any) -> float:
    """A number for chart geometry: ``v`` when it is a finite number, else 0."""
    n = _number(v)
    return 0.0 if n is None else float(n)


def _dicts(v: Any) -> list[dict[str, Any]]:
    """The dicts of ``v`` when it is a list (anything else in it is dropped), else []."""
    return [x for x in v if isinstance(x, dict)] if isinstance(v, list) else []


def _mapping(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def f_num(v: Any) -> str:
    n = _number(v)
    if n is None:
        return PLACEHOLDER
    if isinstance(n, float):
        return f"{n:,.4g}" if abs(n) < 1000 else f"{n:,.0f}"
    return f"{n:,}"


def f_fmt(v: Any, spec: str) -> str:
    """A number formatted with ``spec``; anything else the placeholder."""
    n = _number(v)
    return PLACEHOLDER if n is None else format(n, spec)


def f_bytes(v: Any) -> str:
    n = _number(v)
    if n is None or n < 0:
        return PLACEHOLDER
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return PLACEHOLDER


def f_pct(v: Any) -> str:
    n = _number(v)
    return PLACEHOLDER if n is None else f"{100 * n:.1f}%"


def f_txt(v: Any, default: str = PLACEHOLDER) -> str:
    """A string as itself (the template escapes it); anything else ``default``."""
    return v if isinstance(v, str) else default


def f_txtnum(v: Any) -> str:
    """A string or a number as text; anything else the placeholder."""
    return v if isinstance(v, str) else PLACEHOLDER if _number(v) is None else str(v)


def f_val(v: Any) -> str:
    """Any JSON value as text: a string as itself, null as nothing, anything else as JSON (the template escapes both)."""
    return v if isinstance(v, str) else "" if v is None else json.dumps(v, default=str)


def f_urlq(v: Any) -> str:
    return quote(v if isinstance(v, str) else str(v), safe="")


def f_sign(v: Any) -> str:
    n = _number(v)
    return "" if n is None or n == 0 else "pos" if n > 0 else "neg"


ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True, trim_blocks=True,
                         lstrip_blocks=True)
ENV.filters.update(num=f_num, fmt=f_fmt, bytes=f_bytes, pct=f_pct, txt=f_txt, txtnum=f_txtnum, val=f_val,
                   urlq=f_urlq, sign=f_sign, f1=lambda v: f"{_n0(v):.1f}")


def page(request: Request, template: str, title: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    """Render ``template`` (autoescaped) inside the page frame, with a fresh ``bind`` token for app.js."""
    s = request.app.state.settings
    who = "signed" if not s.open_access and request.cookies.get(COOKIE) else "open" if s.open_access else ""
    html = ENV.get_template(template).render(title=title, who=who, role=role_of(request),
                                             bind=secrets.token_urlsafe(16), **ctx)
    return HTMLResponse(html, status_code=status)


def login_page(request: Request, error: str | None = None, status: int = 401) -> HTMLResponse:
    return page(request, "login.html", "sign in", status, error=error)


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
        return page(request, "error.html", "error", exc.status_code, message=str(exc.detail))
    return page(request, "error.html", "error", 400, message=str(exc))


# -- charts: geometry from checked numbers; the SVG is in templates/macros.html ---------------------

def funnel_chart(funnel: list[dict[str, Any]]) -> dict[str, Any]:
    """Horizontal bars: documents leaving each stage, as a share of those read; labels on the bars."""
    row, width, label_w = 26, 900, 190
    bar_w = width - label_w - 250  # room on the right for "1,265 kept of 1,265 (100.0%)"
    top = max([max(_n0(f.get("in")), _n0(f.get("out"))) for f in funnel] + [0]) or 1
    bars = []
    for i, f in enumerate(funnel):
        fin, fout = _number(f.get("in")), _number(f.get("out"))
        bars.append({"y": i * row, "stage": f.get("stage"), "in": fin, "out": fout,
                     "w_in": bar_w * _n0(fin) / top, "w_out": max(1.0, bar_w * _n0(fout) / top),
                     "kept": f"{100 * _n0(fout) / fin:.1f}%" if fin and fout is not None else PLACEHOLDER})
    return {"bars": bars, "width": width, "h": row * len(funnel) + 4, "label_w": label_w, "bar_w": bar_w}


def histogram_chart(hist: dict[str, Any], threshold: float | None) -> dict[str, Any]:
    """Pool documents per bin: kept (dark) stacked under dropped (light), with the threshold marked."""
    width, height, pad = 560, 160, 30
    bins = _dicts(hist.get("bins"))
    lo, hi = _n0(hist.get("min")), _n0(hist.get("max"))
    top = max([_n0(b.get("docs")) for b in bins] + [0]) or 1
    bw = (width - 2 * pad) / max(1, len(bins))
    out = []
    for i, b in enumerate(bins):
        kept, docs = _n0(b.get("kept")), _n0(b.get("docs"))
        dropped = docs - kept
        out.append({"x": pad + i * bw, "hk": (height - 2 * pad) * kept / top, "hd": (height - 2 * pad) * dropped / top,
                    "lo": _number(b.get("lo")), "hi": _number(b.get("hi")), "kept": _number(b.get("kept")),
                    "dropped": int(dropped) if dropped == int(dropped) else dropped})
    t = threshold if threshold is not None else lo
    return {"bins": out, "width": width, "height": height, "pad": pad, "base": height - pad, "bw": bw, "lo": lo,
            "hi": hi, "top": int(top) if top == int(top) else top, "column": hist.get("column"),
            "thr_x": pad + (width - 2 * pad) * ((t - lo) / (hi - lo) if hi > lo else 0)}


PALETTE = ("#2f6f9f", "#e07b39", "#4f9a5c", "#b3261e", "#8e6bb8", "#8c6d3f", "#d17fb0", "#7a7a7a", "#b5a431",
           "#3fa3b5")


def schedule_chart(skills: list[Any], rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One stacked bar per round: the planned share of each skill, with a legend."""
    row, width, label_w, bar_w = 24, 760, 80, 520
    out = []
    for i, r in enumerate(rounds):
        x, segs, planned = float(label_w), [], _mapping(r.get("planned"))
        for j, s in enumerate(skills):
            w = bar_w * _n0(planned.get(s))
            segs.append({"x": x, "w": w, "skill": s, "share": planned.get(s), "color": PALETTE[j % len(PALETTE)]})
            x += w
        out.append({"y": i * row, "round": r.get("round"), "segs": segs})
    legend_y = row * len(rounds) + 8
    legend = [{"x": label_w + (j % 4) * 170, "y": legend_y + (j // 4) * 18, "skill": s,
               "color": PALETTE[j % len(PALETTE)]} for j, s in enumerate(skills)]
    return {"rounds": out, "legend": legend, "width": width, "label_w": label_w,
            "h": legend_y + 18 * ((len(skills) + 3) // 4) + 4}


def cmr_chart(cmr: dict[str, Any]) -> dict[str, Any]:
    """The fitted R_CMR(T) as a line, the critical ratios it was fitted to as dots; axes labelled with the range."""
    def pts(v: Any) -> list[dict[str, float]]:
        return [{"t": float(p["t"]), "r": float(p["r"])} for p in _dicts(v)
                if _number(p.get("t")) is not None and _number(p.get("r")) is not None]

    curve, grid = pts(cmr.get("curve")), pts(cmr.get("grid"))
    params = _mapping(cmr.get("params"))
    ratios = cmr.get("ratios")
    out = {"pts": curve + grid, "grid": grid, "width": 560, "height": 220, "pad": 44, "unit": cmr.get("token_unit"),
           "eps": cmr.get("eps"), "domain": cmr.get("domain"), "path": cmr.get("path"),
           "a4": params.get("a4"), "s4": params.get("s4"), "b3": params.get("b3"),
           "ratios": ", ".join(f_fmt(r, "g") for r in ratios) if isinstance(ratios, list) else PLACEHOLDER}
    if not out["pts"]:
        return out
    width, height, pad = out["width"], out["height"], out["pad"]
    t_lo, t_hi = min(p["t"] for p in out["pts"]), max(p["t"] for p in out["pts"])
    r_lo, r_hi = min(p["r"] for p in out["pts"]), max(p["r"] for p in out["pts"])
    if r_hi <= r_lo:
        r_lo, r_hi = r_lo - 0.5, r_hi + 0.5

    def xy(p: dict[str, float]) -> tuple[float, float]:
        x = pad + (width - 2 * pad) * ((p["t"] - t_lo) / (t_hi - t_lo) if t_hi > t_lo else 0.5)
        return x, height - pad - (height - 2 * pad) * (p["r"] - r_lo) / (r_hi - r_lo)

    out.update(t_lo=t_lo, t_hi=t_hi, r_lo=r_lo, r_hi=r_hi,
               line=" ".join("{:.1f},{:.1f}".format(*xy(p)) for p in curve),
               dots=[{"x": xy(p)[0], "y": xy(p)[1], "t": p["t"], "r": p["r"]} for p in grid])
    return out


def mixture_view(mx: dict[str, Any]) -> dict[str, Any]:
    """What templates/macros.html's ``mixture`` shows: tokens per domain and skill; the Skill-It schedule and the CMR
    fit when the run holds them."""
    out: dict[str, Any] = {"share_label": "share of tokens" if mx.get("share_of") == "tokens" else "share of chars",
                           "domains": _dicts(mx.get("domains")), "skills": None, "schedule": None, "cmr": None}
    if mx.get("skills") is not None:
        out["skills"] = _dicts(mx.get("skills"))
    sch = mx.get("schedule")
    if isinstance(sch, dict):
        skills = sch.get("skills") if isinstance(sch.get("skills"), list) else []
        rounds = _dicts(sch.get("rounds"))
        out.update(schedule=sch, schedule_skills=[f_txtnum(s) for s in skills],
                   schedule_svg=schedule_chart(skills, rounds),
                   schedule_rows=[{"round": r.get("round"),
                                   "cells": [{"planned": _mapping(r.get("planned")).get(s),
                                              "realised": _mapping(r.get("realised")).get(s),
                                              "chars": _mapping(r.get("chars")).get(s)} for s in skills]}
                                  for r in rounds])
    if isinstance(mx.get("cmr"), dict):
        out["cmr"] = cmr_chart(mx["cmr"])
    return out


# -- pages ------------------------------------------------------------------------------------------

@router.get("/")
def index(request: Request) -> HTMLResponse:
    role = _guard(request)
    if role is None:
        return login_page(request)
    runs = request.app.state.registry.list()
    rows = []
    for r in runs:
        t = _mapping(r.totals)
        doms = [d for d in _mapping(r.domains).values() if isinstance(d, dict)]
        read, out = _number(t.get("docs_read")), _number(t.get("docs_out"))
        created = _number(r.created_unix)
        rows.append({"run_id": r.run_id, "state": r.state, "name": r.name, "docs_read": read, "docs_out": out,
                     "kept": out / read if read and out is not None else None,
                     "tokens": sum(_number(d.get("tokens")) or 0 for d in doms) if doms else None,
                     "shard_bytes": r.shard_bytes or None,
                     "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(created)) if created else PLACEHOLDER,
                     "error": r.error})
    # The compare form preselects the newest run for A and the one before it for B: comparing a run with itself is
    # never the useful default.
    finished = [r.run_id for r in runs if r.state == "finished"]
    return page(request, "index.html", "runs", runs=rows, finished=finished, root=str(request.app.state.registry.root),
                submit=role == "submit")


def _progress(p: dict[str, Any]) -> dict[str, Any]:
    return {**p, "passes": _dicts(p.get("passes"))}


@router.get("/runs/{run_id}")
def run_page(request: Request, run_id: str) -> HTMLResponse:
    if _guard(request) is None:
        return login_page(request)
    reg = request.app.state.registry
    try:
        path = reg.path(run_id)
        state = reg.state(run_id)
        if state != "finished":
            return page(request, "progress.html", run_id, run_id=run_id,
                        p=_progress({**run_progress(path), "state": state}))
        cache = request.app.state.cache
        try:
            mx: dict[str, Any] | None = cached_mixture(cache, path, _limits(request))
            mixture_error = None
        except ManifestError as exc:
            # The mixture reads the manifest typed; the rest of the page shows a hand-edited one's values as found.
            # So a manifest the typed record refuses still gets its page, with the refusal as its Mixture section.
            mx, mixture_error = None, str(exc)
        if mx is not None and mx["schedule"] is not None and not Layout(path).run_json.exists():
            # A skill-ordered run (curate skill-order): shards and a schedule, no funnel or decisions.
            return page(request, "mixture_run.html", f"run {run_id}", mx=mixture_view(mx))
        d = cached_detail(cache, path, _limits(request), _opener(request))
    except (HTTPException, CurationError, ValueError) as exc:
        return _error_page(request, exc)
    domains = _dicts(d.get("domains"))
    reasons = [{**r, "href": f"/runs/{quote(run_id, safe='')}/drops?"
                             + urlencode({"stage": f_txtnum(r.get("stage")), "reason": f_txtnum(r.get("reason"))})}
               for r in _dicts(d.get("reasons"))]
    m = {"config": d.get("config"), "schema": d.get("schema")}
    whatifs = []
    for col, h in _mapping(d.get("histograms")).items():
        if not isinstance(h, dict) or not h.get("bins"):
            continue
        current = _number(views._current_threshold(m, col))
        lo, hi = _n0(h.get("min")), _n0(h.get("max"))
        whatifs.append({"column": col, "hist": histogram_chart(h, current), "current": current, "lo": lo, "hi": hi,
                        "direction": views.default_direction(m, col),  # a heuristic maximum starts at keep_below
                        "start": current if current is not None else lo,
                        "step": (hi - lo) / 200 if hi > lo else 1, "domains": domains,
                        "tot_docs": sum(_number(x.get("docs")) or 0 for x in domains),
                        "tot_tok": sum(_number(x.get("tokens")) or 0 for x in domains)})
    listed = reg.list()
    others = [r.run_id for r in listed if r.state == "finished" and r.run_id != run_id][:10]
    corpus = corpus_view(d.get("corpus"), reg.root, {r.run_id for r in listed})
    return page(request, "run.html", f"run {run_id}", run_id=run_id,
                d={**d, "totals": _mapping(d.get("totals")), "domains": domains},
                funnel=funnel_chart(_dicts(d.get("funnel"))), reasons=reasons,
                mx=None if mx is None else mixture_view(mx), mixture_error=mixture_error, whatifs=whatifs,
                others=others, corpus=corpus)


def corpus_view(corpus: Any, root: Any, known: set[str]) -> list[dict[str, Any]]:
    """One row per dedup stage and earlier run of a run's manifest ``corpus`` (``against``): the stage, the earlier
    run as the config named it, documents that reached the stage, how many the earlier run's documents removed and
    their share. An earlier run directly under this service's runs root that it lists gets a link; the path is only
    compared as text, never opened (the manifest is untrusted)."""
    rows = []
    for entry in _dicts(corpus):
        for a in _dicts(entry.get("against")):
            name = a.get("run")
            href = None
            if isinstance(name, str) and name:
                p = PurePosixPath(posixpath.normpath(name))
                if str(p.parent) == str(root) and p.name in known:
                    href = f"/runs/{quote(p.name, safe='')}"
            rows.append({"stage": entry.get("stage"), "run": name, "href": href, "docs_in": entry.get("docs_in"),
                         "removed": a.get("removed"), "share": a.get("share")})
    return rows


def _nav(q: dict[str, Any], offset: int, step: int, total: Any) -> tuple[str | None, str | None]:
    """The query strings of the previous and next pages (None where there is none)."""
    total = _number(total) or 0
    prev = urlencode({**q, "offset": max(0, offset - step)}) if offset > 0 else None
    nxt = urlencode({**q, "offset": offset + step}) if offset + step < total else None
    return prev, nxt


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
    q = {k: v for k, v in (("stage", stage), ("reason", reason), ("domain", domain)) if v is not None}
    prev, nxt = _nav(q, offset, 20, d.get("total"))
    total = _number(d.get("total")) or 0
    title = " / ".join(x for x in (stage, reason) if x) or "all drops"
    return page(request, "drops.html", f"{run_id}: {title}", run_id=run_id, heading=title, total=d.get("total"),
                first=offset + 1 if total else 0, last=min(offset + 20, total), samples=_dicts(d.get("samples")),
                prev=prev, next=nxt)


def via_note(details: Any) -> str | None:
    """How a near-dedup drop relates to the document kept for it (its ``via`` detail): ``direct`` when
    their Jaccard reaches the stage's threshold, ``chain`` when it is below and the two share a
    cluster only through other members (``clustering: components``); None for other drops."""
    via = details.get("via") if isinstance(details, dict) else None
    if via not in ("direct", "chain"):
        return None
    j, kept = details.get("jaccard"), f_txt(details.get("dup_of"))
    jac = f"Jaccard {j:.4f}" if isinstance(j, (int, float)) and not isinstance(j, bool) else "Jaccard"
    if via == "direct":
        return f"Direct duplicate: {jac} with the kept document {kept}, at or above the stage's threshold."
    return (f"Through a chain: {jac} with the kept document {kept} is below the stage's threshold; the two are in "
            "one cluster only through other documents (clustering: star drops direct duplicates only).")


@router.get("/runs/{run_id}/docs/{doc_id:path}")
def doc_page(request: Request, run_id: str, doc_id: str) -> HTMLResponse:
    if _guard(request) is None:
        return login_page(request)
    reg = request.app.state.registry
    try:
        d = views.document(reg.path(run_id), _limits(request), doc_id, _opener(request))
    except (HTTPException, CurationError, ValueError) as exc:
        return _error_page(request, exc)
    d = {**d, "dropped": [{**x, "via_note": via_note(x.get("details"))} for x in _dicts(d.get("dropped"))],
         "kept": d.get("kept") if isinstance(d.get("kept"), dict) else None}
    dup = d.get("duplicates")
    if isinstance(dup, dict):
        dup = {**dup, "dropped_members": _dicts(dup.get("dropped_members"))}
        total = dup.get("dropped_total")
        dup["more"] = total - len(dup["dropped_members"]) if isinstance(total, int) and not isinstance(total, bool) \
            and total > len(dup["dropped_members"]) else 0
        if not (dup["dropped_members"] or dup.get("kept_member") != doc_id):
            dup = None
    else:
        dup = None
    return page(request, "doc.html", doc_id, 404 if d.get("outcome") == "unknown" else 200, run_id=run_id,
                doc_id=doc_id, d=d, dup=dup, sem=semantic_view(d.get("semantic")), para=paragraph_units(d))


def paragraph_units(d: dict[str, Any]) -> dict[str, Any] | None:
    """The units paragraph_dedup_v1 removed from the document (why a line is gone, and where it stayed): from the kept
    row's ``para_dedup_units`` / ``para_dedup_chars``, or a ``boilerplate_only`` drop's details; None if none."""
    kept = d.get("kept") or {}
    units, chars, total = kept.get("para_dedup_units"), kept.get("para_dedup_chars"), None
    for x in d.get("dropped") or []:
        det = x.get("details")
        if x.get("stage") == "paragraph_dedup_v1" and isinstance(det, dict):
            units, chars, total = det.get("units"), det.get("removed_chars"), det.get("units_total")
    rows = _dicts(units)
    if not rows:
        return None
    n = _number(total)
    return {"units": rows, "chars": chars, "more": int(n) - len(rows) if n is not None and n > len(rows) else 0}


def semantic_view(sem: Any) -> dict[str, Any] | None:
    """The document page's semantic-dedup group (``views.semantic_group``): its members as dicts and how many
    more the answer left out; None for anything that is not a group."""
    if not isinstance(sem, dict) or not isinstance(sem.get("kept_member"), str):
        return None
    members = _dicts(sem.get("dropped_members"))
    total = _number(sem.get("dropped_total"))
    more = int(total) - len(members) if total is not None and total > len(members) else 0
    return {**sem, "dropped_members": members, "more": more}


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
    prev, nxt = _nav({"a": a, "b": b}, offset, 50, c.get("changed_total"))
    c = {**c, "funnel": _dicts(c.get("funnel")), "domains": _dicts(c.get("domains")),
         "changed": _dicts(c.get("changed"))}
    return page(request, "compare.html", f"compare {a} and {b}", a=a, b=b, c=c, prev=prev, next=nxt)
