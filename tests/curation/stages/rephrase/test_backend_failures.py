"""Rephrasing never loses data silently: a missing or refused key, backend errors over the allowed share, a
server that is down, and cache entries that belong to one endpoint; against the real OpenAI-protocol server."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from curation.errors import ConfigError, ShardError
from curation.rephrase.backends import BackendAuthError, BackendConfig
from curation.stages.rephrase.stage import Rephrase, RephraseConfig
from tests.conftest import PROSE, pipeline_dict, write_jsonl
from tests.curation.executors.runs import run_pipeline
from tests.curation.stages.rephrase.conftest import API_KEY
from tests.curation.stages.rephrase.test_rephrase import http, positioned, stage

TEXTS = [f"{PROSE[i % 3]} This is passage number {i}." for i in range(10)]


def sent(url: str) -> int:
    """Requests the test server accepted so far (past its key check)."""
    return int(httpx.get(url.removesuffix("/v1") + "/health", timeout=5).json()["requests"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rephrase_run(tmp_path: Path, backend: dict[str, Any], kind: str = "local") -> dict[str, Any]:
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": f"p{i}", "text": t} for i, t in enumerate(PROSE)])
    stages = [{"stage": "rephrase_v1", "templates": ["wrap_medium", "wrap_qa"],
               "backend": {"kind": "openai", "api_key_env": "TEST_OPENAI_KEY", **backend}}]
    return pipeline_dict([str(tmp_path / "in" / "*.jsonl")], tmp_path / "run", stages=stages, kind=kind)


def assert_not_committed(run: Path) -> None:
    assert not (run / "manifest.json").exists() and not list((run / "_markers").rglob("*.json"))


def test_a_named_key_that_is_not_set_fails_setup_naming_variable_and_host(openai_server: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_OPENAI_KEY", raising=False)
    # Building the stage (the driver's plan validation) needs no key; setup (on each worker) does.
    st = Rephrase(RephraseConfig(templates=["wrap_easy"], backend=http("echo", openai_server)))
    where = re.escape(f"host {socket.gethostname()}")
    with pytest.raises(ConfigError, match=rf"api_key_env names TEST_OPENAI_KEY, which is not set on {where}"):
        st.setup()
    monkeypatch.setenv("TEST_OPENAI_KEY", "")  # set but empty is as good as unset
    with pytest.raises(ConfigError, match="TEST_OPENAI_KEY, which is not set"):
        st.setup()
    # api_key_env: null asks for no key, so none is checked; this server wants one: its 401 is fatal.
    nokey = BackendConfig(kind="openai", model="echo", base_url=openai_server, api_key_env=None)
    with pytest.raises(BackendAuthError, match=r"HTTP 401 .*refused no key \(api_key_env: null\)"):
        stage(nokey, ["wrap_easy"]).process(positioned(PROSE[:1]))


def test_403_is_fatal_and_never_retried(openai_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_OPENAI_KEY", API_KEY)
    before = sent(openai_server)
    st = stage(http("forbidden", openai_server, concurrency=1, max_retries=4), ["wrap_easy"],
               max_backend_error_fraction=1.0)
    with pytest.raises(BackendAuthError, match=rf"rephrase_v1 on t \(documents d0\.\.\): HTTP 403 from "
                                               rf"{re.escape(openai_server)}/chat/completions"):
        st.process(positioned(TEXTS))
    # Only the first request: the worker that got the 403 stops the others itself. (Stopped only by the
    # caller's thread, a loaded CI machine saw its one worker send two more in between.)
    assert sent(openai_server) - before == 1


def test_key_problems_fail_the_run_and_a_rerun_with_the_key_redoes_the_shard(
        openai_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = rephrase_run(tmp_path, {"model": "echo", "base_url": openai_server})
    monkeypatch.delenv("TEST_OPENAI_KEY", raising=False)
    with pytest.raises(ConfigError, match="TEST_OPENAI_KEY, which is not set"):
        run_pipeline(data)
    assert_not_committed(tmp_path / "run")
    monkeypatch.setenv("TEST_OPENAI_KEY", "wrong")
    with pytest.raises(BackendAuthError, match=r"rephrase_v1 on a\.jsonl .*HTTP 401"):
        run_pipeline(data)
    assert_not_committed(tmp_path / "run")
    monkeypatch.setenv("TEST_OPENAI_KEY", API_KEY)
    res = run_pipeline(data)  # same run dir: the key is not part of the config, so this resumes it
    st = {s["name"]: s for s in res.manifest["stages"]}
    assert res.tasks_run == 1 and (st["rephrase_v1"]["in"], st["rephrase_v1"]["out"]) == (3, 9)
    assert st["rephrase_v1"]["dropped"] == {}


def test_backend_errors_within_the_fraction_drop_over_it_fail_the_batch(openai_server: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_OPENAI_KEY", API_KEY)
    texts = list(TEXTS)
    texts[4] += " FAIL"  # 'failsome' answers 500 to this one only: 1 rewrite of 10 is lost
    res = stage(http("failsome", openai_server, max_retries=0), ["wrap_easy"],
                max_backend_error_fraction=0.1).process(positioned(texts))
    assert res.reasons == ["rephrase_backend_error"] and res.dropped.column("id").to_pylist() == ["d4#wrap_easy"]
    # Over it, the requests still queued are not sent (counted as lost); the real error is named first.
    with pytest.raises(ShardError, match=r"\d+ of 10 rewrites in a batch of t \(documents d0\.\.d9\) failed at the "
                                         r"backend.*, over max_backend_error_fraction=0\.09; first errors: "
                                         r"d4#wrap_easy: BackendError: .*gave up after 1 attempts: .*HTTP 500"):
        stage(http("failsome", openai_server, max_retries=0), ["wrap_easy"],
              max_backend_error_fraction=0.09).process(positioned(texts))


def test_a_lost_batch_stops_sending_requests(openai_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_OPENAI_KEY", API_KEY)
    before = sent(openai_server)
    with pytest.raises(ShardError, match=r"10 of 10 rewrites .* \(9 not sent once the limit was passed\).*"
                                         r"first errors: d0#wrap_easy: BackendError: .*HTTP 500"):
        stage(http("fail", openai_server, max_retries=2, concurrency=1), ["wrap_easy"],
              max_backend_error_fraction=0.0).process(positioned(TEXTS))
    # d0's three attempts, and at most the first attempt of the request the worker took meanwhile (not 30).
    assert 3 <= sent(openai_server) - before <= 4


def test_a_server_down_for_the_whole_run_fails_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_OPENAI_KEY", "any")
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: connection refused
    data = rephrase_run(tmp_path, {"model": "echo", "base_url": url, "max_retries": 1, "backoff_s": 0.05})
    with pytest.raises(ShardError, match=rf"6 of 6 rewrites in a batch of a\.jsonl .*{re.escape(url)}: gave up "
                                         r"after 2 attempts: ConnectError"):
        run_pipeline(data)
    assert_not_committed(tmp_path / "run")


def test_cli_exits_non_zero_when_the_server_is_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml
    from typer.testing import CliRunner

    from curation.cli import app

    monkeypatch.setenv("TEST_OPENAI_KEY", "any")
    data = rephrase_run(tmp_path, {"model": "echo", "base_url": f"http://127.0.0.1:{free_port()}/v1",
                                   "max_retries": 0})
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(data))
    r = CliRunner().invoke(app, ["run", str(tmp_path / "p.yaml"), "--executor", "local"])
    assert r.exit_code == 2 and "max_backend_error_fraction" in r.output, r.output
    assert_not_committed(tmp_path / "run")


def test_cache_entries_belong_to_one_endpoint(openai_server: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_OPENAI_KEY", API_KEY)
    # The same server under another name stands in for a second server serving another 'echo'.
    other = openai_server.replace("127.0.0.1", "localhost")

    def cached_chunks(url: str) -> list[int]:
        kept = stage(http("echo", url), ["wrap_easy"], tmp_path / "cache").process(positioned(PROSE)).kept
        return [n for n in kept.column("rephrase_cached_chunks").to_pylist() if n is not None]

    assert cached_chunks(openai_server) == [0, 0, 0]
    before = sent(openai_server)
    assert cached_chunks(other) == [0, 0, 0] and sent(openai_server) - before == 3  # a miss: asked again
    assert cached_chunks(openai_server + "/") == [1, 1, 1]  # the same endpoint (a trailing slash is no other)


@pytest.mark.slow
def test_a_ray_worker_without_the_key_fails_naming_variable_and_node(openai_server: str, tmp_path: Path,
                                                                     request: pytest.FixtureRequest,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    monkeypatch.delenv("TEST_OPENAI_KEY", raising=False)
    if not ray.is_initialized():  # another test may have started Ray already (ray.data.llm does); reuse it then
        request.getfixturevalue("ray_cluster")
    # The driver has the key; the cluster's workers were started without it and the executor never forwards it.
    monkeypatch.setenv("TEST_OPENAI_KEY", API_KEY)
    data = rephrase_run(tmp_path, {"model": "echo", "base_url": openai_server}, kind="ray")
    with pytest.raises(ShardError, match=r"TEST_OPENAI_KEY, which is not set on host \S+ \(Ray node [0-9a-f]+\)"):
        run_pipeline(data)
    assert_not_committed(tmp_path / "run")
