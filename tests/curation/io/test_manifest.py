"""``read_manifest`` / ``shard_paths``: the one reader of a run's manifest, with errors naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curation.errors import ConfigError
from curation.io.manifest import (
    MANIFEST,
    ManifestError,
    NoManifestError,
    RecordKind,
    SchemaVersionError,
    check_schema,
    has_manifest,
    read_manifest,
    shard_paths,
)
from curation.schema import SCHEMA_VERSION

V = {"schema_version": SCHEMA_VERSION}  # what every manifest this version writes carries


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
                                       ('{"schema_version": 1, "shards": 3}',
                                        "field 'shards' is missing or not a list/object")])
def test_bad_manifest_names_the_file(tmp_path: Path, text: str, why: str) -> None:
    tmp_path.joinpath("manifest.json").write_text(text)
    with pytest.raises(ManifestError, match=rf"{tmp_path / 'manifest.json'}: {why}"):
        read_manifest(tmp_path)


def test_fields_are_checked_only_when_asked(tmp_path: Path) -> None:
    _write(tmp_path, {**V, "shards": [], "name": "x"})
    assert read_manifest(tmp_path)["name"] == "x"
    with pytest.raises(ManifestError, match="field 'stages' is missing"):
        read_manifest(tmp_path, fields=("shards", "stages"))
    _write(tmp_path, {**V, "name": "no shards"})
    assert read_manifest(tmp_path, fields=())["name"] == "no shards"


def test_shard_paths_in_manifest_order_inside_the_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _write(run, {**V, "shards": [{"path": "shards/b.parquet"}, {"path": "shards/a.parquet"}]})
    base = run.resolve()
    assert shard_paths(run) == [str(base / "shards/b.parquet"), str(base / "shards/a.parquet")]
    _write(run, {**V, "shards": [{"path": "shards/a.parquet"}, {"path": "../outside.parquet"}]})
    with pytest.raises(ValueError, match=r"manifest.json: unsafe path '../outside.parquet'"):
        shard_paths(run)
    _write(run, {**V, "shards": ["shards/a.parquet"]})
    with pytest.raises(ManifestError, match=r"manifest.json: shard 0 is not an object"):
        shard_paths(run)


# -- the one version check (every record kind: tests/curation/io/test_versions.py) ----------------------------------

KIND = RecordKind("thing", 3, "make it again", required=("a",))


@pytest.mark.parametrize("record, found", [
    ({"a": 1}, "no schema_version"),
    ({"schema_version": 2, "a": 1}, "schema_version 2"),
    ({"schema_version": 4, "a": 1}, "schema_version 4"),  # a newer one is refused too
    ({"schema_version": "3", "a": 1}, "schema_version '3'"),
    ({"schema_version": 3}, "schema_version 3 without 'a'"),  # the number of this version, from before 'a' existed
    ([3], "not an object but list"),
])
def test_check_schema_refuses_every_other_record_with_one_message(record: object, found: str) -> None:
    with pytest.raises(SchemaVersionError) as e:
        check_schema(record, KIND, "/runs/r/thing.json")
    assert str(e.value) == (f"/runs/r/thing.json: thing written by another version of this project ({found}); "
                            "this version reads only schema_version 3: make it again")
    assert isinstance(e.value, ManifestError) and isinstance(e.value, ValueError)


def test_check_schema_returns_a_current_record_and_reads_its_own_key() -> None:
    record = {"schema_version": 3, "a": None, "more": 1}
    assert check_schema(record, KIND, "x") is record
    with pytest.raises(SchemaVersionError, match=r"\(schema_version True\)"):
        check_schema({"schema_version": True, "a": 1}, RecordKind("thing", 1, "-"), "x")  # True == 1, not a version
    fmt = RecordKind("index", 1, "rebuild it", key="format")
    assert check_schema({"format": 1}, fmt, "x") == {"format": 1}
    with pytest.raises(SchemaVersionError, match=r"^x: index written by another version of this project "
                                                 r"\(no format\); this version reads only format 1: rebuild it$"):
        check_schema({"schema_version": 1}, fmt, "x")


@pytest.mark.parametrize("manifest, found", [({"shards": []}, "no schema_version"),
                                             ({"schema_version": SCHEMA_VERSION - 1, "shards": []},
                                              f"schema_version {SCHEMA_VERSION - 1}")])
def test_a_manifest_of_another_version_is_refused_naming_the_file(tmp_path: Path, manifest: dict[str, object],
                                                                  found: str) -> None:
    _write(tmp_path, manifest)
    with pytest.raises(SchemaVersionError) as e:
        read_manifest(tmp_path, fields=())  # before any field is looked at: an older manifest's fields differ
    assert str(e.value) == (f"{tmp_path / 'manifest.json'}: manifest written by another version of this project "
                            f"({found}); this version reads only schema_version {SCHEMA_VERSION}: {MANIFEST.remedy}")
