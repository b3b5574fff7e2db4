"""The answer cache of finished runs: repeated questions are answered from it, a replaced run is not, and a
burst of identical misses computes once."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import httpx
import pytest

from curation.service.app import create_app
from curation.service.cache import AnswerCache
from tests.conftest import write_jsonl
from tests.curation.executors.runs import run_pipeline
from tests.curation.service.conftest import make_settings, serving


def _run(tmp: Path, out: Path, texts: list[str]) -> None:
    write_jsonl(tmp / "in" / out.name / "docs.jsonl",
                [{"id": f"d{i}", "domain": "web", "text": t} for i, t in enumerate(texts)])
    run_pipeline({"name": out.name, "input": {"paths": [str(tmp / "in" / out.name / "*.jsonl")]}, "stages": [],
                  "output": {"dir": str(out), "token_counter": "whitespace"}, "executor": {"kind": "local"}})


def test_repeated_answers_come_from_the_cache_and_a_replaced_run_is_read_again(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    _run(tmp_path, root / "r", ["one two three", "four five"])
    app = create_app(make_settings(root, tmp_path))
    cache: AnswerCache = app.state.cache
    with serving(app) as url:
        first = httpx.get(url + "/api/runs/r", timeout=30).json()
        assert first["totals"]["docs_out"] == 2 and (cache.hits, cache.misses) == (0, 1)
        assert httpx.get(url + "/api/runs/r", timeout=30).json() == first and cache.hits == 1
        q = {"sql": "SELECT count(*) AS n FROM docs"}
        assert httpx.post(url + "/api/runs/r/query", json=q, timeout=30).json()["rows"] == [[2]]
        assert httpx.post(url + "/api/runs/r/query", json=q, timeout=30).json()["rows"] == [[2]]
        assert cache.hits == 2
        # The run directory replaced by another run (a new manifest): the old answers are not served.
        other = tmp_path / "other"
        _run(tmp_path, other, ["alpha beta", "gamma", "delta epsilon zeta"])
        (root / "r").rename(tmp_path / "old")
        other.rename(root / "r")
        os.utime(root / "r" / "manifest.json", ns=(time.time_ns(), time.time_ns() + 1))
        assert httpx.get(url + "/api/runs/r", timeout=30).json()["totals"]["docs_out"] == 3
        assert httpx.post(url + "/api/runs/r/query", json=q, timeout=30).json()["rows"] == [[3]]


def test_concurrent_misses_of_one_key_compute_once_and_errors_are_not_cached() -> None:
    cache = AnswerCache()
    calls: list[int] = []
    gate = threading.Event()

    def slow() -> int:
        calls.append(1)
        gate.wait(5)
        return 42

    out: list[int] = []
    threads = [threading.Thread(target=lambda: out.append(cache.get("k", slow))) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    gate.set()
    for t in threads:
        t.join(5)
    assert out == [42] * 8 and len(calls) == 1 and cache.misses == 1 and cache.hits == 7

    def boom() -> int:
        raise ValueError("bad query")

    with pytest.raises(ValueError):
        cache.get("e", boom)
    assert cache.get("e", lambda: 7) == 7  # the failure was not remembered


def test_big_answers_are_not_kept() -> None:
    cache = AnswerCache(max_rows=10)
    cache.get("big", lambda: list(range(11)), rows=len)
    cache.get("big", lambda: list(range(11)), rows=len)
    assert cache.misses == 2 and cache.hits == 0
    for i in range(3):
        cache.get(("lru", i), lambda: i)
    small = AnswerCache(max_entries=2)
    for i in range(3):
        small.get(i, lambda: i)
    small.get(0, lambda: -1)
    assert small.misses == 4  # 0 was evicted by 2


def test_a_kept_answer_is_encoded_once_and_as_fastapi_would() -> None:
    from fastapi.encoders import jsonable_encoder
    from fastapi.responses import JSONResponse

    from curation.service.cache import json_response

    cache = AnswerCache(max_entries=2, max_rows=3)
    answer = {"rows": [[1, "é"], [2, None]], "x": (1.5, "a")}
    value = cache.get("k", lambda: answer, rows=lambda o: len(o["rows"]))
    encoded: list[int] = []

    def encode(v: object) -> bytes:
        encoded.append(1)
        return JSONResponse(jsonable_encoder(v)).body

    assert cache.encoded("k", value, encode) == cache.encoded("k", value, encode) == \
        b'{"rows":[[1,"\xc3\xa9"],[2,null]],"x":[1.5,"a"]}'
    assert len(encoded) == 1 and (cache.hits, cache.misses) == (0, 1)
    r = json_response(cache, "k", value)
    assert r.body == JSONResponse(jsonable_encoder(answer)).body and r.media_type == "application/json"
    # An answer that was not kept (over max_rows) is encoded on every request, never served stale.
    big = cache.get("big", lambda: {"rows": [1, 2, 3, 4]}, rows=lambda o: len(o["rows"]))
    cache.encoded("big", big, encode)
    cache.encoded("big", big, encode)
    assert len(encoded) == 3
    # An evicted answer loses its bytes with it; the recomputed one is encoded again.
    cache.get("a", lambda: 1)
    cache.get("b", lambda: 2)
    assert "k" not in cache._encoded
    fresh = cache.get("k", lambda: {"rows": [], "x": 0}, rows=lambda o: len(o["rows"]))
    assert cache.encoded("k", fresh, encode) == b'{"rows":[],"x":0}' and len(encoded) == 4
