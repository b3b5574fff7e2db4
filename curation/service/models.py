"""The answers of the service's API as pydantic models, so that the OpenAPI document (``GET /api/openapi.json``)
shows what each route returns.

Two kinds, and the difference matters for what a client receives:

- **Validated** (``RunList``, ``JobList``, ``JobDetail``): the route's ``response_model``; FastAPI checks the answer
  against it and serializes it through it. Each describes its answer exactly: the fields in the order the route
  builds them, none added or dropped, and a type only where the code guarantees it. Values copied from run files
  (anyone who can write the run directory writes them) are ``Any`` at run time, so whatever a manifest holds
  passes through as it did before these models; their schema (``File*``) says what a well-formed run holds. A key
  the model lacks is refused (``extra="forbid"``), never dropped.
- **Described** (``RunDetail``, ``QueryResult``, ``JobSubmitted``, ``JobCancelled``): the route returns a
  ready ``Response`` (the answer cache's pre-encoded JSON bytes, or a status the route picks), which FastAPI sends
  as it is; the model only documents it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from curation.io.runs import State

# Values copied from run files: any JSON value passes through unchanged; the schema says what a well-formed run holds.
FileString = Annotated[Any, WithJsonSchema({"type": "string"})]
FileCount = Annotated[Any, WithJsonSchema({"type": "integer"})]
FileNumber = Annotated[Any, WithJsonSchema({"type": "number"})]
FileObject = Annotated[Any, WithJsonSchema({"type": "object"})]


class _Model(BaseModel):
    # Validated answers refuse a key the model lacks (a 500 in the tests) rather than dropping it silently.
    model_config = ConfigDict(extra="forbid")


# -- runs --------------------------------------------------------------------------------------------------------


class FunnelStage(_Model):
    """One stage of a run's funnel: documents in, out, and dropped (all reasons)."""

    stage: FileString
    in_: FileCount = Field(alias="in")  # ``in`` is a Python keyword
    out: FileCount
    dropped: FileNumber


class RunSummary(_Model):
    """A run in the runs list (``curation.io.runs.RunInfo.to_json``)."""

    id: str = Field(description="the run's directory name under the runs root")
    state: State
    name: str
    fingerprint: str
    created_unix: float | None = Field(description="when the manifest (finished) or run.json was written")
    totals: FileObject = Field(description="the manifest's totals (finished runs), else {}")
    funnel: list[FunnelStage]
    domains: FileObject = Field(description="{domain: {docs, chars, tokens}} (finished runs), else {}")
    shard_bytes: int
    input_bytes: int
    error: str | None = Field(description="why the directory could not be read, when it could not")


class RunList(_Model):
    """``GET /api/runs``: every run under the root, newest first."""

    root: str
    runs: list[RunSummary]


class DropReason(_Model):
    stage: str
    reason: str
    docs: int
    chars: int | None


class DomainKept(_Model):
    domain: str | None
    docs: int
    chars: int | None
    mean_chars: float | None
    tokens: int


class HistogramBin(_Model):
    lo: float
    hi: float
    docs: int
    kept: int


class Histogram(_Model):
    column: str
    min: float | None
    max: float | None
    bins: list[HistogramBin]


class RunDetail(_Model):
    """``GET /api/runs/{run_id}`` (described; ``curation.service.views.run_detail``): the manifest's summary, drop
    reasons, kept domains, quarantine and a histogram per numeric score column."""

    id: str
    name: str | None
    fingerprint: str | None
    created_unix: float | None
    wall_seconds: float | None
    totals: dict[str, Any] | None
    token_counter: str | None
    shards: int
    shard_bytes: int
    funnel: list[FunnelStage]
    reasons: list[DropReason]
    domains: list[DomainKept]
    quarantined_lines: int
    schema_: list[dict[str, Any]] | None = Field(alias="schema", description="the kept shards' columns")  # BaseModel.schema
    config: dict[str, Any] | None = Field(description="the run's pipeline config, defaults filled in")
    histograms: dict[str, Histogram]
    corpus: Any = Field(default=None, description="per dedup stage with `against`: the earlier runs and what each "
                                                  "removed (the manifest's `corpus`, as recorded)")


class QueryResult(_Model):
    """``POST /api/runs/{run_id}/query`` with ``"format": "json"`` (described; ``views.run_query``): the page of
    rows ``offset .. offset + limit`` of one SELECT, cells as JSON values; ``more`` when rows follow. With
    ``"format": "csv"`` the same page is ``text/csv``."""

    columns: list[str]
    rows: list[list[Any]]
    offset: int
    limit: int
    more: bool


# -- jobs --------------------------------------------------------------------------------------------------------


class Job(_Model):
    """A submitted job (``curation.service.job_store.public``): its row in the job table, without the effective
    pipeline and the request hash."""

    job_id: str
    run_id: str
    run_dir: str
    state: Literal["validated", "submitting", "submitted", "running", "finished", "failed", "cancelled"]  # STATES
    submitted_at: float = Field(description="epoch seconds")
    updated_at: float = Field(description="epoch seconds")
    error: str | None = Field(description="why the job failed (tokens redacted)")
    fingerprint: str
    ray_job_id: str
    submitter_role: str
    overrides: list[str]
    warnings: list[str]


class JobDetail(Job):
    """``GET /api/jobs/{job_id}``: the job, the config as submitted and the end of its log (tokens redacted)."""

    config_yaml: str
    log_tail: str


class JobList(_Model):
    """``GET /api/jobs``: jobs newest first."""

    jobs: list[Job]


class JobSubmitted(_Model):
    """``POST /api/runs`` (described): 202 for a new job; 200 for a retry with the same ``Idempotency-Key`` or a
    finished run submitted again with its config (a "nothing to do" warning)."""

    job: Job
    run_id: str
    warnings: list[str]


class JobCancelled(_Model):
    """``POST /api/runs/{run_id}/cancel`` (described): the job, ``cancelled`` once Ray stopped it."""

    job: Job
