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
    threads = [threading.Thread(target=lambda: out.append(cache.get("k", slow, lambda _: 8))) for _ in range(8)]
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
        cache.get("e", boom, lambda _: 8)
    assert cache.get("e", lambda: 7, lambda _: 8) == 7  # the failure was not remembered


def test_big_answers_are_not_kept() -> None:
    cache = AnswerCache(max_bytes=40)  # an entry may count up to 10 bytes
    cache.get("big", lambda: b"x" * 10, len)  # 10 + the key's 3 bytes
    cache.get("big", lambda: b"x" * 10, len)
    assert cache.misses == 2 and cache.hits == 0 and cache.bytes == 0
    small = AnswerCache(max_entries=2)
    for i in range(3):
        small.get(i, lambda i=i: i, lambda _: 0)
    small.get(0, lambda: -1, lambda _: 0)
    assert small.misses == 4  # 0 was evicted by 2


def test_a_kept_answer_is_its_json_bytes_as_fastapi_would_send_them() -> None:
    from fastapi.encoders import jsonable_encoder
    from fastapi.responses import JSONResponse

    from curation.service.cache import json_response

    cache = AnswerCache(max_bytes=4 * 100)
    answer = {"rows": [[1, "é"], [2, None]], "x": (1.5, "a")}
    computed: list[int] = []

    def compute() -> dict[str, object]:
        computed.append(1)
        return answer

    body = cache.json("k", compute)
    assert body == b'{"rows":[[1,"\xc3\xa9"],[2,null]],"x":[1.5,"a"]}' == JSONResponse(jsonable_encoder(answer)).body
    assert cache.json("k", compute) is body and len(computed) == 1 and (cache.hits, cache.misses) == (1, 1)
    assert cache._data["k"] == (body, len(body) + 1) and cache.bytes == len(body) + 1  # the bytes are what is kept
    r = json_response(body)
    assert r.body == body and r.media_type == "application/json"
