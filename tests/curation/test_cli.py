"""The README's main job: `curate run pipelines/quickstart.yaml` on local Ray, then stats and query."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def curate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curation.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


def test_quickstart_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "qs"
    r = curate("run", "pipelines/quickstart.yaml", "-o", f"output.dir={out}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Funnel" in r.stdout and "exact_dedup_v1" in r.stdout and "gopher_quality_v1" in r.stdout
    assert "near_dedup: 16 bands x 8 rows of 128 permutations" in r.stdout and "J=0.8: 0.947" in r.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    t = manifest["totals"]
    assert t["input_files"] == 5 and t["docs_read"] == 1265 and t["quarantined"] == 0
    assert 0 < t["docs_out"] < t["docs_read"]
    assert sum(s["rows"] for s in manifest["shards"]) == t["docs_out"]
    names = [s["name"] for s in manifest["stages"]]
    assert names == ["input", "text_length_v1", "language_id_v1", "exact_dedup_v1", "near_dedup_v1",
                     "gopher_repetition_v1", "gopher_quality_v1", "c4_quality_v1", "fineweb_quality_v1"]
    for a, b in zip(manifest["stages"], manifest["stages"][1:]):
        assert a["out"] == b["in"]  # the funnel is consistent from stage to stage
    assert manifest["stages"][3]["dropped"]["exact_duplicate"] > 0  # licence texts repeat across packages
    assert manifest["stages"][4]["dropped"]["near_duplicate"] > 0  # ... and licence variants differ by a line

    r = curate("run", "pipelines/quickstart.yaml", "-o", f"output.dir={out}")
    assert r.returncode == 0 and "nothing to do" in r.stdout

    r = curate("stats", str(out), "--json")
    assert json.loads(r.stdout)["totals"] == t
    r = curate("query", str(out), "SELECT count(*) AS n FROM docs", "--format", "json")
    assert json.loads(r.stdout) == [{"n": t["docs_out"]}]
    r = curate("query", str(out), "COPY docs TO '/tmp/x.csv'")
    assert r.returncode == 2 and "only SELECT" in r.stdout


def test_bad_config_lists_valid_names(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("name: x\ninput: {paths: [a.jsonl]}\noutput: {dir: o}\nstages: [{stage: gopher_qualty_v1}]\n")
    r = curate("run", str(cfg))
    assert r.returncode == 2 and "unknown stage 'gopher_qualty_v1'" in r.stdout and "gopher_quality_v1" in r.stdout
