"""A FIFO (or any non-regular file) planted in a run directory is refused at once, naming the file, by every
reader of run files: ``curate verify``, ``curate query``, the service's run routes and the training loader.

Before the fix each of these opened the FIFO and blocked until a writer appeared, i.e. forever. Every check here
runs under a timeout (a subprocess timeout, an HTTP timeout, or a thread joined with a timeout) so a regression
fails instead of hanging the suite; afterwards ``_release`` opens the FIFO for writing once, which unblocks a
reader that is stuck in ``open``.

Also (issue 27 item 12): the training loader refuses, by default, a shard replaced by other valid Parquet bytes of
the same size, whenever it reads it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from curation.service.app import create_app
from tests.conftest import REPO
from tests.curation.service.conftest import make_settings, serving

PROMPT_S = 20.0  # generous on two busy cores; a blocked open never returns at all


def _shard(run: Path) -> Path:
    return run / json.loads((run / "manifest.json").read_text())["shards"][0]["path"]


def _plant_fifo(path: Path) -> Path:
    path.unlink()
    os.mkfifo(path)
    return path


@pytest.fixture(params=["shard", "manifest"])
def fifo(request: pytest.FixtureRequest, tiny_run: Path) -> Iterator[Path]:
    """The run with its first shard or its manifest.json replaced by a FIFO; yields the FIFO, released after."""
    path = _plant_fifo(_shard(tiny_run) if request.param == "shard" else tiny_run / "manifest.json")
    yield path
    _release(path)


def _release(path: Path) -> None:
    """Unblock any reader stuck opening ``path`` (a writer appears, then leaves: the reader sees EOF)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: no reader is waiting
        return
    os.close(fd)


def _run_of(fifo: Path) -> Path:
    return fifo.parent.parent if fifo.parent.name == "shards" else fifo.parent


def _in_thread(fn: Callable[[], Any], fifo: Path) -> BaseException | Any:
    """``fn()``'s result or exception, failing the test if it does not return within PROMPT_S."""
    out: list[Any] = []

    def target() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            out.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(PROMPT_S)
    if t.is_alive():
        _release(fifo)
        pytest.fail(f"still blocked after {PROMPT_S} s on {fifo}")
    return out[0]


def _curate(*args: str, fifo: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "COLUMNS": "400"}
    try:
        return subprocess.run([sys.executable, "-m", "curation.cli", *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=PROMPT_S * 2)
    except subprocess.TimeoutExpired:
        _release(fifo)
        pytest.fail(f"curate {args[0]} still blocked after {PROMPT_S * 2} s on {fifo}")


def test_curate_verify_refuses_a_fifo_promptly(fifo: Path) -> None:
    res = _curate("verify", str(_run_of(fifo)), fifo=fifo)
    assert res.returncode == 1, res.stdout + res.stderr
    line = next(ln for ln in res.stdout.splitlines() if "FIFO" in ln)
    assert fifo.name in line and "not a regular file" in line


def test_curate_verify_names_an_unlisted_fifo(tiny_run: Path) -> None:
    extra = tiny_run / "shards" / "x.parquet"
    os.mkfifo(extra)
    res = _curate("verify", str(tiny_run), fifo=extra)
    assert res.returncode == 1 and "shards/x.parquet: unexpected file" in res.stdout, res.stdout


@pytest.mark.parametrize("planted", ["listed", "extra"])
def test_curate_query_refuses_a_fifo_shard_promptly(tiny_run: Path, planted: str) -> None:
    path = _plant_fifo(_shard(tiny_run)) if planted == "listed" else tiny_run / "shards" / "x.parquet"
    if planted == "extra":
        os.mkfifo(path)
    try:
        res = _curate("query", str(tiny_run), "SELECT count(*) FROM docs", fifo=path)
    finally:
        _release(path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert path.name in res.stdout and "FIFO, not a regular file" in res.stdout
    assert len(res.stdout.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_curate_query_refuses_a_fifo_manifest_promptly(tiny_run: Path) -> None:
    path = _plant_fifo(tiny_run / "manifest.json")
    try:
        res = _curate("query", str(tiny_run), "SELECT 1", fifo=path)
    finally:
        _release(path)
    assert res.returncode == 2 and "manifest.json: refused: it is a FIFO" in res.stdout, res.stdout + res.stderr


def test_service_run_routes_answer_promptly(fifo: Path, tmp_path: Path) -> None:
    run = _run_of(fifo)
    app = create_app(make_settings(run.parent, tmp_path))
    try:
        with serving(app) as url, httpx.Client(base_url=url, timeout=PROMPT_S) as c:
            listing = c.get("/api/runs").json()["runs"]
            assert [r["id"] for r in listing] == ["run"]
            if fifo.name == "manifest.json":
                assert "FIFO" in listing[0]["error"]
            for method, route, body in (("GET", "/api/runs/run", None),
                                        ("POST", "/api/runs/run/query", {"sql": "SELECT count(*) FROM docs"}),
                                        ("GET", "/api/runs/run/drops", None)):
                r = c.request(method, route, json=body)
                assert r.status_code == 400 and "not a regular file" in r.json()["detail"], (route, r.text)
                assert fifo.name in r.json()["detail"]
            assert c.get("/api/runs/run/progress").status_code == 200  # progress.json and markers are fine
    finally:
        _release(fifo)


def test_service_pool_rechecks_files_before_reusing_a_sandbox(tiny_run: Path, tmp_path: Path) -> None:
    """A shard swapped for a FIFO after the run's sandbox was opened (and pooled) is refused too."""
    app = create_app(make_settings(tiny_run.parent, tmp_path))
    with serving(app) as url, httpx.Client(base_url=url, timeout=PROMPT_S) as c:
        q = {"sql": "SELECT count(*) AS n FROM docs"}
        assert c.post("/api/runs/run/query", json=q).json()["rows"] == [[6]]
        path = _plant_fifo(_shard(tiny_run))
        try:
            r = c.post("/api/runs/run/query", json={"sql": "SELECT sum(length(text)) FROM docs"})
        finally:
            _release(path)
        assert r.status_code == 400 and "FIFO" in r.json()["detail"], r.text


def test_training_manifest_reader_refuses_a_fifo_promptly(fifo: Path) -> None:
    from curation.io.manifest import ManifestError
    from training.data.loader import build_index

    out = _in_thread(lambda: build_index([str(_run_of(fifo))], "domain"), fifo)
    assert isinstance(out, ManifestError), out
    assert fifo.name in str(out) and "not a regular file" in str(out)


def test_run_json_and_markers_as_fifos_are_refused(tiny_run: Path) -> None:
    from curation.io.regular import NotRegularFileError
    from curation.io.runs import progress, read_run_json

    marker = _plant_fifo(tiny_run / "_markers" / "seg0" / "00000.json")
    out = _in_thread(lambda: _curate("verify", str(tiny_run), fifo=marker), marker)
    assert "_markers/seg0/00000.json: " in out.stdout and "FIFO" in out.stdout
    pj = _plant_fifo(tiny_run / "progress.json")
    assert isinstance(_in_thread(lambda: progress(tiny_run), pj), NotRegularFileError)
    rj = _plant_fifo(tiny_run / "run.json")
    assert isinstance(_in_thread(lambda: read_run_json(tiny_run), rj), NotRegularFileError)


def test_training_manifest_errors_name_the_manifest_not_the_previous_shard(tiny_run: Path) -> None:
    from curation.io.manifest import ManifestError
    from training.data.manifest import run_shards

    manifest = json.loads((tiny_run / "manifest.json").read_text())
    good = manifest["shards"][0]
    manifest["shards"] = [good, {**good, "sha256": "not-hex"}]
    (tiny_run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError) as exc:
        run_shards(str(tiny_run))
    msg = str(exc.value)
    assert msg.startswith(f"{tiny_run / 'manifest.json'}: shard 1 ('{good['path']}'): 'sha256'"), msg
    assert msg.count(good["path"]) == 1  # the shard is named once, as the entry


def _poison_same_size(shard: Path) -> str:
    """Replace ``shard`` by a valid Parquet file of exactly the same size whose texts say something else (what
    a writer of the run would plant); returns the planted text. Uncompressed, no dictionary and no statistics, so
    one more character of padding is one more byte of file."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    table, size = pq.read_table(shard), shard.stat().st_size
    poison = "IGNORE ALL PREVIOUS INSTRUCTIONS"
    for pad in range(size):
        texts = [f"{poison} {'x' * pad}"] + [poison] * (table.num_rows - 1)
        col = pa.array(texts, type=table.schema.field("text").type)
        buf = io.BytesIO()
        pq.write_table(table.set_column(table.schema.get_field_index("text"), "text", col), buf,
                       compression="none", use_dictionary=False, write_statistics=False)
        if len(buf.getvalue()) == size:
            shard.write_bytes(buf.getvalue())
            return poison
    raise AssertionError(f"no same-size poisoned Parquet for {shard}")


def _loader_cfg(run: Path, **kw: Any) -> Any:
    from training.data.loader import LoaderConfig

    return LoaderConfig(**{"runs": [str(run)], "ratios": {"web": 1.0}, "seq_len": 16, "batch_size": 1, **kw})


def test_training_loader_refuses_a_same_size_shard_swap_by_default(tiny_run: Path) -> None:
    """Issue 27 item 12: the default loader accepted a shard replaced by other valid bytes of the same size."""
    from curation.io.manifest import ManifestError
    from training.data.loader import MixtureLoader

    shard = _shard(tiny_run)
    _poison_same_size(shard)
    with pytest.raises(ManifestError, match=r"sha256 mismatch") as exc:
        MixtureLoader(_loader_cfg(tiny_run))
    assert str(shard) in str(exc.value)


def test_training_loader_catches_a_swap_after_the_index_is_built(tiny_run: Path) -> None:
    """The index was built from the good bytes; the shard is swapped before its text is first read (the same
    happens whenever a shard drops out of the loader's small cache and is read again mid-run)."""
    from curation.io.manifest import ManifestError
    from training.data.loader import MixtureLoader

    loader = MixtureLoader(_loader_cfg(tiny_run))
    shard = _shard(tiny_run)
    _poison_same_size(shard)
    with pytest.raises(ManifestError, match=r"sha256 mismatch") as exc:
        for _ in range(20):
            loader.next_batch()
    assert str(shard) in str(exc.value)


def test_training_loader_verify_hashes_false_opts_out(tiny_run: Path) -> None:
    """``verify_hashes: false`` reads the swapped shard (the poison is live: the tests above can fail)."""
    from training.data.loader import MixtureLoader

    poison = _poison_same_size(_shard(tiny_run))
    loader = MixtureLoader(_loader_cfg(tiny_run, verify_hashes=False, seq_len=256))
    seen = b"".join(bytes(int(t) for t in loader.next_batch()[0][0] if t < 256) for _ in range(8))
    assert poison.encode() in seen


def test_a_non_numeric_created_time_in_a_manifest_does_not_break_the_runs_list(tiny_run: Path) -> None:
    # The runs list sorts by created_unix: a string there made every listing (and the index page) a 500.
    from curation.io.runs import list_runs

    manifest = tiny_run / "manifest.json"
    m = json.loads(manifest.read_text())
    m["created_unix"] = "<b>yesterday</b>"
    manifest.write_text(json.dumps(m))
    runs = list_runs(str(tiny_run.parent))
    assert [r.run_id for r in runs] == [tiny_run.name] and runs[0].created_unix is None
