"""Answers of finished runs, cached: a finished run is immutable, so an answer keyed by the run's identity and
the request's parameters stays right until the run directory is replaced.

The identity of a run is its manifest's (path, mtime, size) and, for answers that read other files, theirs
(the CMR fit of the mixture view). A re-run into the same directory writes a new manifest: a new key. Only
small answers are kept (``max_rows``), in an LRU of ``max_entries``; concurrent misses of one key compute it
once (the others wait for that result), so a burst of identical requests on a cold cache costs one query.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

from curation.io.manifest import manifest_path

T = TypeVar("T")


def stat_key(path: Path) -> tuple[str, int, int] | None:
    """(path, mtime_ns, size) of a file, or None when it does not exist (remote paths: (path, 0, size))."""
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return str(path), int(getattr(st, "st_mtime_ns", 0) or 0), int(getattr(st, "st_size", 0) or 0)


def run_key(run: Path, *extra_files: str) -> tuple[Any, ...]:
    """The identity of a finished run (its manifest) and of ``extra_files`` under it."""
    return (stat_key(manifest_path(run)),) + tuple(stat_key(run / f) for f in extra_files)


class AnswerCache:
    """A thread-safe LRU with single-flight misses. ``hits``/``misses`` count lookups (for the benchmark)."""

    def __init__(self, max_entries: int = 2048, max_rows: int = 2000) -> None:
        self.max_entries, self.max_rows = max_entries, max_rows
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._inflight: dict[Hashable, threading.Event] = {}
        self._encoded: dict[Hashable, tuple[Any, bytes]] = {}  # key -> (the kept answer, its JSON bytes)
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable, compute: Callable[[], T], rows: Callable[[T], int] = lambda _: 0) -> T:
        while True:
            with self._lock:
                if key in self._data:
                    self._data.move_to_end(key)
                    self.hits += 1
                    return self._data[key]
                event = self._inflight.get(key)
                if event is None:
                    event = self._inflight[key] = threading.Event()
                    self.misses += 1
                    break
            event.wait()  # another thread computes this key; then read its result (or compute, if it failed)
        try:
            value = compute()
            if rows(value) <= self.max_rows:
                with self._lock:
                    self._data[key] = value
                    while len(self._data) > self.max_entries:
                        old, _ = self._data.popitem(last=False)
                        self._encoded.pop(old, None)
            return value
        finally:
            with self._lock:
                self._inflight.pop(key, None)
            event.set()

    def encoded(self, key: Hashable, value: Any, encode: Callable[[Any], bytes]) -> bytes:
        """``encode(value)`` for the answer ``get(key, ...)`` returned, kept while that same answer is kept (an
        answer that was not kept, or was replaced, is encoded again). Lookups here are not counted."""
        with self._lock:
            kept = self._encoded.get(key)
            if kept is not None and kept[0] is value:
                return kept[1]
        body = encode(value)
        with self._lock:
            if self._data.get(key) is value:
                self._encoded[key] = (value, body)
        return body


def json_response(cache: AnswerCache, key: Hashable, value: Any) -> Any:
    """``value``, the answer cached under ``key``, as the JSON response FastAPI would send for it, encoded once
    while it is kept. FastAPI would run ``jsonable_encoder`` and ``json.dumps`` over it on every request: 1.7 ms
    for the detail of a 100k-document run, most of what answering it from the cache costs."""
    from fastapi.encoders import jsonable_encoder
    from fastapi.responses import JSONResponse, Response

    body = cache.encoded(key, value, lambda v: JSONResponse(jsonable_encoder(v)).body)
    return Response(body, media_type="application/json")


def detail_key(run: Path) -> tuple[Any, ...]:
    return ("detail", run_key(run))


def mixture_key(run: Path) -> tuple[Any, ...]:
    from curation.service.mixture import CMR_FIT

    return ("mixture", run_key(run, CMR_FIT))


def drops_key(run: Path, *params: Any) -> tuple[Any, ...]:
    return ("drops", run_key(run), *params)


def cached_detail(cache: AnswerCache, run: Path, limits: Any, opener: Any = None) -> dict[str, Any]:
    """``views.run_detail`` (funnel, reasons, domains, a histogram per score column) once per run; ``opener``
    (``views.RunOpener``) defaults to a new sandbox."""
    from curation.service import views

    return cache.get(detail_key(run), lambda: views.run_detail(run, limits, opener or views.open_run))


def cached_mixture(cache: AnswerCache, run: Path, limits: Any) -> dict[str, Any]:
    """The mixture view once per run and CMR fit file."""
    from curation.service.mixture import mixture

    return cache.get(mixture_key(run), lambda: mixture(run, limits))


def cached_drops(cache: AnswerCache, run: Path, limits: Any, opener: Any, stage: str | None, reason: str | None,
                 domain: str | None, source: str | None, offset: int, limit: int) -> dict[str, Any]:
    """A drops page, cached; a page not seen yet is sliced from the filter's ``views.drop_order`` (read once
    per run and filter, kept whatever its size), so it costs one read of its own rows and no sort."""
    from curation.service import views

    key = run_key(run)

    def page() -> dict[str, Any]:
        order = cache.get(("drop_order", key, stage, reason, domain, source),
                          lambda: views.drop_order(run, limits, stage, reason, domain, source, opener))
        return views.drops(run, limits, stage, reason, domain, source, offset, limit, opener, order)

    return cache.get(drops_key(run, stage, reason, domain, source, offset, limit), page,
                     rows=lambda o: len(o["samples"]))
