"""Routes that submit, list, inspect and cancel pipeline runs (``curate serve``).

    POST /api/runs                  submit   body {"config_yaml": str, "overrides": [str], "run_id": str|null}
                                             header Idempotency-Key (optional): a retry returns the same job
                                             -> 202 {"job": JOB, "run_id": str, "warnings": [str]}  (new job)
                                             -> 200 same shape: a retry with the same key, or a finished run
                                                re-submitted with the same config ("nothing to do" warning)
                                             -> 422 {"detail": [{"loc": [...], "msg": str, "type": ...}]}
                                                (the message `curate run` prints, with the dotted path)
                                             -> 409 {"detail": str}: the run id is active, or was run with
                                                another config; 503 while the Ray cluster is starting
    POST /api/runs/{run_id}/cancel  submit   -> 202 {"job": JOB} (state "cancelled" once Ray stopped it);
                                             404 unknown run, 409 nothing active
    GET  /api/jobs                  read     ?run_id=&limit= -> 200 {"jobs": [JOB, ...]} newest first
    GET  /api/jobs/{job_id}         read     -> 200 JOB + {"config_yaml": str, "log_tail": str} (tokens redacted)

JOB = {job_id, run_id, run_dir, state, submitted_at, updated_at (epoch s), error, fingerprint, ray_job_id,
submitter_role, overrides, warnings}; state is one of validated, submitting, submitted, running, finished,
failed, cancelled.

Contract with the app (``curation.service.app``): ``app.state.settings`` holds the ServiceSettings;
the JobManager lives in ``app.state.jobs`` (created from the settings on first use if the app did not
put one there). The app's lifespan should call the two ``lifespan_hooks``:

    startup, shutdown = routes_jobs.lifespan_hooks
    startup(app)   # returns at once; Ray starts and the job table is reconciled in the background
    ...
    shutdown(app)  # stops polling; a Ray head the service started is stopped too

so that jobs left active by a crash are recovered at startup rather than at the first request.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from curation.service.auth import require_read, require_submit
from curation.service.job_store import public
from curation.service.jobs import JobError, JobManager

router = APIRouter()


class SubmitBody(BaseModel):
    config_yaml: str = Field(..., min_length=1, description="The pipeline YAML, as `curate run` reads it")
    overrides: list[str] = Field(default_factory=list, description="Dotted KEY=VALUE overrides (curate run -o)")
    run_id: str | None = Field(None, description="The run's id (its directory under the runs root); generated if null")


def manager(app: Any) -> JobManager:
    jobs = getattr(app.state, "jobs", None)
    if jobs is None:
        jobs = app.state.jobs = JobManager(app.state.settings)
    jobs.start()  # idempotent; also starts a manager the app (or a test) put there itself
    return jobs


def startup(app: Any) -> None:
    manager(app).start()


def shutdown(app: Any) -> None:
    jobs = getattr(app.state, "jobs", None)
    if jobs is not None:
        jobs.close()


lifespan_hooks = (startup, shutdown)


def _error(exc: JobError) -> JSONResponse:
    if exc.status == 422:  # the shape FastAPI uses for its own validation errors
        return JSONResponse({"detail": [{"loc": list(exc.loc), "msg": str(exc), "type": "config_error"}]}, 422)
    return JSONResponse({"detail": str(exc)}, exc.status)


@router.post("/api/runs", status_code=202)
async def submit_run(body: SubmitBody, request: Request, role: str = Depends(require_submit),
                     idempotency_key: str | None = Header(None, max_length=200)) -> Any:
    jobs = manager(request.app)
    try:
        row, warnings, created = await run_in_threadpool(
            jobs.submit, body.config_yaml, body.overrides, body.run_id, role=role, idempotency_key=idempotency_key)
    except JobError as exc:
        return _error(exc)
    return JSONResponse({"job": public(row), "run_id": row["run_id"], "warnings": warnings}, 202 if created else 200)


@router.post("/api/runs/{run_id}/cancel", status_code=202)
async def cancel_run(run_id: str, request: Request, role: str = Depends(require_submit)) -> Any:
    try:
        row = await run_in_threadpool(manager(request.app).cancel, run_id)
    except JobError as exc:
        return _error(exc)
    return JSONResponse({"job": public(row)}, 202)


@router.get("/api/jobs")
async def list_jobs(request: Request, run_id: str | None = None, limit: int = 200,
                    role: str = Depends(require_read)) -> Any:
    rows = await run_in_threadpool(manager(request.app).store.list, run_id, (), max(1, min(limit, 1000)))
    return {"jobs": [public(r) for r in rows]}


@router.get("/api/jobs/{job_id}")
async def get_job(job_id: str, request: Request, role: str = Depends(require_read)) -> Any:
    try:
        return await run_in_threadpool(manager(request.app).job, job_id)
    except JobError as exc:
        return _error(exc)
