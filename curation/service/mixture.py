"""The mixture view of a run: what it would feed a training mixture, and the mixture plans stored with it.

    GET /api/runs/{id}/mixture  ->  {"domains": [...], "skills": [...] | null, "schedule": {...} | null,
                                     "cmr": {...} | null}

* ``domains``: kept documents, characters and tokens per domain (the manifest's counts), with each domain's share
  of the run's tokens (of its characters for skill-ordered output, which has no token counts).
* ``skills``: when the kept documents have a ``skill`` column (``skill_tag_v1``): documents and characters per
  skill (a DuckDB query over the shards), tokens *estimated* from each document's domain's tokens per character
  (tokens are counted per domain, not per document), and each skill's share.
* ``schedule``: when the run is skill-ordered output (``curate skill-order``, an ``OrderedRunManifest``): per round
  the planned and the realised mixture and the characters written per skill.
* ``cmr``: when the run directory holds ``mixture/cmr_fit.json`` (the file ``train cmr fit --out``
  writes, copied there): the measured critical ratios per token budget (``grid``) and the fitted power law
  R_CMR(T) = a4 * T**s4 + b3 sampled over the same range.

The manifest is read typed, either kind (``read_any_manifest``): one the typed records refuse is a 400 naming the
file and the field, as a malformed CMR fit is (the run page shows that refusal as its Mixture section).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from curation.errors import ConfigError
from curation.io.manifest import AnyManifest, DomainCount, OrderedRunManifest, RunManifest, read_any_manifest
from curation.query_sandbox import Limits
from curation.stats import open_run

CMR_FIT = "mixture/cmr_fit.json"  # relative to the run directory
CMR_KEYS = ("ratios", "cmr", "eps", "token_unit", "t_max", "grid")
CURVE_POINTS = 25


def _share(part: float, total: float) -> float | None:
    return part / total if total else None


def _domains(manifest: AnyManifest) -> tuple[list[dict[str, Any]], str]:
    basis = "tokens" if isinstance(manifest, RunManifest) else "chars"  # skill-ordered output counts no tokens
    total = sum(getattr(c, basis) for c in manifest.domains.values())
    rows = [{"domain": d, "docs": c.docs, "chars": c.chars, "tokens": c.tokens if isinstance(c, DomainCount) else None,
             "share": _share(getattr(c, basis), total)} for d, c in manifest.domains.items()]
    rows.sort(key=lambda r: (-(r["share"] or 0), r["domain"]))
    return rows, basis


def _skills(run: Path, limits: Limits, manifest: AnyManifest) -> list[dict[str, Any]] | None:
    # Skill-ordered output records no schema: its per-skill counts are its schedule's.
    if not isinstance(manifest, RunManifest) or not any(f.get("name") == "skill" for f in manifest.schema):
        return None
    with open_run(run, limits) as (con, _):
        rows = con.execute("SELECT skill, domain, count(*), sum(n_chars) FROM docs GROUP BY ALL").fetchall()
    per_char = {d: c.tokens / c.chars for d, c in manifest.domains.items() if c.chars}
    out: dict[str, dict[str, Any]] = {}
    for skill, domain, docs, chars in rows:
        s = out.setdefault(str(skill), {"skill": None if skill is None else str(skill), "docs": 0, "chars": 0,
                                        "tokens_est": 0.0})
        s["docs"] += int(docs)
        s["chars"] += int(chars or 0)
        s["tokens_est"] += int(chars or 0) * per_char.get(domain, 0.0)
    total = sum(s["tokens_est"] for s in out.values())
    basis_total = total or sum(s["chars"] for s in out.values())
    result = []
    for s in out.values():
        s["share"] = _share(s["tokens_est"] if total else s["chars"], basis_total)  # before rounding
        s["tokens_est"] = round(s["tokens_est"])
        result.append(s)
    result.sort(key=lambda r: (-(r["share"] or 0), str(r["skill"])))
    return result


def _schedule(manifest: AnyManifest) -> dict[str, Any] | None:
    if not isinstance(manifest, OrderedRunManifest) or not manifest.rounds:
        return None
    sched = manifest.schedule
    skills: list[str] = []
    for r in manifest.rounds:
        for s in [*r.planned_mixture, *r.chars]:
            if s not in skills:
                skills.append(s)
    return {"method": sched.method, "column": sched.column, "eta": sched.eta, "window": sched.window,
            "alpha": sched.alpha, "chars_per_round": sched.chars_per_round, "skills": skills,
            "rounds": [{"round": r.round, "shard": r.shard,
                        "planned": {s: r.planned_mixture.get(s, 0.0) for s in skills},
                        "realised": {s: r.realised_mixture.get(s, 0.0) for s in skills},
                        "chars": {s: r.chars.get(s, 0) for s in skills}} for r in manifest.rounds]}


def _num(fit: dict[str, Any], key: str, path: Path) -> float:
    v = fit.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(f"{path}: field {key!r} must be a finite number, got {v!r}")
    return float(v)


def _cmr(run: Path) -> dict[str, Any] | None:
    path = run / CMR_FIT
    if not path.exists():
        return None
    try:
        fit = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(fit, dict) or any(k not in fit for k in CMR_KEYS):
        raise ConfigError(f"{path}: a CMR fit needs the fields {', '.join(CMR_KEYS)} (train cmr fit "
                          "writes them)")
    cmr = fit["cmr"]
    if not (isinstance(cmr, list) and len(cmr) == 3 and all(isinstance(x, (int, float)) for x in cmr)):
        raise ConfigError(f"{path}: field 'cmr' must be [a4, s4, b3], got {cmr!r}")
    try:
        grid = [(float(t), float(r)) for t, r in fit["grid"]]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: field 'grid' must be a list of [T, R] pairs ({exc})") from exc
    a4, s4, b3 = (float(x) for x in cmr)
    t_max = _num(fit, "t_max", path)
    t_lo = min((t for t, _ in grid), default=t_max)
    ts = [t_lo + (t_max - t_lo) * i / (CURVE_POINTS - 1) for i in range(CURVE_POINTS)] if t_max > t_lo else [t_max]
    # The same law as training.cmr.cmr_curve (not imported: the service does not need numpy's fit code).
    curve = [{"t": t, "r": a4 * t ** s4 + b3} for t in ts if t > 0]
    return {"path": CMR_FIT, "general": fit.get("general", "general"), "domain": fit.get("domain", "domain"),
            "eps": _num(fit, "eps", path), "token_unit": _num(fit, "token_unit", path), "t_max": t_max,
            "ratios": [float(r) for r in fit["ratios"]], "params": {"a4": a4, "s4": s4, "b3": b3},
            "grid": [{"t": t, "r": r} for t, r in grid], "curve": curve}


def mixture(run: Path, limits: Limits) -> dict[str, Any]:
    """Per-domain and per-skill counts, and the Skill-It schedule and CMR fit when the run holds them."""
    m = read_any_manifest(run)
    domains, basis = _domains(m)
    return {"id": Path(str(run)).name, "share_of": basis, "domains": domains, "skills": _skills(run, limits, m),
            "schedule": _schedule(m), "cmr": _cmr(run)}
