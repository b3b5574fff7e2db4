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

Every route here raises ``JobError`` for a refusal; the app answers it with ``job_error`` (installed by
``create_app``): a 422 in the shape FastAPI uses for its own validation errors, any other status as
``{"detail": str}``. The job manager is ``curation.service.deps.job_manager``, created and started at the first job
request (or at startup when the job table holds jobs a crash left active).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from curation.service.auth import require_read, require_submit
from curation.service.deps import job_manager
from curation.service.job_store import public
from curation.service.jobs import JobError
from curation.service.models import JobCancelled, JobDetail, JobList, JobSubmitted

router = APIRouter()


class SubmitBody(BaseModel):
    config_yaml: str = Field(..., min_length=1, description="The pipeline YAML, as `curate run` reads it")
    overrides: list[str] = Field(default_factory=list, description="Dotted KEY=VALUE overrides (curate run -o)")
    run_id: str | None = Field(None, description="The run's id (its directory under the runs root); generated if null")


async def job_error(request: Request, exc: JobError) -> JSONResponse:
    """The answer to a ``JobError`` (the app's exception handler for it)."""
    if exc.status == 422:  # the shape FastAPI uses for its own validation errors
        return JSONResponse({"detail": [{"loc": list(exc.loc), "msg": str(exc), "type": "config_error"}]}, 422)
    return JSONResponse({"detail": str(exc)}, exc.status)


# The submit and cancel routes pick their status (202, or 200 for a replay): they return a JSONResponse, which the
# response_model only documents. The read routes' answers are validated against theirs.


@router.post("/api/runs", status_code=202, response_model=JobSubmitted, responses={200: {"model": JobSubmitted}})
async def submit_run(body: SubmitBody, request: Request, role: str = Depends(require_submit),
                     idempotency_key: str | None = Header(None, max_length=200)) -> JSONResponse:
    jobs = job_manager(request.app)
    row, warnings, created = await run_in_threadpool(
        jobs.submit, body.config_yaml, body.overrides, body.run_id, role=role, idempotency_key=idempotency_key)
    return JSONResponse({"job": public(row), "run_id": row["run_id"], "warnings": warnings}, 202 if created else 200)


@router.post("/api/runs/{run_id}/cancel", status_code=202, response_model=JobCancelled)
async def cancel_run(run_id: str, request: Request, role: str = Depends(require_submit)) -> JSONResponse:
    row = await run_in_threadpool(job_manager(request.app).cancel, run_id)
    return JSONResponse({"job": public(row)}, 202)


@router.get("/api/jobs", response_model=JobList)
async def list_jobs(request: Request, run_id: str | None = None, limit: int = 200,
                    role: str = Depends(require_read)) -> dict[str, Any]:
    rows = await run_in_threadpool(job_manager(request.app).store.list, run_id, (), max(1, min(limit, 1000)))
    return {"jobs": [public(r) for r in rows]}


@router.get("/api/jobs/{job_id}", response_model=JobDetail)
async def get_job(job_id: str, request: Request, role: str = Depends(require_read)) -> dict[str, Any]:
    return await run_in_threadpool(job_manager(request.app).job, job_id)
