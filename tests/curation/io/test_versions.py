"""One version check (``curation.io.manifest.check_schema``) for every record a run directory holds: each is
written at its kind's version and read back; one of another version, or with none, is refused by every reader
with the one message naming the file. (The check itself: ``test_manifest.py``; the training loader's state and
checkpoint: ``tests/training``; the rephrase cache: ``tests/curation/rephrase/test_units.py``.)"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from curation.io.dedup_index import DedupIndexError, open_index
from curation.io.manifest import (
    DEDUP_INDEX,
    GLOBAL_MARKER,
    MANIFEST,
    PROGRESS,
    RUN_JSON,
    TASK_MARKER,
    RecordKind,
    SchemaVersionError,
    read_manifest,
)
from curation.io.runs import list_runs, progress, read_run_json
from curation.schema import SCHEMA_VERSION
from curation.stages.dedup.index import index_run
from curation.verify import verify_run
from tests.conftest import PROSE, pipeline_dict, write_jsonl
from tests.curation.executors.runs import run_pipeline


def _pipeline(base: Path) -> dict[str, Any]:
    """Three inputs, a filter and exact dedup: two passes, one global stage (index 1)."""
    for name, texts in (("a", PROSE), ("b", PROSE[:1] + ["too short"]), ("c", [p.upper() for p in PROSE])):
        write_jsonl(base / "in" / f"{name}.jsonl", [{"id": f"{name}{i}", "text": t, "domain": "web"}
                                                    for i, t in enumerate(texts)])
    return pipeline_dict([str(base / "in" / "*.jsonl")], base / "run")


@pytest.fixture(scope="module")
def golden_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("versions")
    run_pipeline(_pipeline(base))
    return base / "run"


@pytest.fixture
def run(golden_run: Path, tmp_path: Path) -> Path:
    """A private copy (under ``runs/``) that a test may edit."""
    return Path(shutil.copytree(golden_run, tmp_path / "runs" / "run"))


def message(where: object, kind: RecordKind, found: str) -> str:
    """The one message every refusal reads as."""
    return (f"{where}: {kind.name} written by another version of this project ({found}); "
            f"this version reads only {kind.key} {kind.version}: {kind.remedy}")


def edit(path: Path, change: Callable[[dict[str, Any]], object]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def refused(call: Callable[[], object], error: type[Exception] = SchemaVersionError) -> str:
    with pytest.raises(error) as e:
        call()
    return str(e.value)


def test_every_record_is_written_at_its_version_and_reads_back(golden_run: Path) -> None:
    read = lambda rel: json.loads((golden_run / rel).read_text())
    markers = sorted((golden_run / "_markers").glob("seg*/*.json"))
    assert len(markers) == 6  # 3 inputs x 2 passes
    assert {read(p.relative_to(golden_run))[TASK_MARKER.key] for p in markers} == {TASK_MARKER.version}
    assert read("_markers/global-stage1.json")[GLOBAL_MARKER.key] == GLOBAL_MARKER.version
    assert read("manifest.json")["schema_version"] == read("run.json")["schema_version"] == SCHEMA_VERSION
    assert read("progress.json")[PROGRESS.key] == PROGRESS.version
    assert read("manifest.json")["dedup_index"][DEDUP_INDEX.key] == DEDUP_INDEX.version
    # ... and every reader takes them.
    assert read_manifest(golden_run)["global_stages"] == read_run_json(golden_run)["global_stages"] == [1]
    assert progress(golden_run)["source"] == "progress.json" and progress(golden_run)["tasks_done"] == 6
    assert open_index(str(golden_run)).docs == read("manifest.json")["totals"]["docs_out"]
    assert verify_run(golden_run).problems == []
    assert [r.error for r in list_runs(golden_run.parent)] == [None]


def test_a_manifest_of_another_version_is_refused_by_its_readers(run: Path) -> None:
    edit(run / "manifest.json", lambda m: m.pop("schema_version"))
    msg = message(run / "manifest.json", MANIFEST, "no schema_version")
    assert refused(lambda: read_manifest(run)) == msg
    assert msg in (list_runs(run.parent)[0].error or "")  # the runs list shows the run with its problem
    assert verify_run(run).problems == [message("manifest.json", MANIFEST, "no schema_version")]
    with pytest.raises(DedupIndexError, match="manifest written by another version"):
        open_index(str(run))


def test_a_run_json_of_another_version_is_refused_by_its_readers(run: Path) -> None:
    edit(run / "run.json", lambda r: r.update(schema_version=SCHEMA_VERSION + 1))
    msg = message(run / "run.json", RUN_JSON, f"schema_version {SCHEMA_VERSION + 1}")
    assert refused(lambda: read_run_json(run)) == refused(lambda: progress(run)) == msg
    assert message("run.json", RUN_JSON, f"schema_version {SCHEMA_VERSION + 1}") in verify_run(run).problems
    # This version's number on a run.json from before global_stages existed: refused alike, not guessed at.
    edit(run / "run.json", lambda r: (r.update(schema_version=SCHEMA_VERSION), r.pop("global_stages")))
    assert refused(lambda: read_run_json(run)) == message(run / "run.json", RUN_JSON,
                                                          f"schema_version {SCHEMA_VERSION} without 'global_stages'")
    (run / "manifest.json").unlink()  # not finished: the runs list reads its run.json
    assert "without 'global_stages'" in (list_runs(run.parent)[0].error or "")


def test_markers_of_another_version_fail_verify(run: Path) -> None:
    edit(run / "_markers" / "seg0" / "00001.json", lambda m: m.pop("schema_version"))
    problems = verify_run(run).problems
    assert message("_markers/seg0/00001.json", TASK_MARKER, "no schema_version") in problems


def test_progress_json_of_another_version_is_refused(run: Path) -> None:
    path = run / "progress.json"
    edit(path, lambda p: p.update(version=PROGRESS.version + 1))
    assert refused(lambda: progress(run)) == message(path, PROGRESS, f"version {PROGRESS.version + 1}")
    edit(path, lambda p: p.pop("version"))
    assert refused(lambda: progress(run)) == message(path, PROGRESS, "no version")
    path.write_text("{not json")
    with pytest.raises(ValueError, match="progress.json: not valid JSON"):
        progress(run)
    path.unlink()  # a finished run always has one (written before the manifest): this one is another version's
    assert refused(lambda: progress(run)) == message(path, PROGRESS, "no version")
    (run / "manifest.json").unlink()  # a run the executor has not started a pass of yet: nothing done
    p = progress(run)
    assert (p["source"], p["tasks_done"], p["tasks_total"], p["passes"], p["eta_s"]) == ("run.json", 0, 6, [], None)


def test_a_dedup_index_of_another_version_is_refused_until_rebuilt(run: Path) -> None:
    edit(run / "manifest.json", lambda m: m["dedup_index"].update(format=DEDUP_INDEX.version + 1))
    found = f"format {DEDUP_INDEX.version + 1}"
    assert refused(lambda: open_index(str(run)), DedupIndexError) == (
        f"against: {run}: manifest.json: " + message("dedup_index", DEDUP_INDEX, found))
    assert f"manifest.json: {message('dedup_index', DEDUP_INDEX, found)}" in verify_run(run).problems
    assert refused(lambda: index_run(str(run))) == message(f"{run.resolve() / 'manifest.json'}: dedup_index",
                                                           DEDUP_INDEX, found)
    entry, built = index_run(str(run), force=True)  # what the message says to do
    assert built and entry["format"] == DEDUP_INDEX.version and open_index(str(run)).docs == entry["docs"]
    assert verify_run(run).problems == []


def test_a_resumed_run_refuses_records_of_another_version(tmp_path: Path) -> None:
    """The executor reads run.json before any work, and every marker when it builds the manifest."""
    data = _pipeline(tmp_path)
    run_pipeline(data)
    run = tmp_path / "run"
    saved = {p: p.read_bytes() for p in [run / "run.json", *sorted((run / "_markers").rglob("*.json"))]}

    def restore() -> None:
        for p, b in saved.items():
            p.write_bytes(b)

    edit(run / "run.json", lambda r: r.pop("schema_version"))
    assert refused(lambda: run_pipeline(data)) == message(run / "run.json", RUN_JSON, "no schema_version")
    restore()
    (run / "manifest.json").unlink()  # the run is built again from its markers
    for path, kind in ((run / "_markers" / "seg1" / "00002.json", TASK_MARKER),
                       (run / "_markers" / "global-stage1.json", GLOBAL_MARKER)):
        edit(path, lambda m: m.update(schema_version=0))
        assert refused(lambda: run_pipeline(data)) == message(path, kind, "schema_version 0")
        restore()
