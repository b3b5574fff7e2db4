"""A run whose filters drop every document is a normal, finished run (exit 0, an empty shard list)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from curation.verify import verify_run
from tests.conftest import REPO, pipeline_dict
from tests.curation.executors.runs import run_pipeline

# Global stages after the filter see no document at all: exact and MinHash dedup must cope.
DROP_ALL = [{"stage": "text_length_v1", "min_chars": 10**9}, {"stage": "exact_dedup_v1", "num_buckets": 4},
            {"stage": "near_dedup_v1", "num_buckets": 4}]


def _assert_empty_run(out: Path, docs_read: int) -> None:
    m = json.loads((out / "manifest.json").read_text())
    assert m["totals"]["docs_read"] == docs_read and m["totals"]["docs_out"] == 0
    assert m["shards"] == [] and not list(out.glob("shards/*"))
    assert m["stages"][1]["dropped"] == {"too_short": docs_read}
    assert len(list((out / "_markers").glob("global-stage*.json"))) == 2
    assert m["decisions"]  # every drop is recorded
    report = verify_run(out)
    assert report.ok and report.shards == 0, report.problems


def test_run_keeping_no_document_exits_0_and_says_so(tiny_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = tmp_path / "p.yaml"
    config.write_text(yaml.safe_dump(pipeline_dict([str(tiny_corpus / "*")], out, stages=DROP_ALL)))
    r = subprocess.run([sys.executable, "-m", "curation.cli", "run", str(config)], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 documents kept: every document was dropped; see decisions" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr and "Funnel" in r.stdout
    _assert_empty_run(out, docs_read=7)
    r = subprocess.run([sys.executable, "-m", "curation.cli", "run", str(config)], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and "nothing to do" in r.stdout and "0 documents kept" in r.stdout


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("in_driver_mb", [256, 0], ids=["global-in-driver", "global-as-ray-shuffle"])
def test_ray_run_keeping_no_document_finishes(ray_cluster: None, tiny_corpus: Path, tmp_path: Path,
                                              in_driver_mb: int) -> None:
    out = tmp_path / "run"
    data = pipeline_dict([str(tiny_corpus / "*")], out, stages=DROP_ALL, kind="ray")
    data["executor"]["global_in_driver_mb"] = in_driver_mb
    res = run_pipeline(data)
    assert not res.nothing_to_do
    _assert_empty_run(out, docs_read=7)
