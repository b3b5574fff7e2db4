"""What the routes need from the app, as FastAPI dependencies: the settings, the run registry, the answer cache,
the query limits, the pooled sandboxes, the job table and the job manager. ``create_app`` puts each on
``app.state`` once; the routes ask for them here instead of reaching into ``app.state`` themselves.

The providers that only read ``app.state`` are ``async``: a sync dependency would cost every request a trip
through the thread pool. ``finished_run`` reads the run directory, so it is sync (FastAPI runs it in the pool).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request

from curation.query_sandbox import Limits
from curation.service.cache import AnswerCache
from curation.service.job_store import JobLookup
from curation.service.jobs import JobManager
from curation.service.run_index import Registry
from curation.service.settings import ServiceSettings
from curation.service.views import RunOpener


async def get_settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


async def get_registry(request: Request) -> Registry:
    return request.app.state.registry


async def get_cache(request: Request) -> AnswerCache:
    """Answers of finished runs, bounded in bytes (``curation/service/cache.py``)."""
    return request.app.state.cache


async def get_limits(request: Request) -> Limits:
    """The limits every query of a request runs under (``--query-timeout-s``, the memory limit)."""
    s: ServiceSettings = request.app.state.settings
    return Limits(timeout_s=s.query_timeout_s, memory_limit=s.query_memory_limit)


async def get_opener(request: Request) -> RunOpener:
    """Opens sandboxes of finished runs from the pool, reused across requests (``sandbox_pool.py``)."""
    return request.app.state.pool.open_run


async def get_job_lookup(request: Request) -> JobLookup:
    """The job table as the read API sees it: a run's latest job."""
    return request.app.state.job_lookup


SettingsDep = Annotated[ServiceSettings, Depends(get_settings)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
CacheDep = Annotated[AnswerCache, Depends(get_cache)]
LimitsDep = Annotated[Limits, Depends(get_limits)]
OpenerDep = Annotated[RunOpener, Depends(get_opener)]
JobLookupDep = Annotated[JobLookup, Depends(get_job_lookup)]


def require_finished(registry: Registry, run_id: str) -> Path:
    """The run's directory: 400 for an invalid id, 404 for no such run, 409 while it has not finished (its data
    is complete only then)."""
    path = registry.path(run_id)
    state = registry.state(run_id)
    if state != "finished":
        raise HTTPException(409, detail=f"run {run_id!r} is {state}: its data can be read when it has finished "
                                        f"(see /api/runs/{run_id}/progress)")
    return path


def finished_run(run_id: str, registry: RegistryDep) -> Path:
    """Dependency: ``require_finished`` for the path's ``run_id``.

    FastAPI runs dependencies before it validates a route's query and body, so a route that also takes those calls
    ``require_finished`` itself, after them: a bad request to an unknown run stays a 422, as it was."""
    return require_finished(registry, run_id)


#: The finished run the path's ``run_id`` names.
FinishedRun = Annotated[Path, Depends(finished_run)]


def job_manager(app: FastAPI) -> JobManager:
    """The app's ``JobManager``, created from the settings on first use if the app (or a test) did not put one in
    ``app.state.jobs``, and started (idempotent: Ray starts and the table is reconciled in the background).

    Called from the job routes' bodies, not as a dependency: a request refused for its body or query never
    starts Ray."""
    jobs = getattr(app.state, "jobs", None)
    if jobs is None:
        jobs = app.state.jobs = JobManager(app.state.settings)
    jobs.start()
    return jobs


def close_job_manager(app: FastAPI) -> None:
    """Stop polling; a Ray head the service started is stopped too."""
    jobs = getattr(app.state, "jobs", None)
    if jobs is not None:
        jobs.close()
