"""near_dedup_v1's mass-removal audit through real pipelines: a templated source (20 documents that
differ in 2 adjacent words of 200) next to normal sources."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from curation.stages.dedup.audit import MassRemovalError
from curation.stats import query, summary
from tests.conftest import pipeline_dict, write_jsonl
from tests.curation.executors.runs import run_pipeline

THRESHOLD = 0.8


def _letters(k: int) -> str:
    out = ""
    while True:
        k, r = divmod(k, 26)
        out += chr(97 + r)
        if k == 0:
            return out


def audit_corpus(root: Path) -> Path:
    """``tmpl.jsonl``: 20 near-copies of one 200-word text (2 adjacent words changed in each: pairwise
    Jaccard >= 0.88 over 5-word shingles); ``news.jsonl`` and ``wiki.jsonl``: 10 unrelated texts each,
    plus one near-copy in news (1 of 11 removed)."""
    rng = np.random.default_rng(7)
    vocab = [_letters(k) for k in range(5000)]
    template = list(rng.choice(vocab, 200))
    tmpl = []
    for i in range(20):
        words = list(template)
        words[10 * i], words[10 * i + 1] = f"name{_letters(i)}", f"city{_letters(i)}"
        tmpl.append({"id": f"tmpl-{i:02d}", "text": " ".join(words)})
    news = [{"id": f"news-{i:02d}", "text": " ".join(rng.choice(vocab, 150))} for i in range(10)]
    news.append({"id": "news-copy", "text": news[0]["text"] + " extra"})
    wiki = [{"id": f"wiki-{i:02d}", "text": " ".join(rng.choice(vocab, 150))} for i in range(10)]
    d = root / "audit"
    write_jsonl(d / "tmpl.jsonl", tmpl)
    write_jsonl(d / "news.jsonl", news)
    write_jsonl(d / "wiki.jsonl", wiki)
    return d


def audit_run(corpus: Path, out: Path, kind: str = "local", **stage: Any) -> dict[str, Any]:
    data = pipeline_dict([str(corpus / "*.jsonl")], out, kind=kind,
                         stages=[{"stage": "near_dedup_v1", "threshold": THRESHOLD, "num_buckets": 4, **stage}])
    if kind == "ray":
        data["executor"]["global_in_driver_mb"] = 0  # the audit runs on Ray Data shuffles, not in the driver
    return data


def check_failure(exc: MassRemovalError, out: Path) -> None:
    msg = str(exc)
    assert "'tmpl.jsonl' loses 19 of 20 documents (95.0%)" in msg, msg
    assert "news.jsonl" not in msg and "max_source_removal_fraction=0.5" in msg
    pairs = re.findall(r"(tmpl-\d\d) -> (tmpl-\d\d) \(J~([0-9.]+)\)", msg)
    assert len(pairs) == 3 and all(float(j) >= THRESHOLD - 0.1 for _, _, j in pairs), msg
    assert not (out / "manifest.json").exists()  # the run is not committed


def check_warned(manifest: dict[str, Any]) -> dict[str, Any]:
    (w,) = manifest["warnings"]
    assert (w["stage"], w["kind"], w["source"], w["docs_in"], w["removed"], w["share"]) == (
        "near_dedup_v1", "mass_removal", "tmpl.jsonl", 20, 19, 0.95)
    assert len(w["examples"]) == 3
    assert all(r.startswith("tmpl-") and k.startswith("tmpl-") for r, k, _ in w["examples"])
    return w


def test_fail_mode_names_source_share_and_three_pairs(tmp_path: Path) -> None:
    corpus, out = audit_corpus(tmp_path), tmp_path / "run"
    with pytest.raises(MassRemovalError) as info:
        run_pipeline(audit_run(corpus, out))
    check_failure(info.value, out)


def test_warn_mode_records_the_warning_and_jaccard_per_removal(tmp_path: Path) -> None:
    corpus, out = audit_corpus(tmp_path), tmp_path / "run"
    res = run_pipeline(audit_run(corpus, out, on_mass_removal="warn"))
    check_warned(res.manifest)
    assert json.loads((out / "manifest.json").read_text())["warnings"] == res.manifest["warnings"]
    _, rows = query(out, "SELECT id, json_extract_string(details, '$.dup_of'), "
                         "CAST(json_extract_string(details, '$.jaccard') AS DOUBLE) FROM decisions ORDER BY id")
    assert len(rows) == 20 and rows[0][:2] == ("news-00", "news-copy")  # the longer copy is kept
    # every removal names its keeper and an estimate near or above the threshold
    assert all(j is not None and j >= THRESHOLD - 0.1 for _, _, j in rows)
    (keeper,) = {k for _, k, _ in rows[1:]}
    assert keeper.startswith("tmpl-") and keeper not in {r for r, _, _ in rows}
    s = summary(out)
    assert s["near_dup_sources"][0] == ("tmpl.jsonl", 20, 19, 0.95, min(j for _, _, j in rows[1:]))
    assert s["near_dup_sources"][1][:4] == ("news.jsonl", 11, 1, round(1 / 11, 4))
    assert len(s["near_dup_sources"]) == 2 and s["warnings"] == res.manifest["warnings"]


def test_none_disables_and_a_looser_fraction_passes(tmp_path: Path) -> None:
    corpus = audit_corpus(tmp_path)
    for name, frac in (("off", None), ("loose", 0.96)):
        res = run_pipeline(audit_run(corpus, tmp_path / name, max_source_removal_fraction=frac))
        assert res.manifest["warnings"] == [] and res.manifest["stages"][-1]["dropped"] == {"near_duplicate": 20}


def test_mark_mode_removes_nothing_and_is_not_audited(tmp_path: Path) -> None:
    res = run_pipeline(audit_run(audit_corpus(tmp_path), tmp_path / "run", mode="mark"))
    assert res.manifest["warnings"] == [] and res.manifest["totals"]["docs_out"] == 41


@pytest.mark.ray
@pytest.mark.slow
def test_ray_audit_matches_local(ray_cluster: None, tmp_path: Path) -> None:
    corpus = audit_corpus(tmp_path)
    with pytest.raises(MassRemovalError) as info:
        run_pipeline(audit_run(corpus, tmp_path / "fail", kind="ray"))
    check_failure(info.value, tmp_path / "fail")
    local = run_pipeline(audit_run(corpus, tmp_path / "local", on_mass_removal="warn"))
    ray = run_pipeline(audit_run(corpus, tmp_path / "ray", kind="ray", on_mass_removal="warn"))
    assert check_warned(ray.manifest) == check_warned(local.manifest)
    sql = "SELECT id, details FROM decisions ORDER BY id"
    assert query(tmp_path / "ray", sql) == query(tmp_path / "local", sql)
