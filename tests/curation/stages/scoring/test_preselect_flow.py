"""PreSelect end to end: pipelines/preselect_candidates.yaml with tiny local LMs, then `curate train-scorer --run`,
then pipelines/score_select.yaml with that scorer."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

from curation.config import load_yaml
from tests.conftest import REPO, SAMPLE, write_jsonl
from tests.curation.executors.runs import run_pipeline


def curate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curation.cli", *args], capture_output=True, text=True, cwd=REPO)


def test_preselect_candidates_then_train_then_score_select(tiny_lms: dict[str, Path], tmp_path: Path) -> None:
    with gzip.open(SAMPLE / "python_docs-000.jsonl.gz", "rt", encoding="utf-8") as fh:
        docs = [json.loads(line) for _, line in zip(range(80), fh)]
    write_jsonl(tmp_path / "in" / "docs.jsonl", docs)
    cfg = load_yaml(REPO / "pipelines" / "preselect_candidates.yaml")
    for spec, name in zip(cfg["stages"][1]["models"], ("small", "medium", "large")):
        spec["path"] = str(tiny_lms[name])
    cfg["stages"][1].update(block_size=256, stride=128)
    cfg["input"]["paths"] = [str(tmp_path / "in" / "*.jsonl")]
    cfg["output"]["dir"] = str(tmp_path / "candidates")
    cfg["executor"] = {"kind": "local"}
    res = run_pipeline(cfg)
    assert res.manifest["totals"]["docs_out"] == 80, res.manifest["stages"]
    r = curate("train-scorer", str(tmp_path / "scorer"), "--run", str(tmp_path / "candidates"), "--bucket", "100000",
               "--epoch", "10", "--valid-fraction", "0")
    assert r.returncode == 0, r.stdout + r.stderr
    card = json.loads((tmp_path / "scorer" / "card.json").read_text())
    assert card["data"]["method"] == "preselect" and card["data"]["scored_docs"] == 80
    assert card["data"]["positives"] == card["data"]["negatives"] > 0  # balanced, as in the paper

    qs = load_yaml(REPO / "pipelines" / "score_select.yaml")
    qs["stages"][4]["models"][0]["path"] = str(tmp_path / "scorer")
    qs["output"]["dir"] = str(tmp_path / "selected")
    qs["executor"] = {"kind": "local"}
    sel = run_pipeline(qs)
    names = [s["name"] for s in sel.manifest["stages"]]
    assert names[-2:] == ["fasttext_score_v1", "select_v1"] and sel.manifest["stages"][-1]["dropped"]["below_threshold"] > 0
