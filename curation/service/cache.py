"""Answers of finished runs, cached: a finished run is immutable, so an answer keyed by the run's identity and
the request's parameters stays right until the run directory is replaced.

The identity of a run is its manifest's (path, mtime, size) and, for answers that read other files, theirs
(the CMR fit of the mixture view). A re-run into the same directory writes a new manifest: a new key.

The cache is bounded in bytes (``curate serve --cache-mb``, ``ServiceSettings.cache_mb``), not in entries: one
query answer can be a few bytes or hundreds of megabytes, so a count of entries bounds nothing. What is counted:

- an answer is kept as the JSON bytes the service sends (``AnswerCache.json``), never as the Python object it
  was built from (several times bigger, and not what a byte count can see), and counts ``len`` of those bytes;
- an intermediate the routes reuse (a drops listing's order, a what-if pool) counts ``approx_bytes`` of it;
- every entry also counts the text of its key (a query's SQL may be up to ``max_body_bytes`` long).

A kept answer of ``MMAP_MIN`` bytes or more lives in an anonymous mapping of its own (``pinned``), so what the
count says is what the process holds, and an evicted answer's memory goes back to the system.

The least recently used entries are evicted while the total is over ``max_bytes``. An entry over
``max_bytes // ENTRY_FRACTION`` is served but not kept: one huge answer must not flush every other answer out,
and a handful of big ones still fit. ``max_entries`` bounds what is not counted (a few hundred bytes of
bookkeeping per entry). Concurrent misses of one key compute it once (the others wait for that result), so a
burst of identical requests on a cold cache costs one query.
"""

from __future__ import annotations

import json
import mmap
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

from curation.io.manifest import manifest_path

T = TypeVar("T")

DEFAULT_CACHE_MB = 256
#: An entry bigger than ``max_bytes // ENTRY_FRACTION`` is not kept (see the module docstring).
ENTRY_FRACTION = 4
#: ``approx_bytes`` measures this many evenly spaced items of a longer list and extrapolates: a drops order
#: holds one tuple per dropped document (millions), and walking all of them would cost seconds per miss.
SAMPLE = 256
#: A kept answer of at least this many bytes gets an anonymous mapping of its own (``pinned``).
MMAP_MIN = 64 << 10

#: A JSON answer's bytes: ``bytes`` as encoded, or a read-only view of the mapping a kept one lives in.
Body = bytes | memoryview


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


def key_bytes(key: Any) -> int:
    """The bytes a key's text adds: UTF-8 length of its strings and length of its bytes, nested tuples summed.
    Numbers and None add nothing (they are the fixed per-entry overhead ``max_entries`` bounds)."""
    if isinstance(key, str):
        return len(key.encode("utf-8", "surrogatepass"))
    if isinstance(key, (bytes, bytearray)):
        return len(key)
    if isinstance(key, (tuple, frozenset)):
        return sum(key_bytes(k) for k in key)
    return 0


def approx_bytes(obj: Any) -> int:
    """The memory ``obj`` holds, for a cached intermediate that is not an encoded answer: ``sys.getsizeof`` of
    each object reached (numpy arrays: their buffer), through dicts, lists and tuples; a list or tuple longer
    than ``2 * SAMPLE`` is measured on ``SAMPLE`` evenly spaced items and extrapolated. Objects shared between
    items are counted once per reference: an overestimate, which errs on the side of the bound."""
    import numpy as np

    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            return sys.getsizeof(obj) + approx_bytes(obj.tolist())
        return sys.getsizeof(obj) if obj.base is None else sys.getsizeof(obj) + obj.nbytes
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        return size + _items_bytes(list(obj)) + _items_bytes(list(obj.values()))
    if isinstance(obj, (list, tuple)):
        return size + _items_bytes(obj)
    if isinstance(obj, (set, frozenset)):
        return size + _items_bytes(list(obj))
    return size


def _items_bytes(items: list[Any] | tuple[Any, ...]) -> int:
    """``approx_bytes`` of every item, summed; of ``SAMPLE`` evenly spaced ones, extrapolated, for many items."""
    n = len(items)
    if n <= 2 * SAMPLE:
        return sum(approx_bytes(x) for x in items)
    step = n / SAMPLE
    sample = sum(approx_bytes(items[int(i * step)]) for i in range(SAMPLE))
    return (sample * n + SAMPLE - 1) // SAMPLE


def encode_json(value: Any) -> bytes:
    """``value`` as the JSON body FastAPI would send for it (``jsonable_encoder``, then ``JSONResponse``)."""
    from fastapi.encoders import jsonable_encoder
    from fastapi.responses import JSONResponse

    return bytes(JSONResponse(jsonable_encoder(value)).body)


def pinned(body: Body) -> Body:
    """``body`` as it is kept: a big one copied into an anonymous mapping of its own, read-only.

    Why: kept in the heap, long-lived answers sit between the short-lived objects of the requests the worker
    threads serve, and the allocator can hand little of that memory back when one is evicted; measured under a
    4-thread storm of 1 MB answers, 33 MB of kept answers held about 60 MB more RSS than an empty cache. A
    mapping is returned to the system whole when the last reference to it goes (eviction, or the end of the
    last response sending it). The count stays ``len(body)``: page rounding adds under 4 KiB per mapping, under
    1/16 of a mapped answer."""
    if len(body) < MMAP_MIN:
        return body
    m = mmap.mmap(-1, len(body))
    m.write(body)
    return memoryview(m).toreadonly()


class AnswerCache:
    """A thread-safe LRU bounded in bytes, with single-flight misses. ``bytes`` is what the kept entries count
    (never above ``max_bytes``); ``hits``/``misses`` count lookups (for the benchmark)."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_MB << 20, max_entries: int = 2048) -> None:
        if max_bytes < 0 or max_entries < 0:
            raise ValueError(f"cache bounds must be >= 0, got max_bytes={max_bytes}, max_entries={max_entries}")
        self.max_bytes, self.max_entries = max_bytes, max_entries
        self.max_entry_bytes = max_bytes // ENTRY_FRACTION
        self._data: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()  # key -> (value, counted bytes)
        self._inflight: dict[Hashable, threading.Event] = {}
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = self.misses = 0

    def get(self, key: Hashable, compute: Callable[[], T], size: Callable[[T], int],
            keep: Callable[[T], T] | None = None) -> T:
        """The value kept under ``key``, or ``compute()`` (kept when ``size(value) + key_bytes(key)`` is at most
        ``max_entry_bytes``). ``size`` is required: an entry the bound cannot see is an unbounded cache."""
        while True:
            with self._lock:
                if key in self._data:
                    self._data.move_to_end(key)
                    self.hits += 1
                    return self._data[key][0]
                event = self._inflight.get(key)
                if event is None:
                    event = self._inflight[key] = threading.Event()
                    self.misses += 1
                    break
            event.wait()  # another thread computes this key; then read its result (or compute, if not kept)
        try:
            value = compute()
            n = size(value) + key_bytes(key)
            if self.max_bytes and n <= self.max_entry_bytes:
                self._keep(key, value if keep is None else keep(value), n)
            return value
        finally:
            with self._lock:
                self._inflight.pop(key, None)
            event.set()

    def json(self, key: Hashable, compute: Callable[[], Any]) -> Body:
        """The answer ``compute()`` returns, as the JSON bytes the service sends (``encode_json``); those bytes
        are what is kept (``pinned``) and counted."""
        def body() -> Body:
            return encode_json(compute())

        return self.get(key, body, len, pinned)

    def _keep(self, key: Hashable, value: Any, n: int) -> None:
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            self._data[key] = (value, n)
            self.bytes += n
            while self.bytes > self.max_bytes or len(self._data) > self.max_entries:
                _, (_, m) = self._data.popitem(last=False)
                self.bytes -= m

    def __len__(self) -> int:
        return len(self._data)


def json_response(body: Body) -> Any:
    """A JSON answer's bytes (``AnswerCache.json``) as the response: FastAPI would run ``jsonable_encoder`` and
    ``json.dumps`` over the object on every request (1.7 ms for the detail of a 100k-document run)."""
    from fastapi.responses import Response

    return Response(body, media_type="application/json")


def detail_key(run: Path) -> tuple[Any, ...]:
    return ("detail", run_key(run))


def mixture_key(run: Path) -> tuple[Any, ...]:
    from curation.service.mixture import CMR_FIT

    return ("mixture", run_key(run, CMR_FIT))


def drops_key(run: Path, *params: Any) -> tuple[Any, ...]:
    return ("drops", run_key(run), *params)


def detail_json(cache: AnswerCache, run: Path, limits: Any, opener: Any = None) -> Body:
    """``views.run_detail`` (funnel, reasons, domains, a histogram per score column) once per run, as JSON bytes;
    ``opener`` (``views.RunOpener``) defaults to a new sandbox."""
    from curation.service import views

    return cache.json(detail_key(run), lambda: views.run_detail(run, limits, opener or views.open_run))


def mixture_json(cache: AnswerCache, run: Path, limits: Any) -> Body:
    """The mixture view once per run and CMR fit file, as JSON bytes."""
    from curation.service.mixture import mixture

    return cache.json(mixture_key(run), lambda: mixture(run, limits))


def drops_json(cache: AnswerCache, run: Path, limits: Any, opener: Any, stage: str | None, reason: str | None,
               domain: str | None, source: str | None, offset: int, limit: int) -> Body:
    """A drops page, cached as JSON bytes; a page not seen yet is sliced from the filter's ``views.drop_order``
    (read once per run and filter, kept while it fits the bound), so it costs one read of its own rows and no
    sort."""
    from curation.service import views

    key = run_key(run)

    def page() -> dict[str, Any]:
        order = cache.get(("drop_order", key, stage, reason, domain, source),
                          lambda: views.drop_order(run, limits, stage, reason, domain, source, opener), approx_bytes)
        return views.drops(run, limits, stage, reason, domain, source, offset, limit, opener, order)

    return cache.json(drops_key(run, stage, reason, domain, source, offset, limit), page)


def decode(body: Body) -> Any:
    """A JSON answer's bytes as the object (``json.loads`` takes no memoryview: a kept one is copied first)."""
    return json.loads(bytes(body))


# The pages render from objects: decoded from the same bytes the API sends, so a page shows what the API answers
# whether the answer came from the cache or not.

def cached_detail(cache: AnswerCache, run: Path, limits: Any, opener: Any = None) -> dict[str, Any]:
    """``detail_json`` decoded."""
    return decode(detail_json(cache, run, limits, opener))


def cached_mixture(cache: AnswerCache, run: Path, limits: Any) -> dict[str, Any]:
    """``mixture_json`` decoded."""
    return decode(mixture_json(cache, run, limits))


def cached_drops(cache: AnswerCache, run: Path, limits: Any, opener: Any, stage: str | None, reason: str | None,
                 domain: str | None, source: str | None, offset: int, limit: int) -> dict[str, Any]:
    """``drops_json`` decoded."""
    return decode(drops_json(cache, run, limits, opener, stage, reason, domain, source, offset, limit))
