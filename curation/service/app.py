"""``create_app(settings)``: the FastAPI application of ``curate serve``; ``serve(settings)`` runs it.

    curate serve --runs-root runs                 # http://127.0.0.1:8000, everyone on loopback may read/submit
    CURATE_SERVE_READ_TOKENS=... CURATE_SERVE_SUBMIT_TOKENS=... curate serve --runs-root s3://bucket/runs \\
        --host 0.0.0.0 --ray-address http://HEAD:8265

Cross-cutting behaviour lives here: a request body limit (413), the Host check, JSON for every error (4xx names
the problem, 5xx never shows a traceback), security headers on every response and the schema behind read auth.
The routes are routers: the read API (``routes_runs.py``), the login cookie (``routes_auth.py``), the job routes
(``routes_jobs.py``) and the pages (``pages.py``); what they need from the app comes through ``deps.py``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from curation.errors import CurationError
from curation.service import pages, routes_auth, routes_jobs, routes_runs
from curation.service.auth import require_read
from curation.service.cache import AnswerCache
from curation.service.deps import close_job_manager, job_manager
from curation.service.job_store import JobLookup
from curation.service.jobs import JobError
from curation.service.run_index import Registry
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

    # A refused submission or cancellation (a CurationError too, with its own status): the job routes' answer.
    app.add_exception_handler(JobError, routes_jobs.job_error)

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the job manager at startup when the job table holds jobs a crash left active, so they are recovered
    before anyone asks (otherwise it starts, and starts Ray, at the first job request); at shutdown stop it and
    close the pooled run sandboxes."""
    if app.state.job_lookup.has_active():
        job_manager(app)
    try:
        yield
    finally:
        try:
            close_job_manager(app)
        finally:
            app.state.pool.close()


def _openapi_route(app: FastAPI) -> None:
    """``GET /api/openapi.json`` with read auth: the schema lists every route and body, which is for callers
    who may use them, not for whoever can reach the port."""

    @app.get("/api/openapi.json", dependencies=[Depends(require_read)], include_in_schema=False)
    def openapi() -> dict[str, Any]:
        return app.openapi()


def create_app(settings: ServiceSettings, failed: Callable[[str], bool] | None = None) -> FastAPI:
    """The service's ASGI app over ``settings.runs_root``. ``failed(run_id) -> bool`` marks runs whose job
    failed; by default the job table decides."""
    # FastAPI's own openapi_url (and docs pages) would be served to anyone: the schema is served by
    # _openapi_route instead, behind the same read auth as every other route. No docs pages are served.
    app = FastAPI(title="curate serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=_lifespan)
    # What the routes get through curation/service/deps.py:
    app.state.settings = settings
    app.state.job_lookup = JobLookup(settings.state_dir)  # the job table, read-only
    app.state.registry = Registry(settings.runs_root, app.state.job_lookup.failed if failed is None else failed)
    # Answers of finished runs (immutable), bounded in bytes: see curation/service/cache.py.
    app.state.cache = AnswerCache(settings.cache_mb << 20)
    app.state.pool = SandboxPool()  # open sandboxes of finished runs: see curation/service/sandbox_pool.py
    # app.state.jobs, the JobManager, is created at the first job request (deps.job_manager).
    _install_errors(app)
    app.include_router(routes_runs.router)
    _openapi_route(app)
    app.include_router(routes_auth.router)
    app.include_router(routes_jobs.router)
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
    from uvicorn.config import STARTUP_FAILURE

    from curation.service.transport import GuardedServer, uvicorn_options

    # Slow-client limits and proxy-header trust (none unless --forwarded-allow-ips): curation/service/transport.py.
    config = uvicorn.Config(create_app(settings), host=settings.host, port=settings.port, log_level="info",
                            server_header=False, **uvicorn_options(settings))
    server = GuardedServer(config)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown; that is a clean exit
        pass
    if not server.started:  # the port was taken, or the app failed to start: uvicorn logged why
        raise SystemExit(STARTUP_FAILURE)
