"""``read_manifest`` / ``shard_paths``: the one reader of a run's manifest, with errors naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curation.errors import ConfigError
from curation.io.manifest import ManifestError, NoManifestError, has_manifest, read_manifest, shard_paths


def _write(run: Path, manifest: object) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "manifest.json").write_text(json.dumps(manifest))


def test_missing_manifest_names_the_run(tmp_path: Path) -> None:
    assert not has_manifest(tmp_path)
    with pytest.raises(NoManifestError, match=rf"{tmp_path} has no manifest.json: not a finished run") as e:
        read_manifest(tmp_path)
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, ConfigError)


@pytest.mark.parametrize("text, why", [("{not json", "not a valid manifest \\(Expecting"),
                                       ("[1, 2]", "not a valid manifest \\(not an object\\)"),
                                       ('{"shards": 3}', "field 'shards' is missing or not a list/object")])
def test_bad_manifest_names_the_file(tmp_path: Path, text: str, why: str) -> None:
    tmp_path.joinpath("manifest.json").write_text(text)
    with pytest.raises(ManifestError, match=rf"{tmp_path / 'manifest.json'}: {why}"):
        read_manifest(tmp_path)


def test_fields_are_checked_only_when_asked(tmp_path: Path) -> None:
    _write(tmp_path, {"shards": [], "name": "x"})
    assert read_manifest(tmp_path)["name"] == "x"
    with pytest.raises(ManifestError, match="field 'stages' is missing"):
        read_manifest(tmp_path, fields=("shards", "stages"))
    _write(tmp_path, {"name": "no shards"})
    assert read_manifest(tmp_path, fields=())["name"] == "no shards"


def test_shard_paths_in_manifest_order_inside_the_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _write(run, {"shards": [{"path": "shards/b.parquet"}, {"path": "shards/a.parquet"}]})
    base = run.resolve()
    assert shard_paths(run) == [str(base / "shards/b.parquet"), str(base / "shards/a.parquet")]
    _write(run, {"shards": [{"path": "shards/a.parquet"}, {"path": "../outside.parquet"}]})
    with pytest.raises(ValueError, match=r"manifest.json: unsafe path '../outside.parquet'"):
        shard_paths(run)
    _write(run, {"shards": ["shards/a.parquet"]})
    with pytest.raises(ManifestError, match=r"manifest.json: shard 0 is not an object"):
        shard_paths(run)
