"""Read-side queries of the service: run detail, drops, one document's path, what-if, compare, SQL.

Every query on run data goes through ``curation.stats.open_run`` (the sandboxed, locked DuckDB
connection confined to that run) or the service's pool of such connections (``opener``). Values from
requests travel only as bound parameters; the only identifiers spliced into SQL are column names taken
from the run's own manifest after checking them against a fixed pattern (or the heuristic filters' metric names,
``curation/stages/filters/metrics.py``), quoted as identifiers.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from curation.errors import ConfigError
from curation.query_sandbox import Limits
from curation.stages.filters import metrics as filter_metrics
from curation.stats import _ident, execute_select, open_run, view_files

#: Opens a run's views on a sandboxed connection: ``curation.stats.open_run`` (a new sandbox each time) or the
#: service's ``SandboxPool.open_run`` (an open one, reused).
RunOpener = Callable[[Path, Limits], AbstractContextManager[tuple[duckdb.DuckDBPyConnection, dict[str, Any]]]]

#: Columns a what-if may move a threshold on: classifier scores, language score, length, LM scores.
WHATIF_COLUMN = re.compile(r"^(score_[A-Za-z0-9_]+|lang_score|n_chars|bpc_[A-Za-z0-9_]+|ps_[A-Za-z0-9_]+)$")
_NUMERIC = {"float", "double", "int64", "int32", "uint64", "float32", "float64", "halffloat"}
TEXT_PREVIEW = 2000  # characters of a document's text a listing returns


def jsonable(v: Any) -> Any:
    """A DuckDB value as JSON: NaN/inf become null, decimals floats, anything else odd a string."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    return str(v)


def _details(raw: Any) -> Any:
    """The decision's details JSON parsed (a stage wrote it; keep the raw text if it is not JSON)."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return raw


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    rel = con.execute(sql, params or [])
    cols = [d[0] for d in rel.description]
    return [{c: jsonable(v) for c, v in zip(cols, r)} for r in rel.fetchall()]


def numeric_columns(manifest: dict[str, Any]) -> list[str]:
    """The run's columns a what-if can preview (by name pattern, or a heuristic filter's metric, and numeric type)."""
    heuristic = _metric_columns(manifest)
    return [f["name"] for f in manifest.get("schema", [])
            if (WHATIF_COLUMN.match(name := str(f.get("name", ""))) or name in heuristic)
            and str(f.get("type")) in _NUMERIC]


def _metric_columns(manifest: dict[str, Any]) -> dict[str, filter_metrics.WhatIfMetric]:
    """The metric columns the run's heuristic filters wrote (``metrics: true``; names from their stage config)."""
    return filter_metrics.whatif_metrics((manifest.get("config") or {}).get("stages") or [])


def _stage_configs(manifest: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [{k: v for k, v in s.items() if k != "stage"} for s in (manifest.get("config") or {}).get("stages", [])
            if isinstance(s, dict) and s.get("stage") == name]


# -- run detail -------------------------------------------------------------------------------------

def run_detail(run: Path, limits: Limits, opener: RunOpener = open_run) -> dict[str, Any]:
    """Manifest summary, funnel, drop reasons, domains, quarantine and a histogram per numeric column."""
    with opener(run, limits) as (con, m):
        reasons = _rows(con, "SELECT stage, reason, count(*) AS docs, sum(n_chars) AS chars FROM decisions "
                             "GROUP BY ALL ORDER BY docs DESC, stage, reason")
        domains = _rows(con, "SELECT domain, count(*) AS docs, sum(n_chars) AS chars, round(avg(n_chars)) AS "
                             "mean_chars FROM docs GROUP BY ALL ORDER BY docs DESC, domain")
        quarantined = con.execute("SELECT count(*) FROM quarantine").fetchone()[0]
        hist = {c: histogram(con, m, c) for c in numeric_columns(m)}
    tokens = {d: v.get("tokens", 0) for d, v in m.get("domains", {}).items()}
    for d in domains:
        d["tokens"] = tokens.get(d["domain"], 0)
    return {
        "id": Path(str(run)).name, "name": m.get("name"), "fingerprint": m.get("fingerprint"),
        "created_unix": m.get("created_unix"), "wall_seconds": m.get("wall_seconds"), "totals": m.get("totals"),
        "token_counter": m.get("token_counter"), "shards": len(m.get("shards", [])),
        "shard_bytes": sum(int(s.get("bytes", 0)) for s in m.get("shards", [])),
        "funnel": [{"stage": s["name"], "in": s["in"], "out": s["out"], "dropped": sum(s["dropped"].values())}
                   for s in m.get("stages", [])],
        "reasons": reasons, "domains": domains, "quarantined_lines": int(quarantined),
        "schema": m.get("schema"), "config": m.get("config"), "histograms": hist,
        # per dedup stage with `against`: what each earlier run's documents removed (untrusted, shown as text)
        "corpus": m.get("corpus"),
    }


# -- what-if ----------------------------------------------------------------------------------------

#: ``side`` of a pooled dropped document: 0 comes back in either direction; 1 only with keep_above (a minimum
#: dropped it), 2 only with keep_below (a maximum did). Only a metric thresholded from both sides (Gopher's word
#: count and mean word length) tags its drops: moving its minimum cannot bring back what its maximum dropped.
ANY_SIDE, ABOVE_ONLY, BELOW_ONLY = 0, 1, 2


def _pool(manifest: dict[str, Any], column: str) -> tuple[str, list[Any], str]:
    """SQL of the what-if pool of ``column`` (domain, n_chars, v, kept, side) with its parameters, and which
    dropped documents it includes (in words). Kept documents bring their column value; dropped ones
    only where the stage that thresholds this column recorded the value in its decision."""
    col = _ident(column)
    kept = (f"SELECT domain, n_chars, CAST({col} AS DOUBLE) AS v, 1 AS kept, {ANY_SIDE} AS side FROM docs "
            f"WHERE {col} IS NOT NULL")
    # select_v1 records {score, threshold, column} for every document it drops.
    parts = [("SELECT domain, n_chars, TRY_CAST(json_extract_string(details, '$.score') AS DOUBLE), 0, 0 "
              "FROM decisions WHERE reason = 'below_threshold' AND json_extract_string(details, '$.column') = ?",
              [column])]
    source = "documents select_v1 dropped on this column (their score is in the decision details)"
    heuristic = _metric_columns(manifest).get(column)
    if heuristic is not None:
        parts, source = _metric_parts(heuristic)
    elif column == "lang_score":
        langs = sorted({lg for c in _stage_configs(manifest, "language_id_v1") for lg in c.get("languages", [])})
        # Only a wanted language below min_score comes back; another language stays dropped at any score.
        parts.append(("SELECT domain, n_chars, TRY_CAST(json_extract_string(details, '$.score') AS DOUBLE), 0, 0 "
                      "FROM decisions WHERE stage = 'language_id_v1' AND list_contains(?, "
                      "json_extract_string(details, '$.lang'))", [langs]))
        source = (f"documents language_id_v1 dropped in a wanted language ({', '.join(langs) or 'none'}) "
                  "below min_score (score in the decision details)")
    elif column == "n_chars":
        parts.append(("SELECT domain, n_chars, CAST(n_chars AS DOUBLE), 0, 0 FROM decisions "
                      "WHERE stage = 'text_length_v1'", []))
        source = "documents text_length_v1 dropped (their n_chars)"
    sql = " UNION ALL ".join([kept] + [p[0] for p in parts])
    params = [x for p in parts for x in p[1]]
    return f"SELECT * FROM ({sql}) WHERE v IS NOT NULL AND isfinite(v)", params, source


def _metric_parts(w: filter_metrics.WhatIfMetric) -> tuple[list[tuple[str, list[Any]]], str]:
    """The pool's dropped documents of a heuristic filter's metric: the stage's drops by the metric's rules, whose
    details hold its value. A drop by another rule of the stage has no value here and stays dropped."""
    two_sided = len({r.keep for r in w.metric.rules}) > 1
    parts = []
    for r in w.metric.rules:
        side = (ABOVE_ONLY if r.keep == "above" else BELOW_ONLY) if two_sided else ANY_SIDE
        sql = (f"SELECT domain, n_chars, TRY_CAST(json_extract_string(details, ?) AS DOUBLE), 0, {side} "
               "FROM decisions WHERE stage = ? AND reason = ?")
        parts.append((sql, [f"$.{w.metric.detail}", w.stage, r.reason]))
    reasons = ", ".join(r.reason for r in w.metric.rules)
    return parts, (f"documents {w.stage} dropped by the rule on this value ({reasons}; the value in the decision "
                   "details)" + ("; keep_above brings back only its minimum's drops, keep_below its maximum's"
                                 if two_sided else ""))


def default_direction(manifest: dict[str, Any], column: str) -> str:
    """keep_below for a heuristic filter's metric whose (first) rule is a maximum, else keep_above."""
    w = _metric_columns(manifest).get(column)
    rule = _first_rule_on(w) if w is not None else None
    return "keep_below" if rule is not None and rule.keep == "below" else "keep_above"


def _first_rule_on(w: filter_metrics.WhatIfMetric) -> filter_metrics.Rule | None:
    return next((r for r in w.metric.rules if filter_metrics.threshold(w.stage, w.config, r) is not None), None)


def _check_column(manifest: dict[str, Any], column: Any) -> str:
    cols = numeric_columns(manifest)
    if column not in cols:
        raise ConfigError(f"column {column!r} cannot be previewed in this run; numeric score columns here: "
                          f"{', '.join(cols) or 'none'}")
    return column


def _current_threshold(manifest: dict[str, Any], column: str) -> float | None:
    """The threshold the run's config applied to ``column``, when a stage with a fixed one did."""
    w = _metric_columns(manifest).get(column)
    if w is not None:  # its first rule that is on: a two-sided metric's minimum (the page starts at keep_above)
        rule = _first_rule_on(w)
        return None if rule is None else filter_metrics.threshold(w.stage, w.config, rule)
    for c in _stage_configs(manifest, "select_v1"):
        if c.get("column") == column and c.get("threshold") is not None:
            return c["threshold"]
    if column == "lang_score":
        return next((c.get("min_score") for c in _stage_configs(manifest, "language_id_v1")), None)
    if column == "n_chars":
        return next((c.get("min_chars") for c in _stage_configs(manifest, "text_length_v1")), None)
    return None


def histogram(con: duckdb.DuckDBPyConnection, manifest: dict[str, Any], column: str,
              bins: int = 20) -> dict[str, Any]:
    """Pool documents per bin between the pool's min and max, kept and dropped apart."""
    sql, params, _ = _pool(manifest, column)
    lo, hi = con.execute(f"SELECT min(v), max(v) FROM ({sql})", params).fetchone()
    if lo is None:
        return {"column": column, "min": None, "max": None, "bins": []}
    width = (hi - lo) / bins if hi > lo else 1.0
    rows = con.execute(
        f"SELECT LEAST(CAST(FLOOR((v - ?) / ?) AS INTEGER), ?) AS b, count(*) AS n, sum(kept) AS k "
        f"FROM ({sql}) GROUP BY ALL ORDER BY b", [lo, width, bins - 1] + params).fetchall()
    counts = {int(b): (int(n), int(k)) for b, n, k in rows}
    return {"column": column, "min": lo, "max": hi,
            "bins": [{"lo": lo + i * width, "hi": lo + (i + 1) * width, "docs": counts.get(i, (0, 0))[0],
                      "kept": counts.get(i, (0, 0))[1]} for i in range(bins)]}


def whatif(run: Path, limits: Limits, column: Any, threshold: Any, direction: Any,
           opener: RunOpener = open_run) -> dict[str, Any]:
    """Kept documents, characters and tokens per domain if ``column``'s threshold moved."""
    _check_move(threshold, direction)
    return whatif_at(whatif_pool(run, limits, column, opener), threshold, direction)


def _check_move(threshold: Any, direction: Any) -> None:
    if direction not in ("keep_above", "keep_below"):
        raise ConfigError(f"direction must be keep_above (keep value >= threshold) or keep_below (keep value "
                          f"<= threshold), got {direction!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise ConfigError(f"threshold must be a finite number, got {threshold!r}")


def whatif_pool(run: Path, limits: Limits, column: Any, opener: RunOpener = open_run) -> dict[str, Any]:
    """Everything a what-if on ``column`` needs, read once: the pool's (domain, n_chars, value, kept) as arrays,
    kept documents per domain, and the counts the answer reports. A slider then moves in memory
    (``whatif_at``), with no query per position."""
    with opener(run, limits) as (con, m):
        _check_column(m, column)
        sql, params, source = _pool(m, column)
        cols = con.execute(f"SELECT domain, n_chars, v, kept, side FROM ({sql})", params).fetchnumpy()
        now = {d: (int(n), int(c)) for d, n, c in
               con.execute("SELECT domain, count(*), sum(n_chars) FROM docs GROUP BY ALL").fetchall()}
        kept_null = con.execute(f"SELECT count(*) FROM docs WHERE {_ident(column)} IS NULL").fetchone()[0]
        dropped_total = con.execute("SELECT count(*) FROM decisions").fetchone()[0]
    domain = np.asarray(cols["domain"], dtype=object)
    n_chars = np.nan_to_num(np.asarray(cols["n_chars"], dtype=np.float64)).astype(np.int64)
    v, kept = np.asarray(cols["v"], dtype=np.float64), np.asarray(cols["kept"], dtype=np.int64) == 1
    side = np.asarray(cols["side"], dtype=np.int64)
    return {"column": column, "source": source, "sides": _sorted_sides(domain, n_chars, v, kept, side),
            "now": now, "kept_null": int(kept_null), "dropped_total": int(dropped_total),
            "manifest": {"domains": m.get("domains", {}), "config": m.get("config"), "schema": m.get("schema")}}


Side = tuple[np.ndarray, np.ndarray]


def _sorted_sides(domain: np.ndarray, n_chars: np.ndarray, v: np.ndarray, kept: np.ndarray,
                  side: np.ndarray | None = None) -> dict[Any, tuple[Side, Side, Side]]:
    """Per domain (first-seen order), kept and dropped pool documents apart: their values sorted and the running
    sum of their characters in that order (a leading 0). Any threshold is then two binary searches per side.

    The dropped documents come twice, those that can come back with keep_above and with keep_below (``side``);
    without a tagged one (every column but a two-sided metric) both are the same arrays.
    """
    side = np.zeros(len(v), dtype=np.int64) if side is None else side
    tagged = bool((side != ANY_SIDE).any())
    out = {}
    for dom in dict.fromkeys(domain.tolist()):
        sel = domain == dom
        masks = [kept & sel, ~kept & sel & (side != BELOW_ONLY)]
        if tagged:
            masks.append(~kept & sel & (side != ABOVE_ONLY))
        sides = []
        for mask in masks:
            order = np.argsort(v[mask], kind="stable")
            sides.append((v[mask][order], np.concatenate(([0], np.cumsum(n_chars[mask][order])))))
        out[dom] = (sides[0], sides[1], sides[-1])
    return out


def _beyond(side: tuple[np.ndarray, np.ndarray], threshold: float, above: bool) -> tuple[int, int]:
    """(documents, characters) of one sorted side with value >= threshold (``above``) or <= threshold."""
    vals, chars = side
    if above:
        i = int(np.searchsorted(vals, threshold, side="left"))
        return len(vals) - i, int(chars[-1] - chars[i])
    i = int(np.searchsorted(vals, threshold, side="right"))
    return i, int(chars[i])


def whatif_at(p: dict[str, Any], threshold: Any, direction: Any) -> dict[str, Any]:
    """The what-if answer at ``threshold`` from a pool ``whatif_pool`` read."""
    _check_move(threshold, direction)
    column, source, m, now = p["column"], p["source"], p["manifest"], p["now"]
    above = direction == "keep_above"
    rows = []
    for dom, (kept_side, dropped_above, dropped_below) in p["sides"].items():  # the pool's domains, first-seen order
        dropped_side = dropped_above if above else dropped_below
        pass_d, pass_c = _beyond(kept_side, threshold, above)
        gain_d, gain_c = _beyond(dropped_side, threshold, above)
        n_kept, n_dropped = len(kept_side[0]), len(dropped_side[0])
        # Lost: kept documents that no longer pass; gained: dropped ones that now pass.
        rows.append((dom, n_kept, n_dropped, n_kept - pass_d, int(kept_side[1][-1]) - pass_c, gain_d, gain_c))
    kept_null, dropped_total = p["kept_null"], p["dropped_total"]
    pool = {r[0]: r[1:] for r in rows}
    manifest_domains = m.get("domains", {})
    out, tot = [], {k: 0 for k in ("kept_docs", "kept_chars", "kept_tokens", "new_docs", "new_chars",
                                    "new_tokens")}
    dropped_in_pool = 0
    all_chars = sum(c for _, c in now.values())
    run_per_char = sum(int(v.get("tokens", 0)) for v in manifest_domains.values()) / all_chars if all_chars else 0.0
    for dom in sorted(set(now) | set(pool)):
        docs, chars = now.get(dom, (0, 0))
        tokens = int(manifest_domains.get(dom, {}).get("tokens", 0))
        _, dropped_v, lost_d, lost_c, gain_d, gain_c = (int(x or 0) for x in pool.get(dom, (0,) * 6))
        dropped_in_pool += dropped_v
        # Tokens were counted per domain, not per document: moved documents get the domain's tokens/char.
        per_char = tokens / chars if chars else run_per_char  # a domain that kept nothing: the run's ratio
        new_docs, new_chars = docs - lost_d + gain_d, chars - lost_c + gain_c
        new_tokens = round(tokens + (gain_c - lost_c) * per_char)
        row = {"domain": dom, "kept_docs": docs, "kept_chars": chars, "kept_tokens": tokens, "new_docs": new_docs,
               "new_chars": new_chars, "new_tokens": new_tokens, "lost_docs": lost_d, "gained_docs": gain_d}
        out.append(row)
        for k in tot:
            tot[k] += row[k]
    current = _current_threshold(m, column)
    return {
        "column": column, "threshold": threshold, "direction": direction,
        "current_threshold": current,
        "domains": out, "totals": tot,
        "previewed": {"kept_with_value": sum(int(p[0] or 0) for p in pool.values()),
                      "dropped_with_value": dropped_in_pool, "dropped_source": source},
        "not_previewed": {
            "kept_without_value": int(kept_null),
            "dropped_elsewhere": int(dropped_total) - dropped_in_pool,
            "notes": [
                "kept documents without a value in this column keep their fate",
                "documents dropped by other stages (or by this one without the value recorded) stay dropped",
                "a document that comes back was never seen by the stages after the one that dropped it "
                "(dedup, quality filters): the gain is an upper bound",
                "tokens of documents that move are estimated from their domain's tokens per character",
            ]},
    }


# -- drops and documents ----------------------------------------------------------------------------

def _filters(stage: str | None, reason: str | None, domain: str | None, source: str | None) -> tuple[str, list[Any]]:
    where, params = [], []
    for col, val in (("stage", stage), ("reason", reason), ("domain", domain), ("source", source)):
        if val is not None:
            where.append(f"{col} = ?")
            params.append(val)
    return (" WHERE " + " AND ".join(where)) if where else "", params


def drop_order(run: Path, limits: Limits, stage: str | None, reason: str | None, domain: str | None,
               source: str | None, opener: RunOpener = open_run) -> dict[str, Any]:
    """What every page of one drops listing needs, read once: the counts per stage and reason under the
    domain/source filter, and for every matching dropped document in page order (stage, reason, id) its
    (stage, reason, id, file, row in file). A page is then a slice of it plus a read of those rows from
    their files (``drops``), with no sort and no scan of the other files per page."""
    where, params = _filters(None, None, domain, source)
    swhere, sparams = _filters(stage, reason, domain, source)
    files = view_files(run, "decisions")  # what the decisions view reads, in its order
    with opener(run, limits) as (con, _):
        reasons = _rows(con, f"SELECT stage, reason, count(*) AS docs, sum(n_chars) AS chars FROM decisions{where} "
                             "GROUP BY ALL ORDER BY docs DESC, stage, reason", params)
        rows = con.execute("SELECT stage, reason, id, filename, file_row_number FROM read_parquet(?, filename=true, "
                           f"file_row_number=true, union_by_name=true){swhere} ORDER BY stage, reason, id",
                           [files] + sparams).fetchall() if files else []
    index = {f: i for i, f in enumerate(files)}  # a file as its position: one string per file, not per row
    return {"reasons": reasons, "files": files, "keys": [(st, rs, i, index[f], n) for st, rs, i, f, n in rows]}


def drops(run: Path, limits: Limits, stage: str | None, reason: str | None, domain: str | None,
          source: str | None, offset: int, limit: int, opener: RunOpener = open_run,
          order: dict[str, Any] | None = None) -> dict[str, Any]:
    """Counts per stage and reason (with the domain/source filter), and a page of dropped documents (ordered by
    stage, reason, id). ``order`` is this filter's ``drop_order`` when the caller keeps it (the service caches
    it per run and filter); without it, it is read here."""
    if order is None:
        order = drop_order(run, limits, stage, reason, domain, source, opener)
    reasons, page_keys = order["reasons"], order["keys"][offset:offset + limit]
    found: dict[tuple[int, int], dict[str, Any]] = {}
    if page_keys:
        files = sorted({k[3] for k in page_keys})
        wanted = sorted({k[4] for k in page_keys})
        index = {order["files"][f]: f for f in files}
        # One scan of just the page's files, keeping their rows at the page's row numbers (a row number of one
        # file may select rows of another too: those are dropped below, by (file, row)).
        with opener(run, limits) as (con, _):
            rows = _rows(con, "SELECT filename AS _file, file_row_number AS _row, id, stage, reason, details, domain, "
                              f"source, url, n_chars, left(text, {TEXT_PREVIEW}) AS text FROM read_parquet(?, "
                              "filename=true, file_row_number=true, union_by_name=true) WHERE file_row_number IN "
                              f"({', '.join('?' * len(wanted))})", [[order["files"][f] for f in files]] + wanted)
        for r in rows:
            found[(index[r.pop("_file")], r.pop("_row"))] = r
    samples = [found[(k[3], k[4])] for k in page_keys if (k[3], k[4]) in found]
    total = sum(r["docs"] for r in reasons if stage in (None, r["stage"]) and reason in (None, r["reason"]))
    for smp in samples:
        smp["details"] = _details(smp["details"])
    return {"reasons": reasons, "total": int(total), "offset": offset, "limit": limit, "samples": samples,
            "filters": {"stage": stage, "reason": reason, "domain": domain, "source": source}}


#: Members of a duplicate cluster a document's answer lists (``dropped_total`` counts them all).
MAX_CLUSTER_MEMBERS = 500
#: The stage whose groups the answer's ``semantic`` shows (cosine, k-means cluster); ``duplicates`` shows the others'.
SEMANTIC = "semantic_dedup_v1"


def document(run: Path, limits: Limits, doc_id: str, opener: RunOpener = open_run) -> dict[str, Any]:
    """One document's path through the run: the stage that dropped it (with details), or its kept row;
    its duplicate cluster of exact/near dedup (the kept member and the members dropped as its duplicates);
    and its semantic-dedup group (``semantic``, from ``semantic_group``)."""
    with opener(run, limits) as (con, m):
        dropped = _rows(con, "SELECT stage, reason, details, domain, source, url, n_chars, text FROM decisions "
                             "WHERE id = ?", [doc_id])
        kept = _rows(con, "SELECT * FROM docs WHERE id = ?", [doc_id])
        for d in dropped:
            d["details"] = _details(d["details"])
        # A semantic drop's keeper is its group's, shown with cosines in ``semantic``: listing the group here too
        # would show it twice, and mix it into a near-dedup keeper's cluster without its cosines.
        kept_member = next((d["details"].get("dup_of") for d in dropped if isinstance(d["details"], dict)
                            and d["details"].get("dup_of") and d["stage"] != SEMANTIC), None)
        if kept and not kept_member:
            # near_dedup_v1 sets dup_cluster to the keeper's id on every member (its own id when alone).
            kept_member = kept[0].get("dup_cluster") or None
        # A keeper that a later stage dropped (semantic dedup, a filter) has no dup_of of its own: its cluster's
        # drops still name it, so look for them under its own id.
        keeper = kept_member if kept_member is not None else doc_id
        # A cluster can hold every copy of a boilerplate page: the first MAX_CLUSTER_MEMBERS by id, and the count.
        where = "json_extract_string(details, '$.dup_of') = ? AND stage <> ?"
        members = _rows(con, f"SELECT id, stage, reason FROM decisions WHERE {where} ORDER BY id LIMIT ?",
                        [keeper, SEMANTIC, MAX_CLUSTER_MEMBERS])
        if kept_member is None and members:
            kept_member = doc_id
        total = len(members) if len(members) < MAX_CLUSTER_MEMBERS else con.execute(
            f"SELECT count(*) FROM decisions WHERE {where}", [keeper, SEMANTIC]).fetchone()[0]
        semantic = semantic_group(con, doc_id, dropped)
    if not dropped and not kept:
        return {"id": doc_id, "outcome": "unknown", "dropped": None, "kept": None, "duplicates": None,
                "semantic": None}
    stage_index = {s["name"]: s["index"] for s in m.get("stages", [])}
    return {
        "id": doc_id, "outcome": "kept" if kept else "dropped",
        "dropped": sorted(dropped, key=lambda d: stage_index.get(d["stage"], 1 << 30)) or None,
        "kept": kept[0] if kept else None,
        "duplicates": None if kept_member is None else {"kept_member": kept_member, "dropped_members": members,
                                                         "dropped_total": total},
        "semantic": semantic,
    }


def semantic_group(con: duckdb.DuckDBPyConnection, doc_id: str,
                   dropped: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The semantic_dedup_v1 group of ``doc_id``: its kept member (the document itself when semantic dedup kept
    it), the k-means cluster and group size, this document's cosine to the kept member (None for the kept one),
    and the members dropped as the kept member's semantic duplicates with their cosine to it, closest first
    (at most MAX_CLUSTER_MEMBERS; ``dropped_total`` counts all). None when semantic dedup grouped it with nothing.

    The kept member has no decision of its own: its cluster and group size are those its dropped members
    recorded (one group lies in one cluster and every member records the group's size)."""
    own = next((d["details"] for d in dropped if d["stage"] == SEMANTIC and isinstance(d["details"], dict)), None)
    keeper = own.get("dup_of") if own is not None else doc_id
    if not isinstance(keeper, str):
        return None
    where = "stage = ? AND json_extract_string(details, '$.dup_of') = ?"
    members = _rows(con, "SELECT id, TRY_CAST(json_extract_string(details, '$.cosine') AS DOUBLE) AS cosine, "
                         "TRY_CAST(json_extract_string(details, '$.cluster') AS BIGINT) AS cluster, "
                         "TRY_CAST(json_extract_string(details, '$.group_size') AS BIGINT) AS group_size "
                         f"FROM decisions WHERE {where} ORDER BY cosine DESC NULLS LAST, id LIMIT ?",
                    [SEMANTIC, keeper, MAX_CLUSTER_MEMBERS])
    if not members and own is None:
        return None
    total = len(members) if len(members) < MAX_CLUSTER_MEMBERS else con.execute(
        f"SELECT count(*) FROM decisions WHERE {where}", [SEMANTIC, keeper]).fetchone()[0]
    first = own if own is not None else members[0]
    return {"kept_member": keeper, "cluster": first.get("cluster"), "group_size": first.get("group_size"),
            "cosine": None if own is None else own.get("cosine"),
            "dropped_members": [{"id": r["id"], "cosine": r["cosine"]} for r in members],
            "dropped_total": int(total)}


# -- compare ----------------------------------------------------------------------------------------

_FATES = ("SELECT id, 'kept' AS fate FROM docs UNION ALL "
          "SELECT id, 'dropped: ' || stage || '/' || reason FROM decisions")


def _fates(run: Path, limits: Limits, opener: RunOpener = open_run) -> tuple[dict[str, str], dict[str, Any]]:
    with opener(run, limits) as (con, m):
        return dict(con.execute(_FATES).fetchall()), m


def compare(a: Path, b: Path, limits: Limits, offset: int, limit: int,
            opener: RunOpener = open_run) -> dict[str, Any]:
    """Funnels side by side, documents whose decision changed (paged, by id), per-domain token deltas."""
    fa, ma = _fates(a, limits, opener)
    fb, mb = _fates(b, limits, opener)
    changed = sorted(i for i in set(fa) | set(fb) if fa.get(i) != fb.get(i))
    fun_a = {s["name"]: s for s in ma.get("stages", [])}
    fun_b = {s["name"]: s for s in mb.get("stages", [])}
    names = list(fun_a) + [n for n in fun_b if n not in fun_a]

    def side(s: dict[str, Any] | None) -> dict[str, int] | None:
        return None if s is None else {"in": s["in"], "out": s["out"], "dropped": sum(s["dropped"].values())}

    da, db = ma.get("domains", {}), mb.get("domains", {})
    domains = []
    for d in sorted(set(da) | set(db)):
        ta, tb = int(da.get(d, {}).get("tokens", 0)), int(db.get(d, {}).get("tokens", 0))
        domains.append({"domain": d, "tokens_a": ta, "tokens_b": tb, "delta": tb - ta,
                        "docs_a": int(da.get(d, {}).get("docs", 0)), "docs_b": int(db.get(d, {}).get("docs", 0))})
    return {
        "a": Path(str(a)).name, "b": Path(str(b)).name,
        "funnel": [{"stage": n, "a": side(fun_a.get(n)), "b": side(fun_b.get(n))} for n in names],
        "changed_total": len(changed), "offset": offset, "limit": limit,
        "changed": [{"id": i, "a": fa.get(i, "absent"), "b": fb.get(i, "absent")}
                    for i in changed[offset:offset + limit]],
        "domains": domains,
    }


# -- SQL --------------------------------------------------------------------------------------------

def run_query(run: Path, limits: Limits, sql: str, offset: int, limit: int,
              max_rows: int, opener: RunOpener = open_run, max_bytes: int = 32 << 20) -> dict[str, Any]:
    """One read-only SELECT over the run's views, rows ``offset .. offset+limit`` (at most ``max_rows``
    past the start). The statement runs as sent (never wrapped in more SQL); paging skips rows.

    The answer is bounded in bytes as well as rows (``max_bytes`` of JSON-encoded cells): rows are fetched in
    small chunks and the query is refused, naming the row, as soon as the answer passes the bound, so a few rows
    of whole documents cannot build an answer of hundreds of megabytes."""
    if offset + limit > max_rows:
        raise ConfigError(f"offset + limit must be at most {max_rows} (the service's row cap), got "
                          f"{offset + limit}")
    out: list[list[Any]] = []
    size = 0
    with opener(run, limits) as (con, _):
        rel = execute_select(con, sql)
        cols = [d[0] for d in rel.description]
        if offset:
            rel.fetchmany(offset)
        chunk = 16
        while len(out) <= limit:
            rows = rel.fetchmany(min(chunk, limit + 1 - len(out)))
            if not rows:
                break
            for r in rows:
                cells = [jsonable(v) for v in r]
                size += len(json.dumps(cells, default=str))
                if size > max_bytes:
                    raise ConfigError(f"the answer passed {max_bytes >> 20} MB at row {offset + len(out) + 1}: "
                                      "select fewer or shorter columns (e.g. left(text, 200)) or a smaller limit")
                out.append(cells)
            chunk = min(chunk * 2, 1024)
    more = len(out) > limit
    return {"columns": cols, "rows": out[:limit], "offset": offset, "limit": limit, "more": more}
