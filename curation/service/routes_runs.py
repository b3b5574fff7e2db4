"""The read API of ``curate serve``: runs, their progress, and what a finished run holds (every route needs the
read role).

    GET  /api/runs                          the runs under the root (RunList)
    GET  /api/runs/{run_id}                 a finished run's summary (RunDetail)
    GET  /api/runs/{run_id}/progress        how far a run got; a submitted run whose directory does not exist yet
                                            is "queued" or "starting" (from the job table)
    POST /api/runs/{run_id}/query           one SELECT over the run's views (QueryResult, or CSV)
    GET  /api/runs/{run_id}/drops           drop reasons and a page of dropped documents
    GET  /api/runs/{run_id}/docs/{doc_id}   one document's path through the run
    POST /api/runs/{run_id}/whatif          kept documents per domain at another threshold of a score column
    GET  /api/runs/{run_id}/mixture         the kept mixture (domains, skills, schedule, CMR fit)
    GET  /api/compare?a=&b=                 two finished runs side by side

Answers of finished runs come from the answer cache as the JSON bytes it keeps (``curation/service/cache.py``) and
are sent as they are; the route's ``response_model`` then only documents them (``curation/service/models.py``).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from curation.io.csv_export import csv_text
from curation.io.runs import progress as run_progress
from curation.service import views
from curation.service.auth import require_read
from curation.service.cache import approx_bytes, decode, detail_json, drops_json, json_response, mixture_json, run_key
from curation.service.deps import (CacheDep, FinishedRun, JobLookupDep, LimitsDep, OpenerDep, RegistryDep,
                                   SettingsDep, require_finished)
from curation.service.models import QueryResult, RunDetail, RunList

router = APIRouter(dependencies=[Depends(require_read)])

#: Job states before the job's run directory exists, and what the progress route answers for them.
BEFORE_RUN = {"validated": "queued", "submitting": "queued", "submitted": "queued", "running": "starting"}


class QueryBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sql: str
    offset: int = 0
    limit: int = 100
    format: Literal["json", "csv"] = "json"


class WhatIfBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    column: str
    threshold: float
    direction: Literal["keep_above", "keep_below"] = "keep_above"


@router.get("/api/runs", response_model=RunList)
def runs(registry: RegistryDep) -> dict[str, Any]:
    return {"root": str(registry.root), "runs": [r.to_json() for r in registry.list()]}


@router.get("/api/runs/{run_id}", response_model=RunDetail)
def run_detail(path: FinishedRun, cache: CacheDep, limits: LimitsDep, opener: OpenerDep) -> Response:
    return json_response(detail_json(cache, path, limits, opener))


@router.get("/api/runs/{run_id}/progress")
def progress(run_id: str, registry: RegistryDep, jobs: JobLookupDep) -> dict[str, Any]:
    try:
        path = registry.path(run_id)
    except HTTPException as exc:
        # A job just submitted has no run directory yet: its run is queued (or starting), not missing.
        row = jobs.latest(run_id) if exc.status_code == 404 else None
        if row is None or row["state"] not in BEFORE_RUN:
            raise
        return {"state": BEFORE_RUN[row["state"]], "job_id": row["job_id"], "job_state": row["state"],
                "tasks_done": 0, "tasks_total": 0, "passes": [], "input_bytes": 0, "input_bytes_done": 0,
                "eta_s": None, "source": "job"}
    try:
        out = run_progress(path)
    except ValueError as exc:
        raise HTTPException(409, detail=str(exc)) from exc
    out["state"] = registry.state(run_id)
    return out


@router.post("/api/runs/{run_id}/query", response_model=QueryResult,
             responses={200: {"content": {"text/csv": {}}, "description": "the rows, as JSON or (format csv) CSV"}})
def query(run_id: str, body: QueryBody, registry: RegistryDep, settings: SettingsDep, cache: CacheDep,
          limits: LimitsDep, opener: OpenerDep) -> Response:
    s = settings
    if body.offset < 0 or not 1 <= body.limit <= s.query_max_rows:
        raise HTTPException(400, detail=f"need offset >= 0 and 1 <= limit <= {s.query_max_rows}")
    path = require_finished(registry, run_id)  # after the body's checks (see deps.finished_run)
    key = ("query", run_key(path), body.sql, body.offset, body.limit)
    out = cache.json(key, lambda: views.run_query(path, limits, body.sql, body.offset, body.limit,
                                                  s.query_max_rows, opener, s.query_max_mb << 20))
    if body.format == "json":
        return json_response(out)
    # The cache keeps the JSON bytes (what its bound counts); the cells are views.jsonable values, which JSON
    # carries unchanged. Cells are crawled text: formulas are neutralised for whoever opens the file in a
    # spreadsheet.
    table = decode(out)
    return Response(csv_text(table["columns"], table["rows"]), media_type="text/csv; charset=utf-8")


@router.get("/api/runs/{run_id}/drops")
def drops(run_id: str, registry: RegistryDep, cache: CacheDep, limits: LimitsDep, opener: OpenerDep,
          stage: str | None = None, reason: str | None = None, domain: str | None = None, source: str | None = None,
          offset: int = Query(0, ge=0, le=1_000_000), limit: int = Query(20, ge=1, le=500)) -> Response:
    path = require_finished(registry, run_id)  # after the query's checks (see deps.finished_run)
    return json_response(drops_json(cache, path, limits, opener, stage, reason, domain, source, offset, limit))


@router.get("/api/runs/{run_id}/docs/{doc_id:path}")
def document(run_id: str, doc_id: str, path: FinishedRun, limits: LimitsDep, opener: OpenerDep) -> dict[str, Any]:
    out = views.document(path, limits, doc_id, opener)
    if out["outcome"] == "unknown":
        raise HTTPException(404, detail=f"no document {doc_id!r} in run {run_id!r} (neither kept nor dropped)")
    return out


@router.post("/api/runs/{run_id}/whatif")
def whatif(run_id: str, body: WhatIfBody, registry: RegistryDep, cache: CacheDep, limits: LimitsDep,
           opener: OpenerDep) -> dict[str, Any]:
    path = require_finished(registry, run_id)  # after the body's checks (see deps.finished_run)
    # The pool is read once per run and column; every slider position is then answered in memory.
    pool = cache.get(("whatif_pool", run_key(path), body.column),
                     lambda: views.whatif_pool(path, limits, body.column, opener), approx_bytes)
    return views.whatif_at(pool, body.threshold, body.direction)


@router.get("/api/runs/{run_id}/mixture")
def mixture(path: FinishedRun, cache: CacheDep, limits: LimitsDep) -> Response:
    return json_response(mixture_json(cache, path, limits))


@router.get("/api/compare")
def compare(a: str, b: str, registry: RegistryDep, cache: CacheDep, limits: LimitsDep, opener: OpenerDep,
            offset: int = Query(0, ge=0, le=10_000_000), limit: int = Query(50, ge=1, le=1000)) -> Response:
    pa, pb = require_finished(registry, a), require_finished(registry, b)  # after the query's checks
    key = ("compare", run_key(pa), run_key(pb), offset, limit)
    return json_response(cache.json(key, lambda: views.compare(pa, pb, limits, offset, limit, opener)))
