"""``read_manifest`` / ``shard_paths``: the one reader of a run's manifest, with errors naming the file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from curation.errors import ConfigError
from curation.io.manifest import (
    MANIFEST,
    ManifestError,
    NoManifestError,
    RecordKind,
    RunManifest,
    SchemaVersionError,
    ShardEntry,
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
    entries = [ShardEntry(f"shards/{n}.parquet", 1, 1, "ab" * 32) for n in "ba"]
    _write(run, RunManifest(name="r", shards=entries).to_json())
    base = run.resolve()
    assert shard_paths(run, RunManifest.read(run)) == [str(base / "shards/b.parquet"), str(base / "shards/a.parquet")]
    (run / "shards").mkdir()
    (run / "shards" / "a.parquet").symlink_to(tmp_path / "outside.parquet")  # a plain path the record accepts
    with pytest.raises(ValueError, match=r"manifest.json: unsafe path 'shards/a.parquet': resolves outside the run"):
        shard_paths(run, RunManifest.read(run))


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


# -- the typed run records: TaskMarker, GlobalMarker, RunManifest and its one aggregation -----------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from curation.io.manifest import (  # noqa: E402
    GLOBAL_MARKER,
    TASK_MARKER,
    DomainCount,
    GlobalMarker,
    RunTotals,
    StageCount,
    TaskMarker,
)

SHA = "ab" * 32


def _marker(seg: int, task: int, n_in: int, n_out: int, *, domain: str = "web", node: str | None = None,
            quarantined: int = 0) -> TaskMarker:
    """A marker of pass ``seg`` whose one stage keeps ``n_out`` of ``n_in`` (the rest: reason ``short``)."""
    return TaskMarker(
        seg=seg, task=task, source=f"f{task}.jsonl", lines=n_in + 1, blank_lines=1, docs_read=n_in,
        bytes_in=100 * n_in, quarantined=quarantined,
        stages=[StageCount(seg, f"stage{seg}", n_in, n_out, {"short": n_in - n_out} if n_in > n_out else {})],
        docs_out=n_out, outputs=[ShardEntry(f"_work/seg{seg}/{task:05d}.parquet", n_out, 10 * n_out, SHA)],
        decisions=[f"decisions/seg{seg}-{task:05d}.parquet"],
        domains={domain: DomainCount(n_out, 50 * n_out, 12 * n_out)}, started_unix=1.5, seconds=0.25,
        cpu_seconds=0.2, stage_seconds={str(seg): 0.125}, node=node, index_seconds=0.01 if seg == 1 else None)


def test_task_marker_round_trips_exactly_as_written() -> None:
    m = _marker(1, 3, 10, 7, node="n1", quarantined=2)
    data = m.to_json()
    assert data[TASK_MARKER.key] == TASK_MARKER.version
    assert data["stages"] == [{"index": 1, "name": "stage1", "in": 10, "out": 7, "dropped": {"short": 3}}]
    assert data["outputs"] == [{"path": "_work/seg1/00003.parquet", "rows": 7, "bytes": 70, "sha256": SHA}]
    assert TaskMarker.from_json(json.loads(json.dumps(data))) == m
    assert TaskMarker.from_json(data).to_json() == data
    no_index = _marker(0, 0, 4, 4)
    assert "index_seconds" not in no_index.to_json()  # only the final pass writes its index rows
    assert TaskMarker.from_json(no_index.to_json()) == no_index


def test_task_marker_as_the_executor_writes_it_reads_back_byte_for_byte(tmp_path: Path) -> None:
    from curation.io.atomic import write_json

    m = _marker(0, 1, 5, 2)
    write_json(tmp_path / "m.json", m.to_json())
    raw = (tmp_path / "m.json").read_bytes()
    write_json(tmp_path / "again.json", TaskMarker.read(tmp_path / "m.json").to_json())
    assert (tmp_path / "again.json").read_bytes() == raw


@pytest.mark.parametrize("edit, error", [
    (lambda d: d.pop("stages"), KeyError),
    (lambda d: d.update(docs_out="7"), TypeError),
    (lambda d: d.update(lines=True), TypeError),
    (lambda d: d.update(node=3), TypeError),
    (lambda d: d["stages"][0].update(dropped=[]), TypeError),
])
def test_a_malformed_task_marker_is_refused(edit, error) -> None:  # type: ignore[no-untyped-def]
    data = _marker(0, 0, 3, 1).to_json()
    edit(data)
    with pytest.raises(error):
        TaskMarker.from_json(data)


def test_a_task_marker_of_another_version_is_refused_naming_the_file() -> None:
    data = {**_marker(0, 0, 3, 1).to_json(), TASK_MARKER.key: 0}
    with pytest.raises(SchemaVersionError, match=r"^_markers/seg0/00000\.json: task marker written by another"):
        TaskMarker.from_json(data, "_markers/seg0/00000.json")


def test_global_marker_round_trips() -> None:
    gm = GlobalMarker("near_dedup_v1", 0.5, [{"stage": "near_dedup_v1", "message": "m"}], {"against": ["r"]})
    data = gm.to_json()
    assert list(data) == [GLOBAL_MARKER.key, "stage", "seconds", "warnings", "report"]
    assert GlobalMarker.from_json(json.loads(json.dumps(data))) == gm


def test_counters_add() -> None:
    assert StageCount(2, "s", 5, 3, {"a": 1, "b": 1}) + StageCount(2, "s", 4, 1, {"b": 2, "c": 1}) == \
        StageCount(2, "s", 9, 4, {"a": 1, "b": 3, "c": 1})
    with pytest.raises(ValueError, match="stage 3 to those of stage 2"):
        StageCount(2, "s") + StageCount(3, "t")
    assert DomainCount(1, 10, 3) + DomainCount(2, 20, 5) == DomainCount(3, 30, 8)
    assert RunTotals(1, 2, 3, 4, 5, 6, 7) + RunTotals(10, 20, 30, 40, 50, 60, 70) == \
        RunTotals(11, 22, 33, 44, 55, 66, 77)


def test_aggregate_of_hand_built_markers_gives_the_manifest_counters() -> None:
    markers = [_marker(0, 0, 10, 8, node="n1"), _marker(0, 1, 6, 6, quarantined=2),
               _marker(1, 0, 8, 5, domain="code", node="n1"), _marker(1, 1, 6, 4)]
    gms = [(0, GlobalMarker("exact_dedup_v1", 0.1, [{"w": 1}], {})),
           (0, GlobalMarker("exact_dedup_v1", 0.1, [], {"against": ["old"], "removed": 3}))]
    m = RunManifest.aggregate(markers, 2, gms, name="run", fingerprint="f", totals=RunTotals(2, 1600))
    assert m.totals == RunTotals(input_files=2, input_bytes=1600, lines=18, blank_lines=2, quarantined=2,
                                 docs_read=16, docs_out=9)
    assert [s.to_json() for s in m.stages.values()] == [
        {"index": 0, "name": "stage0", "in": 16, "out": 14, "dropped": {"short": 2}},
        {"index": 1, "name": "stage1", "in": 14, "out": 9, "dropped": {"short": 5}}]
    assert m.domains == {"code": DomainCount(5, 250, 60), "web": DomainCount(4, 200, 48)}
    assert [s.path for s in m.shards] == ["_work/seg1/00000.parquet", "_work/seg1/00001.parquet"]
    assert m.decisions == [f"decisions/seg{s}-{t:05d}.parquet" for s in (0, 1) for t in (0, 1)]
    assert m.quarantine == ["quarantine/00001.parquet"]
    assert m.nodes == {"local": 2, "n1": 2}
    assert m.warnings == [{"w": 1}]
    assert m.corpus == [{"index": 0, "stage": "exact_dedup_v1", "against": ["old"], "removed": 3}]
    data = m.to_json()
    assert list(data)[:3] == ["name", "schema_version", "fingerprint"] and data["corpus"] == m.corpus
    assert RunManifest.from_json(json.loads(json.dumps(data))) == m  # the manifest round-trips too
    assert "dedup_index" not in data and "corpus" not in RunManifest().to_json()


def test_a_manifest_keeps_the_fields_other_writers_add() -> None:
    data = {**RunManifest(name="r").to_json(), "skill_order": {"x": 1}, "dedup_index": {"format": 1}}
    m = RunManifest.from_json(data)
    assert m.extra == {"skill_order": {"x": 1}} and m.dedup_index == {"format": 1}
    assert m.to_json() == data


_markers = st.lists(
    st.tuples(st.integers(0, 1), st.integers(0, 30), st.integers(0, 30), st.sampled_from(["a", "b"]),
              st.sampled_from([None, "n1"]), st.integers(0, 2)),
    max_size=12,
).map(lambda rows: [_marker(seg, task, max(n, k), min(n, k), domain=d, node=node, quarantined=q)
                    for task, (seg, n, k, d, node, q) in enumerate(rows)])


@settings(max_examples=60, deadline=None)
@given(markers=_markers, data=st.data())
def test_aggregation_is_the_same_in_any_order_and_partition(markers: list[TaskMarker], data: st.DataObject) -> None:
    whole = RunManifest.aggregate(markers, 2)
    shuffled = data.draw(st.permutations(markers))
    assert RunManifest.aggregate(shuffled, 2) == whole
    cuts = sorted(data.draw(st.lists(st.integers(0, len(markers)), max_size=4)))
    parts = [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(markers)])]
    summed = RunManifest()
    for part in parts:
        summed = summed + RunManifest.aggregate(part, 2)
    assert summed == whole
    assert summed.to_json() == whole.to_json()


# -- shard entries are vetted where they are read: the training loader reads them as RunManifest's ---------------

_ENTRY = {"path": "shards/00000.parquet", "rows": 3, "bytes": 30, "sha256": SHA}


@pytest.mark.parametrize("change, error", [
    ({"path": "../other/x.parquet"}, r"^refused: the path contains '\.\.'; shard paths must be plain relative"),
    ({"path": "/etc/passwd"}, "^refused: the path is absolute"),
    ({"path": "s3://b/x.parquet"}, r"^refused: the path contains ':'"),
    ({"path": None}, "^refused: the path is not a non-empty string"),
    ({"sha256": "AB" * 32}, "^'sha256' must be 64 lowercase hex digits, got 'ABAB"),
    ({"rows": -1}, "^'rows' must be a non-negative integer, got -1"),
    ({"bytes": True}, "^'bytes' must be a non-negative integer, got True"),
])
def test_a_bad_shard_entry_is_refused_saying_why(change: dict[str, object], error: str) -> None:
    assert ShardEntry.from_json(_ENTRY) == ShardEntry("shards/00000.parquet", 3, 30, SHA)
    with pytest.raises((TypeError, ValueError), match=error):
        ShardEntry.from_json({**_ENTRY, **change})
    data = _marker(0, 0, 3, 1).to_json()
    data["outputs"] = [{**_ENTRY, **change}]
    with pytest.raises((TypeError, ValueError), match=error):  # a task marker's outputs are shard entries too
        TaskMarker.from_json(data)


def test_run_manifest_read_is_the_typed_reader_naming_file_and_entry(tmp_path: Path) -> None:
    good = RunManifest(name="r", shards=[ShardEntry.from_json(_ENTRY)])
    _write(tmp_path, good.to_json())
    assert RunManifest.read(tmp_path) == good
    assert RunManifest.read_bytes(tmp_path) == (good, (tmp_path / "manifest.json").read_bytes())
    _write(tmp_path, {**good.to_json(), "shards": [_ENTRY, {**_ENTRY, "path": "a/../../b"}]})
    with pytest.raises(ManifestError) as e:
        RunManifest.read(tmp_path)
    assert str(e.value) == (f"{tmp_path / 'manifest.json'}: shard 1 ('a/../../b'): refused: the path contains '..'; "
                            "shard paths must be plain relative paths inside the run")
    _write(tmp_path, {**good.to_json(), "totals": {}})
    with pytest.raises(ManifestError, match=rf"^{tmp_path / 'manifest.json'}: not a valid manifest \(KeyError: "):
        RunManifest.read(tmp_path)
    with pytest.raises(NoManifestError):
        RunManifest.read(tmp_path / "nowhere")


# -- skill-ordered output's record: the other kind of manifest --------------------------------------------------

from curation.io.manifest import (
    OrderedDomainCount,
    OrderedRound,
    OrderedRunManifest,
    SkillSchedule,
    read_any_manifest,
    read_any_manifest_bytes,
)


def _ordered(rounds: int = 2) -> OrderedRunManifest:
    shards = [ShardEntry(f"shards/round-{r:03d}.parquet", 2 + r, 100, SHA) for r in range(rounds)]
    return OrderedRunManifest(
        name="r-skill-ordered", created_unix=1.5, source_run="/runs/r", source_fingerprint="f" * 16,
        schedule=SkillSchedule(eta=0.5, window=3, alpha=0.1, column="domain", chars_per_round=1000,
                               graph={"train_skills": ["a"], "eval_skills": ["a"], "A": [[1]]}, weighted_a=[[1.0]],
                               initial_losses={"a": 2.0}),
        rounds=[OrderedRound(r, s.path, {"a": 1.0}, {"a": 90}, {"a": 1.0}) for r, s in enumerate(shards)],
        shards=shards, domains={"web": OrderedDomainCount(5, 180)})


def test_an_ordered_manifest_round_trips_and_says_its_kind(tmp_path: Path) -> None:
    m = _ordered()
    data = m.to_json()
    assert data["kind"] == "skill-ordered" and data["schema_version"] == SCHEMA_VERSION
    assert data["totals"] == {"docs_out": 5} == {"docs_out": m.docs_out}
    assert data["schedule"]["weighted_A"] == [[1.0]] and "dedup_index" not in data
    assert OrderedRunManifest.from_json(json.loads(json.dumps(data))) == m
    _write(tmp_path, data)
    assert OrderedRunManifest.read(tmp_path) == m == read_any_manifest(tmp_path)
    assert read_any_manifest_bytes(tmp_path) == (m, (tmp_path / "manifest.json").read_bytes())
    run = RunManifest(name="r", shards=[ShardEntry.from_json(_ENTRY)])
    _write(tmp_path, run.to_json())
    assert read_any_manifest(tmp_path) == run  # no kind: a `curate run` run's


def test_each_record_refuses_the_other_kind_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    _write(tmp_path, _ordered().to_json())
    with pytest.raises(ManifestError) as e:
        RunManifest.read(tmp_path)
    assert str(e.value) == (f"{path}: the manifest of skill-ordered output (`curate skill-order`); this reads only a "
                            "`curate run` run's manifest")
    _write(tmp_path, RunManifest(name="r").to_json())
    with pytest.raises(ManifestError) as e:
        OrderedRunManifest.read(tmp_path)
    assert str(e.value) == (f"{path}: the manifest of a `curate run` run; this reads only skill-ordered output's "
                            "(`curate skill-order`)")
    _write(tmp_path, {**RunManifest(name="r").to_json(), "kind": "sorted"})
    for read in (RunManifest.read, read_any_manifest):
        with pytest.raises(ManifestError, match=rf"^{path}: a manifest of unknown kind 'sorted'; this reads only"):
            read(tmp_path)


@pytest.mark.parametrize("edit, error", [
    (lambda d: d["rounds"].reverse(), r"'rounds' must list rounds 0, 1, \.\.\. with the shards in their order"),
    (lambda d: d["rounds"].pop(), "'rounds' must list rounds"),
    (lambda d: d["totals"].update(docs_out=4), "totals.docs_out 4 is not the shards' 5 rows"),
    (lambda d: d["domains"]["web"].update(tokens=3) or d["domains"]["web"].pop("chars"), "KeyError: 'chars'"),
    (lambda d: d["rounds"][0]["planned_mixture"].update(a="x"), "'a' must be a number, got 'x'"),
    (lambda d: d.pop("schedule"), "KeyError: 'schedule'"),
    (lambda d: d.update(source_fingerprint=3), "'source_fingerprint' must be a string or null, got 3"),
])
def test_a_malformed_ordered_manifest_is_refused_naming_the_file(tmp_path: Path,
                                                                 edit: Callable[[dict[str, Any]], object],
                                                                 error: str) -> None:
    data = _ordered().to_json()
    edit(data)
    _write(tmp_path, data)
    with pytest.raises(ManifestError, match=rf"^{tmp_path / 'manifest.json'}: not a valid manifest \(.*{error}"):
        read_any_manifest(tmp_path)
