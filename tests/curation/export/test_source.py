"""``open_source``: the run an export reads, through curation's one typed manifest reader (``RunManifest``)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from curation.export.source import ExportError, open_source
from curation.io.manifest import RunManifest


def test_the_source_is_the_runs_typed_manifest(tiny_run: Path) -> None:
    src = open_source(tiny_run)
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    assert [(s.index, s.rel, s.rows, s.bytes, s.sha256) for s in src.shards] == \
        [(i, e["path"], e["rows"], e["bytes"], e["sha256"]) for i, e in enumerate(manifest["shards"])]
    assert [s.path for s in src.shards] == [str(tiny_run.resolve() / e["path"]) for e in manifest["shards"]]
    assert src.domains == manifest["domains"]  # the same object the export recorded before: its bytes unchanged
    assert src.identity() == {"run": str(tiny_run.resolve()), "name": manifest["name"],
                              "fingerprint": manifest["fingerprint"],
                              "manifest_sha256": hashlib.sha256((tiny_run / "manifest.json").read_bytes()).hexdigest(),
                              "shards": len(manifest["shards"]), "documents": manifest["totals"]["docs_out"]}
    assert src.shards[0].rel == RunManifest.read(tiny_run).shards[0].path


@pytest.mark.parametrize("entry, why", [
    ({"path": "../elsewhere.parquet"}, r"shard 1 \('\.\./elsewhere\.parquet'\): refused: the path contains '\.\.'"),
    ({"sha256": "x"}, r"shard 1 \(.*\): 'sha256' must be 64 lowercase hex digits"),
    ({"rows": "3"}, r"shard 1 \(.*\): 'rows' must be a non-negative integer, got '3'"),
])
def test_a_bad_shard_entry_is_refused_naming_the_manifest(tiny_run: Path, tmp_path: Path, entry: dict[str, object],
                                                          why: str) -> None:
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["shards"][1].update(entry)
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match=rf"^{run / 'manifest.json'}: {why}"):
        open_source(run)
