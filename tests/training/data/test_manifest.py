"""Manifests are untrusted: shard paths stay inside the run, sizes (and optionally sha256) are
checked, a run without shards is a clear error. Runs are copies of a real curation run with the
manifest edited, plus one run on fsspec's in-memory object store for the prefix rule."""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import training.data.manifest as training_manifest
from curation.errors import CurationError
from curation.io.manifest import ManifestError, RunManifest
from curation.io.manifest import unsafe_reason as check_relative
from training.data.loader import LoaderConfig, MixtureLoader
from training.data.manifest import run_shards

RATIOS = {"python_docs": 0.5, "code": 0.3, "license": 0.2}


def cfg(run: Path | str, **kw: Any) -> LoaderConfig:
    return LoaderConfig(runs=[str(run)], ratios=kw.pop("ratios", RATIOS), seq_len=32, batch_size=2, **kw)


@pytest.fixture
def run(sample_run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(sample_run, out)
    return out


def edit(run: Path, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    manifest = json.loads((run / "manifest.json").read_text())
    change(manifest)
    (run / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def test_the_copied_run_loads(run: Path) -> None:
    """Guards the tests below: the unedited copy is a valid run with several checked shards."""
    loader = MixtureLoader(cfg(run, verify_hashes=True))
    loader.next_batch()
    assert len(run_shards(str(run))[0]) >= 2


def test_the_loader_reads_curations_typed_manifest(run: Path) -> None:
    """One reader: the loader's shards are the entries of curation's ``RunManifest``, located inside the run, and
    its fingerprint is that of the manifest's bytes (what a resumed loader compares)."""
    shards, fingerprint = run_shards(str(run))
    assert [s.entry for s in shards] == RunManifest.read(run).shards
    assert [s.path for s in shards] == [str(run.resolve() / s.entry.path) for s in shards]
    assert fingerprint == hashlib.sha256((run / "manifest.json").read_bytes()).hexdigest()[:16]
    assert training_manifest.ManifestError is ManifestError  # one error type, curation's


def test_a_path_escaping_the_run_is_refused_with_curations_error_naming_the_file(run: Path) -> None:
    """Curation's ``ManifestError`` (a ``CurationError``: ``train`` reports it in one line, exit 2), naming the
    manifest, the entry once and why."""
    edit(run, lambda m: m["shards"][1].update(path="shards/../../../etc/passwd"))
    with pytest.raises(ManifestError) as e:
        MixtureLoader(cfg(run))
    assert isinstance(e.value, CurationError)
    assert str(e.value) == (f"{run / 'manifest.json'}: shard 1 ('shards/../../../etc/passwd'): refused: the path "
                            "contains '..'; shard paths must be plain relative paths inside the run")


@pytest.mark.parametrize(("corrupt", "why"), [
    (lambda p: p.write_text('{"shards": ['), r"not a valid manifest \(Expecting value"),
    (lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "stages": None})),
     r"not a valid manifest \(TypeError: "),
    (lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "shards": {}})),
     "'shards' must be a list of shard entries"),
])
def test_a_corrupt_manifest_is_refused_naming_the_file(run: Path, corrupt: Callable[[Path], Any], why: str) -> None:
    corrupt(run / "manifest.json")
    with pytest.raises(ManifestError, match=rf"^{re.escape(str(run / 'manifest.json'))}: {why}"):
        MixtureLoader(cfg(run))


def test_a_manifest_of_another_version_is_refused_naming_it(run: Path) -> None:
    """The loader reads manifests through curation's one reader: one version check, the one message."""
    edit(run, lambda m: m.update(schema_version=0))
    with pytest.raises(ManifestError, match=rf"^{re.escape(str(run / 'manifest.json'))}: manifest written by another "
                                            r"version of this project \(schema_version 0\); this version reads only "
                                            r"schema_version 1: rerun the command that wrote it"):
        MixtureLoader(cfg(run))


def test_a_shard_outside_the_run_is_refused_even_if_it_is_valid(run: Path, tmp_path: Path) -> None:
    """The old loader read any path the manifest named; here a perfectly readable shard outside the run."""
    first = json.loads((run / "manifest.json").read_text())["shards"][0]
    outside = tmp_path / "elsewhere" / "stolen.parquet"
    outside.parent.mkdir()
    shutil.copy(run / first["path"], outside)
    for path in (str(outside), "../elsewhere/stolen.parquet", "shards/../../elsewhere/stolen.parquet"):
        edit(run, lambda m, p=path: m["shards"][0].update(path=p))
        refused = r"manifest.json: shard 0 .*refused: the path (is absolute|contains '\.\.')"
        with pytest.raises(ManifestError, match=refused):
            MixtureLoader(cfg(run))


@pytest.mark.parametrize(("path", "why"), [
    ("/etc/passwd", "is absolute"),
    ("..", r"contains '\.\.'"),
    ("shards\\..\\..\\x.parquet", "contains a backslash"),
    ("C:/x.parquet", "drive letter"),
    ("s3://other-bucket/x.parquet", "URL scheme"),
    ("file:///etc/passwd", "URL scheme"),
    ("", "not a non-empty string"),
    (None, "not a non-empty string"),
])
def test_non_plain_shard_paths_are_refused(run: Path, path: object, why: str) -> None:
    edit(run, lambda m: m["shards"][1].update(path=path))
    with pytest.raises(ManifestError, match=rf"shard 1 .*{why}"):
        MixtureLoader(cfg(run))


def test_a_symlink_out_of_the_run_is_refused(run: Path, tmp_path: Path) -> None:
    first = json.loads((run / "manifest.json").read_text())["shards"][0]
    target = tmp_path / "outside.parquet"
    shutil.copy(run / first["path"], target)
    os.symlink(target, run / "shards-link.parquet")
    edit(run, lambda m: m["shards"][0].update(path="shards-link.parquet"))
    with pytest.raises(ManifestError, match=r"shard 0 .*resolves to .*outside.parquet, outside the run directory"):
        MixtureLoader(cfg(run))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "b.parquet", "..", ".", "", "/", "\\", "c:", "s3:", "~"]), max_size=6))
def test_accepted_relative_paths_never_leave_the_root(parts: list[str]) -> None:
    rel = "/".join(parts)
    if check_relative(rel) is None:
        assert posixpath.normpath(posixpath.join("/run", rel)).startswith("/run")


def test_size_mismatch_names_the_shard_and_both_sizes(run: Path) -> None:
    m = edit(run, lambda m: m["shards"][1].update(bytes=m["shards"][1]["bytes"] + 1))
    size = m["shards"][1]["bytes"] - 1
    expected = rf"shard 1 .*size mismatch: manifest says {size + 1} bytes, .* has {size}$"
    with pytest.raises(ManifestError, match=expected):
        MixtureLoader(cfg(run))


def test_a_shard_replaced_after_the_index_is_built_is_caught_on_open(run: Path) -> None:
    loader = MixtureLoader(cfg(run, ratios={"python_docs": 1.0}))
    for shard in run_shards(str(run))[0]:
        with open(shard.path, "ab") as fh:
            fh.write(b"appended")
    with pytest.raises(ManifestError, match=r"size mismatch: manifest says \d+ bytes, .* has \d+"):
        loader.next_batch()


def test_sha256_is_checked_with_verify_hashes(run: Path) -> None:
    """Same size, different bytes: only the hash tells (on by default; see tests/security/test_run_files.py)."""
    shard = run_shards(str(run))[0][0]
    data = bytearray(Path(shard.path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    Path(shard.path).write_bytes(bytes(data))
    expected = rf"shard 0 .*sha256 mismatch: manifest says {shard.entry.sha256}, .* has [0-9a-f]{{64}}"
    with pytest.raises(ManifestError, match=expected):
        MixtureLoader(cfg(run, verify_hashes=True))


def test_missing_or_malformed_fields_are_named(run: Path) -> None:
    edit(run, lambda m: m["shards"][0].pop("bytes"))
    with pytest.raises(ManifestError, match=r"shard 0 .*'bytes' must be a non-negative integer, got None"):
        MixtureLoader(cfg(run))
    edit(run, lambda m: m["shards"][0].update(bytes=1, sha256="XYZ"))
    with pytest.raises(ManifestError, match=r"shard 0 .*'sha256' must be 64 lowercase hex digits"):
        MixtureLoader(cfg(run))


def test_rows_mismatch_is_named(run: Path) -> None:
    m = edit(run, lambda m: m["shards"][0].update(rows=m["shards"][0]["rows"] + 5))
    with pytest.raises(ManifestError, match=rf"shard 0 .*manifest says {m['shards'][0]['rows']} rows"):
        MixtureLoader(cfg(run))


def test_a_run_with_no_shards_is_a_clear_error(run: Path) -> None:
    """What curation writes when every document was dropped: no shard entries, zero docs out."""
    def keep_nothing(m: dict[str, Any]) -> None:
        m["shards"], m["domains"] = [], {}
        m["totals"]["docs_out"] = 0
    edit(run, keep_nothing)
    with pytest.raises(ManifestError, match=rf"run {re.escape(str(run))} has no shards"):
        MixtureLoader(cfg(run))


def test_object_store_run_paths_stay_under_the_prefix(run: Path) -> None:
    """A run on an fsspec object store (in-memory here): loads, sizes checked, '..' refused."""
    import fsspec

    fs = fsspec.filesystem("memory")
    for f in run.rglob("*"):
        if f.is_file():
            fs.pipe(f"/bucket/run/{f.relative_to(run).as_posix()}", f.read_bytes())
    try:
        url = "memory://bucket/run"
        MixtureLoader(cfg(url, verify_hashes=True)).next_batch()
        manifest = json.loads(fs.cat("/bucket/run/manifest.json"))
        manifest["shards"][0]["bytes"] += 3
        fs.pipe("/bucket/run/manifest.json", json.dumps(manifest).encode())
        with pytest.raises(ManifestError, match=r"shard 0 .*size mismatch"):
            MixtureLoader(cfg(url))
        manifest["shards"][0]["path"] = "../other-run/" + manifest["shards"][0]["path"]
        fs.pipe("/bucket/run/manifest.json", json.dumps(manifest).encode())
        with pytest.raises(ManifestError, match=r"shard 0 .*contains '\.\.'"):
            MixtureLoader(cfg(url))
    finally:
        fs.rm("/bucket", recursive=True)
