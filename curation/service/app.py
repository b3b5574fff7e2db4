"""``create_app(settings)``: the FastAPI application of ``curate serve``; ``serve(settings)`` runs it.

    curate serve --runs-root runs                 # http://127.0.0.1:8000, everyone on loopback may read/submit
    CURATE_SERVE_READ_TOKENS=... CURATE_SERVE_SUBMIT_TOKENS=... curate serve --runs-root s3://bucket/runs \\
        --host 0.0.0.0 --ray-address http://HEAD:8265

Cross-cutting behaviour lives here: a request body limit (413), JSON for every error (4xx names the
problem, 5xx never shows a traceback), security headers on every response, the read API, the login
cookie, and the job routes when ``curation.service.routes_jobs`` is installed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from curation.errors import CurationError
from curation.io.csv_export import csv_text
from curation.io.runs import progress as run_progress
from curation.query_sandbox import Limits
from curation.service import views
from curation.service.auth import COOKIE, _matches, require_read, same_origin
from curation.service.cache import (AnswerCache, approx_bytes, decode, detail_json, drops_json, json_response,
                                    mixture_json, run_key)
from curation.service.registry import Registry
from curation.service.sandbox_pool import SandboxPool
from curation.service.settings import ServiceSettings, host_header_name

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
SECURITY_HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"), (b"referrer-policy", b"same-origin"),
                    (b"cross-origin-opener-policy", b"same-origin")]


class BodyLimit:
    """413 for a request body over ``max_bytes``: from ``Content-Length`` before reading anything, and
    while reading a chunked body (no length announced) as soon as it passes the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        too_big = JSONResponse({"detail": f"request body over {self.max_bytes} bytes"}, status_code=413)
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                return await JSONResponse({"detail": "invalid Content-Length"}, status_code=400)(scope, receive, send)
            if n > self.max_bytes:
                return await too_big(scope, receive, send)
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooBig(self.max_bytes)
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooBig:
            if not started:
                await too_big(scope, receive, send)


class _TooBig(StarletteHTTPException):
    """Raised while a route reads its body; an HTTPException so that FastAPI's body parser passes it
    on (it turns any other error into a 400) and the JSON error handler answers 413."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, detail=f"request body over {max_bytes} bytes")


class HostCheck:
    """400 for a request whose ``Host`` header names a host the service does not answer to
    (``ServiceSettings.allowed_host_names``): a page elsewhere whose DNS name now points at 127.0.0.1 would
    otherwise be same-origin with the service and read and submit through it (DNS rebinding)."""

    def __init__(self, app: ASGIApp, settings: ServiceSettings) -> None:
        self.app, self.names = app, settings.allowed_host_names()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.names is None:
            return await self.app(scope, receive, send)
        raw = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        name = host_header_name(raw)
        if name is None or name not in self.names:
            shown = raw[:100] or "(none)"
            return await JSONResponse({"detail": f"Host {shown!r} is not served here: use one of "
                                                 f"{sorted(self.names)} or start curate serve with "
                                                 "--allowed-host NAME"}, status_code=400)(scope, receive, send)
        await self.app(scope, receive, send)


class SecurityHeaders:
    """CSP (no inline script, nothing from other origins), nosniff, no framing, same-origin referrer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def add_headers(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                names = {k.lower() for k, _ in msg.get("headers", [])}
                msg["headers"] = list(msg.get("headers", [])) + [(k, v) for k, v in SECURITY_HEADERS if k not in names]
            await send(msg)

        await self.app(scope, receive, add_headers)


def _dotted(loc: Any) -> str:
    return ".".join(str(p) for p in loc)


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [{"loc": _dotted(e.get("loc", ())), "msg": e.get("msg", "invalid")} for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(CurationError)
    async def curation_error(request: Request, exc: CurationError) -> JSONResponse:
        # ConfigError from the sandbox or the views: a bad query, column or request value.
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)


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


def _read_api(app: FastAPI) -> None:
    reg: Registry = app.state.registry
    s: ServiceSettings = app.state.settings
    limits = Limits(timeout_s=s.query_timeout_s, memory_limit=s.query_memory_limit)
    read = [Depends(require_read)]
    cache: AnswerCache = app.state.cache
    opener = app.state.pool.open_run  # open sandboxes of finished runs, reused across requests
    latest_job = _job_table_latest(s)  # the job table, for a submitted run whose directory does not exist yet

    def finished(run_id: str) -> Path:
        path = reg.path(run_id)
        state = reg.state(run_id)
        if state != "finished":
            raise HTTPException(409, detail=f"run {run_id!r} is {state}: its data can be read when it has finished "
                                            f"(see /api/runs/{run_id}/progress)")
        return path

    @app.get("/api/runs", dependencies=read)
    def runs() -> dict[str, Any]:
        return {"root": str(reg.root), "runs": [r.to_json() for r in reg.list()]}

    @app.get("/api/runs/{run_id}", dependencies=read)
    def run_detail(run_id: str) -> Response:
        path = finished(run_id)
        return json_response(detail_json(cache, path, limits, opener))

    @app.get("/api/runs/{run_id}/progress", dependencies=read)
    def progress(run_id: str) -> dict[str, Any]:
        try:
            path = reg.path(run_id)
        except HTTPException as exc:
            # A job just submitted has no run directory yet: its run is queued (or starting), not missing.
            row = latest_job(run_id) if exc.status_code == 404 and app.state.jobs_enabled else None
            if row is None or row["state"] not in _BEFORE_RUN:
                raise
            return {"state": _BEFORE_RUN[row["state"]], "job_id": row["job_id"], "job_state": row["state"],
                    "tasks_done": 0, "tasks_total": 0, "passes": [], "input_bytes": 0, "input_bytes_done": 0,
                    "eta_s": None, "source": "job"}
        try:
            out = run_progress(path)
        except ValueError as exc:
            raise HTTPException(409, detail=str(exc)) from exc
        out["state"] = reg.state(run_id)
        return out

    @app.post("/api/runs/{run_id}/query", dependencies=read)
    def query(run_id: str, body: QueryBody) -> Any:
        if body.offset < 0 or not 1 <= body.limit <= s.query_max_rows:
            raise HTTPException(400, detail=f"need offset >= 0 and 1 <= limit <= {s.query_max_rows}")
        path = finished(run_id)
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

    @app.get("/api/runs/{run_id}/drops", dependencies=read)
    def drops(run_id: str, stage: str | None = None, reason: str | None = None, domain: str | None = None,
              source: str | None = None, offset: int = Query(0, ge=0, le=1_000_000),
              limit: int = Query(20, ge=1, le=500)) -> Response:
        path = finished(run_id)
        return json_response(drops_json(cache, path, limits, opener, stage, reason, domain, source, offset, limit))

    @app.get("/api/runs/{run_id}/docs/{doc_id:path}", dependencies=read)
    def document(run_id: str, doc_id: str) -> dict[str, Any]:
        out = views.document(finished(run_id), limits, doc_id, opener)
        if out["outcome"] == "unknown":
            raise HTTPException(404, detail=f"no document {doc_id!r} in run {run_id!r} (neither kept nor dropped)")
        return out

    @app.post("/api/runs/{run_id}/whatif", dependencies=read)
    def whatif(run_id: str, body: WhatIfBody) -> dict[str, Any]:
        path = finished(run_id)
        # The pool is read once per run and column; every slider position is then answered in memory.
        pool = cache.get(("whatif_pool", run_key(path), body.column),
                         lambda: views.whatif_pool(path, limits, body.column, opener), approx_bytes)
        return views.whatif_at(pool, body.threshold, body.direction)

    @app.get("/api/runs/{run_id}/mixture", dependencies=read)
    def mixture(run_id: str) -> Response:
        path = finished(run_id)
        return json_response(mixture_json(cache, path, limits))

    @app.get("/api/compare", dependencies=read)
    def compare(a: str, b: str, offset: int = Query(0, ge=0, le=10_000_000),
                limit: int = Query(50, ge=1, le=1000)) -> Response:
        pa, pb = finished(a), finished(b)
        key = ("compare", run_key(pa), run_key(pb), offset, limit)
        return json_response(cache.json(key, lambda: views.compare(pa, pb, limits, offset, limit, opener)))


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form body (the login form); the body limit middleware bounds its size."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


def _login_routes(app: FastAPI) -> None:
    from curation.service import pages

    @app.post("/login")
    async def login(request: Request) -> Response:
        if not same_origin(request):
            raise HTTPException(403, detail="cross-site request refused")
        s: ServiceSettings = request.app.state.settings
        token = (await _form(request)).get("token", "").strip()
        if not token or not (_matches(token, s.read_tokens) or _matches(token, s.submit_tokens)):
            return pages.login_page(request, error="That token is not valid here.", status=401)
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                        path="/")
        return resp

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        if not same_origin(request):
            raise HTTPException(403, detail="cross-site request refused")
        resp = RedirectResponse("/", status_code=303)
        resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return resp


def _job_router() -> Any:
    """The job routes (submit, cancel, list) when their module is present; None otherwise."""
    try:
        from curation.service.routes_jobs import router
    except ModuleNotFoundError as exc:
        if exc.name != "curation.service.routes_jobs":
            raise  # the module exists but something it imports is missing: say so, do not hide the routes
        return None
    return router


def _job_table_latest(settings: ServiceSettings) -> Any:
    """``latest(run_id)``: the run's latest job row in the job table, or None (no table, no job)."""

    path = Path(settings.state_dir) / "jobs.sqlite"
    store: list[Any] = []  # opened once the table exists (opening runs its schema script)

    def latest(run_id: str) -> dict[str, Any] | None:
        if not store:
            if not path.exists():
                return None
            from curation.service.job_store import JobStore

            store.append(JobStore(path))
        rows = store[0].list(run_id=run_id, limit=1)
        return rows[0] if rows else None

    return latest


def _job_table_failed(settings: ServiceSettings) -> Any:
    """``failed(run_id)``: the run's latest job failed (run directories do not record failures)."""
    latest = _job_table_latest(settings)

    def failed(run_id: str) -> bool:
        row = latest(run_id)
        return row is not None and row["state"] == "failed"

    return failed


#: Job states before the job's run directory exists, and what the progress route answers for them.
_BEFORE_RUN = {"validated": "queued", "submitting": "queued", "submitted": "queued", "running": "starting"}


def _lifespan(settings: ServiceSettings, jobs: bool) -> Any:
    """Close the pooled run sandboxes at shutdown. With the job routes, also start the job manager at startup
    when the job table holds jobs a crash left active, so they are recovered before anyone asks; otherwise it
    starts (and starts Ray) at the first job request."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not jobs:
            try:
                yield
            finally:
                app.state.pool.close()
            return
        from curation.service import routes_jobs
        from curation.service.job_store import ACTIVE, JobStore

        path = Path(settings.state_dir) / "jobs.sqlite"
        startup, shutdown = routes_jobs.lifespan_hooks
        if path.exists() and JobStore(path).list(states=ACTIVE, limit=1):
            startup(app)
        try:
            yield
        finally:
            try:
                shutdown(app)
            finally:
                app.state.pool.close()

    return lifespan


def _openapi_route(app: FastAPI) -> None:
    """``GET /api/openapi.json`` with read auth: the schema lists every route and body, which is for callers
    who may use them, not for whoever can reach the port."""

    @app.get("/api/openapi.json", dependencies=[Depends(require_read)], include_in_schema=False)
    def openapi() -> dict[str, Any]:
        return app.openapi()


def create_app(settings: ServiceSettings, failed: Any = None) -> FastAPI:
    """The service's ASGI app over ``settings.runs_root``. ``failed(run_id) -> bool`` marks runs whose job
    failed; by default the job table decides when the job routes are present."""
    router = _job_router()
    # FastAPI's own openapi_url (and docs pages) would be served to anyone: the schema is served by
    # _openapi_route instead, behind the same read auth as every other route. No docs pages are served.
    app = FastAPI(title="curate serve", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=_lifespan(settings, jobs=router is not None))
    if failed is None and router is not None:
        failed = _job_table_failed(settings)
    app.state.settings = settings
    app.state.registry = Registry(settings.runs_root, failed)
    # Answers of finished runs (immutable), bounded in bytes: see curation/service/cache.py.
    app.state.cache = AnswerCache(settings.cache_mb << 20)
    app.state.pool = SandboxPool()  # open sandboxes of finished runs: see curation/service/sandbox_pool.py
    _install_errors(app)
    _read_api(app)
    _openapi_route(app)
    _login_routes(app)
    app.state.jobs_enabled = router is not None
    if router is not None:
        app.include_router(router)
    from curation.service import pages

    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # The middleware added last is outermost: security headers go on every response, 413s included.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(HostCheck, settings=settings)  # before anything reads the body or routes
    app.add_middleware(SecurityHeaders)
    return app


def serve(settings: ServiceSettings) -> None:
    """Run the app under uvicorn until interrupted."""
    import uvicorn

    settings.state_dir.mkdir(parents=True, exist_ok=True)
    from curation.service.transport import uvicorn_options

    # Slow-client limits and proxy-header trust (none unless --forwarded-allow-ips): curation/service/transport.py.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info",
                server_header=False, **uvicorn_options(settings))
