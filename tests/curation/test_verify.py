"""`curate verify`: a run directory is exactly what its manifest says, or each difference is named.

Also the containment rule every manifest reader uses (``curation.io.manifest.safe_shard_path``).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from curation.cli import app
from curation.io.manifest import safe_shard_path
from curation.verify import verify_run
from tests.conftest import PROSE, pipeline_dict, write_jsonl
from tests.curation.executors.runs import run_pipeline


def _corpus(d: Path) -> list[str]:
    write_jsonl(d / "a.jsonl", [{"id": f"a{i}", "text": PROSE[i % 3] + f" Line {i}.", "domain": "web"}
                                for i in range(10)] + ['{"text": broken'])
    write_jsonl(d / "b.jsonl", [{"id": f"b{i}", "text": PROSE[i % 3] + f" Line {i}.", "domain": "books"}
                                for i in range(6)] + [{"id": "short", "text": "tiny"}])
    return [str(d / "*.jsonl")]


@pytest.fixture(scope="module")
def golden_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quickstart-like tiny run: a filter, a global dedup (two passes), several shards per task,
    decisions and a quarantined line."""
    base = tmp_path_factory.mktemp("verify")
    out = base / "run"
    data = pipeline_dict(_corpus(base / "in"), out, target_shard_bytes=1024)  # a shard per batch of 4
    data["input"]["max_malformed_fraction"] = 0.5
    run_pipeline(data)
    return out


@pytest.fixture
def run(golden_run: Path, tmp_path: Path) -> Path:
    """A private copy of the golden run that a test may tamper with."""
    return Path(shutil.copytree(golden_run, tmp_path / "run"))


def curate_verify(path: str | Path) -> Any:
    return CliRunner().invoke(app, ["verify", str(path)])


def _manifest(run: Path) -> dict[str, Any]:
    return json.loads((run / "manifest.json").read_text())


def _edit_manifest(run: Path, fn: Callable[[dict[str, Any]], None]) -> None:
    m = _manifest(run)
    fn(m)
    (run / "manifest.json").write_text(json.dumps(m))


def test_clean_run_verifies_ok(golden_run: Path) -> None:
    m = _manifest(golden_run)
    assert len(m["shards"]) >= 3 and m["decisions"] and m["quarantine"]  # the fixture covers every list
    r = curate_verify(golden_run)
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"OK {golden_run}: {len(m['shards'])} shards ")
    # 2 passes x 2 tasks + 1 global-stage marker
    assert f"({m['totals']['docs_out']} rows" in lines[0] and "5 markers agree" in lines[0]


def _first_shard(run: Path) -> str:
    return _manifest(run)["shards"][0]["path"]


def _flip_byte(run: Path) -> str:
    p = run / _first_shard(run)
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))
    return rf"{_first_shard(run)}: sha256 [0-9a-f]{{16}}\.\. differs from manifest.json [0-9a-f]{{16}}\.\."


def _truncate(run: Path) -> str:
    p = run / _first_shard(run)
    size = p.stat().st_size
    p.write_bytes(p.read_bytes()[: size // 2])
    return rf"{_first_shard(run)}: size {size // 2} bytes, manifest.json says {size}"


def _delete(run: Path) -> str:
    (run / _first_shard(run)).unlink()
    return rf"{_first_shard(run)}: missing \(manifest.json lists it\)"


def _edit_sha(run: Path) -> str:
    _edit_manifest(run, lambda m: m["shards"][0].update(sha256="0" * 64))
    return rf"{_first_shard(run)}: sha256 [0-9a-f]{{16}}\.\. differs from manifest.json 0000000000000000\.\."


def _dotdot(run: Path) -> str:
    (run.parent / "outside.parquet").write_bytes((run / _first_shard(run)).read_bytes())
    _edit_manifest(run, lambda m: m["shards"][0].update(path="../outside.parquet"))
    return (rf"^MISMATCH {re.escape(str(run))}/manifest.json: unsafe path '\.\./outside\.parquet': "
            r"empty, '\.' or '\.\.' component")


def _absolute(run: Path) -> str:
    _edit_manifest(run, lambda m: m["shards"][0].update(path=str(run / _first_shard(run))))
    return rf"^MISMATCH {re.escape(str(run))}/manifest.json: unsafe path '/.*': absolute path"


def _extra_file(run: Path) -> str:
    (run / "shards" / "99999-000.parquet").write_bytes(b"PAR1")
    return r"shards/99999-000.parquet: unexpected file \(not listed in manifest.json shards\)"


def _missing_marker(run: Path) -> str:
    (run / "_markers" / "seg1" / "00001.json").unlink()
    return r"_markers/seg1/00001.json: missing"


def _edit_marker(run: Path, rel: str, edit: Callable[[dict], object]) -> None:
    m = json.loads((run / rel).read_text())
    edit(m)
    (run / rel).write_text(json.dumps(m))


def _malformed_marker(run: Path) -> str:
    _edit_marker(run, "_markers/seg0/00001.json", lambda m: m.update(docs_out="3"))
    return r"_markers/seg0/00001.json: malformed marker \(TypeError: 'docs_out' must be an integer, got '3'\)"


def _misplaced_marker(run: Path) -> str:  # a marker copied over another task's: its counts would count twice
    (run / "_markers/seg1/00001.json").write_bytes((run / "_markers/seg1/00000.json").read_bytes())
    return r"_markers/seg1/00001.json: malformed marker \(it says pass 1 task 0\)"


def _missing_global_marker(run: Path) -> str:
    (run / "_markers" / "global-stage1.json").unlink()
    return r"_markers/global-stage1.json: missing"


def _edited_global_stages(run: Path) -> str:
    assert _manifest(run)["global_stages"] == [1]  # the fixture's dedup stage: two passes
    _edit_manifest(run, lambda m: m.update(global_stages=[7]))
    return r"manifest.json: global_stages: expected the sorted indices"


def _edited_rows(run: Path) -> str:
    _edit_manifest(run, lambda m: m["shards"][0].update(rows=m["shards"][0]["rows"] + 1))
    return rf"{_first_shard(run)}: \d+ rows, manifest.json says \d+"


def _edited_total(run: Path) -> str:
    _edit_manifest(run, lambda m: m["totals"].update(docs_out=m["totals"]["docs_out"] + 1))
    return r"manifest.json: totals.docs_out \d+ != \d+ from the task markers"


def _dropped_shard_entry(run: Path) -> str:
    first = _first_shard(run)
    _edit_manifest(run, lambda m: m["shards"].pop(0))
    return rf"{first}: unexpected file \(not listed in manifest.json shards\)"


def _missing_decisions(run: Path) -> str:
    rel = _manifest(run)["decisions"][0]
    (run / rel).unlink()
    return rf"{rel}: listed in manifest.json decisions but missing"


@pytest.mark.parametrize("tamper", [_flip_byte, _truncate, _delete, _edit_sha, _dotdot, _absolute, _extra_file,
                                    _missing_marker, _malformed_marker, _misplaced_marker, _missing_global_marker,
                                    _edited_global_stages, _edited_rows,
                                    _edited_total,
                                    _dropped_shard_entry, _missing_decisions])
def test_each_mismatch_is_named_on_its_own_line(run: Path, tamper: Callable[[Path], str]) -> None:
    expected = tamper(run)
    r = curate_verify(run)
    assert r.exit_code == 1, r.output
    lines = r.output.strip().splitlines()
    assert lines[-1] == f"FAILED {run}: {len(lines) - 1} problems"
    assert all(line.startswith("MISMATCH ") for line in lines[:-1])
    pattern = expected if expected.startswith("^") else "^MISMATCH " + expected
    assert any(re.search(pattern, line) for line in lines[:-1]), r.output


def test_not_a_run_exits_2(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "empty", tmp_path / "nowhere"):
        r = curate_verify(path)
        assert r.exit_code == 2 and "is not a run directory" in r.output


def test_incomplete_run_is_named(run: Path) -> None:
    (run / "manifest.json").unlink()
    r = curate_verify(run)
    assert r.exit_code == 1 and "manifest.json: missing: the run is incomplete" in r.output


def test_corrupt_manifest_is_named(run: Path) -> None:
    (run / "manifest.json").write_text("{not json")
    r = curate_verify(run)
    assert r.exit_code == 1 and "MISMATCH manifest.json: unreadable (JSONDecodeError" in r.output


def test_unsafe_shard_is_never_opened(run: Path) -> None:
    """An unsafe entry is refused before any read: a FIFO outside the run would block a reader forever."""
    import os

    fifo = run.parent / "fifo"
    os.mkfifo(fifo)
    _edit_manifest(run, lambda m: m["shards"][0].update(path="../fifo"))
    report = verify_run(run)
    assert any("unsafe path '../fifo'" in p for p in report.problems)


# -- the containment helper ------------------------------------------------------------------------

@pytest.mark.parametrize("rel", ["../x.parquet", "shards/../../x", "/etc/passwd", "~/x", "shards\\x.parquet",
                                 "s3://other-bucket/x.parquet", "file:///etc/passwd", "C:x", "", "shards//x",
                                 "./shards/x", "shards/.", "a\0b"])
def test_safe_shard_path_refuses(tmp_path: Path, rel: str) -> None:
    with pytest.raises(ValueError, match=r"manifest\.json: unsafe path"):
        safe_shard_path(tmp_path, rel)
    with pytest.raises(ValueError, match=r"s3://bucket/run/manifest\.json: unsafe path"):
        safe_shard_path("s3://bucket/run", rel)


def test_safe_shard_path_accepts_plain_relative_paths(tmp_path: Path) -> None:
    rel = "shards/00000-000.parquet"
    assert safe_shard_path(tmp_path, rel) == str(tmp_path.resolve() / rel)
    assert safe_shard_path("s3://bucket/run/", "shards/a.parquet") == "s3://bucket/run/shards/a.parquet"
    with pytest.raises(ValueError, match="not a non-empty string"):
        safe_shard_path(tmp_path, None)


def test_symlink_out_of_the_run_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "out"
    (tmp_path / "out-evil").mkdir()  # the sibling-prefix case: /x/out-evil is not inside /x/out
    (tmp_path / "out-evil" / "s.parquet").write_bytes(b"x")
    run.mkdir()
    (run / "shards").symlink_to(tmp_path / "out-evil")
    with pytest.raises(ValueError, match="resolves outside the run"):
        safe_shard_path(run, "shards/s.parquet")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab./\\:~%\0 ")), max_size=12))
def test_safe_shard_path_stays_inside_the_run(rel: str) -> None:
    root = Path("/srv/runs/r1")
    try:
        full = safe_shard_path(root, rel)
    except ValueError:
        return
    assert Path(full).parent.resolve().is_relative_to(root) and ".." not in Path(full).parts
    assert safe_shard_path("s3://bucket/r1", rel).startswith("s3://bucket/r1/")


# -- object-store runs ------------------------------------------------------------------------------

from tests.curation.io.test_object_store import s3  # noqa: E402,F401  (the moto S3 server fixture)


@pytest.mark.slow
def test_s3_run_verifies_and_mismatches_are_named(s3: Any, tmp_path: Path) -> None:
    url = "s3://runs/verify-me"
    run_pipeline(pipeline_dict(_corpus(tmp_path / "in"), tmp_path / "unused", target_shard_bytes=1024)
                 | {"output": {"dir": url, "token_counter": "whitespace", "target_shard_bytes": 1024}})
    r = curate_verify(url)
    assert r.exit_code == 0 and r.output.startswith(f"OK {url}: "), r.output
    m = json.loads(s3.cat("runs/verify-me/manifest.json"))
    first = m["shards"][0]["path"]
    s3.pipe(f"runs/verify-me/{first}", b"PAR1 not the shard")
    s3.pipe("runs/verify-me/shards/zz-extra.parquet", b"x")
    s3.pipe("runs/other-run/x.parquet", b"x")
    m["shards"][1]["path"] = "../other-run/x.parquet"
    s3.pipe("runs/verify-me/manifest.json", json.dumps(m).encode())
    r = curate_verify(url)
    assert r.exit_code == 1, r.output
    assert f"MISMATCH {first}: size 18 bytes, manifest.json says {m['shards'][0]['bytes']}" in r.output
    assert "MISMATCH shards/zz-extra.parquet: unexpected file" in r.output
    assert f"MISMATCH {url}/manifest.json: unsafe path '../other-run/x.parquet'" in r.output
