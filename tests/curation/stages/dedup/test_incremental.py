"""Incremental curation (``against``): a new snapshot deduplicated against earlier runs' dedup indexes.

The property: (run on S1) + (run on S2 against it) [+ ...] keeps exactly what the brute-force
"earlier snapshot wins" reference (``reference.py``) keeps, with the same reasons and the same named
documents, for exact and near-dedup, in process here and on Ray in ``test_incremental_ray.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from curation.cli import app
from curation.errors import CurationError
from curation.io import dedup_index
from curation.io.dedup_index import DedupIndexError
from curation.pipeline import PipelineConfig
from curation.stages.dedup.audit import MassRemovalError
from curation.stats import query, summary
from tests.conftest import pipeline_dict, write_jsonl
from tests.curation.executors.runs import run_pipeline
from tests.curation.stages.dedup.reference import Doc, earlier_snapshot_wins

THRESHOLD = 0.8


def _word(k: int) -> str:
    """Letters only: near-dedup maps digits to 0, so "w12" and "w34" would be one word."""
    out = ""
    while True:
        k, r = divmod(k, 26)
        out += chr(97 + r)
        if k == 0:
            return out


def planted(seed: int, bases: int = 4) -> list[tuple[str, str]]:
    """(id, text) of ``bases`` clusters: a 150-word text, an exact copy, edits of 1-5 words (Jaccard
    about 0.94 down to 0.71 over 5-word shingles: both sides of 0.8 and its uncertain band), an edit
    of an edit (a chain: linked to the base only through its parent), a longer copy; plus two
    unrelated texts."""
    rng = np.random.default_rng(seed)

    def text(n: int) -> list[str]:
        return [_word(int(k)) for k in rng.integers(0, 20_000, n)]

    def edit(words: list[str], k: int) -> list[str]:
        words = list(words)
        for p in rng.choice(len(words), k, replace=False):
            words[int(p)] = _word(int(rng.integers(20_000, 40_000)))
        return words

    out = []
    for b in range(bases):
        base = text(150)
        one = edit(base, int(rng.integers(1, 4)))
        variants = {"base": base, "copy": base, "e1": one, "e2": edit(base, int(rng.integers(2, 6))),
                    "chain": edit(one, int(rng.integers(1, 4))), "long": base + text(int(rng.integers(3, 8)))}
        picked = rng.choice(list(variants), int(rng.integers(3, len(variants) + 1)), replace=False)
        out += [(f"c{b}-{name}", " ".join(variants[name])) for name in sorted(picked)]
    out += [(f"u{i}", " ".join(text(120))) for i in range(2)]
    return out


def salad(seed: int, n: int = 150) -> str:
    """A text of ``n`` random words, unrelated to any other seed's."""
    rng = np.random.default_rng(10_000 + seed)
    return " ".join(_word(int(k)) for k in rng.integers(0, 20_000, n))


STAGES = [{"stage": "exact_dedup_v1", "num_buckets": 4},
          {"stage": "near_dedup_v1", "threshold": THRESHOLD, "num_buckets": 4, "keep": "longest",
           "max_source_removal_fraction": None}]


def snapshot_runs(root: Path, docs: list[tuple[str, str, int]], snapshots: int, kind: str = "local",
                  stages: list[dict[str, Any]] | None = None, **executor: Any) -> list[Path]:
    """Write each snapshot's documents (in list order, two files each) and run snapshot i against runs
    0..i-1. Returns the run directories."""
    runs: list[Path] = []
    for s in range(snapshots):
        mine = [{"id": i, "text": t} for i, t, sn in docs if sn == s]
        half = (len(mine) + 1) // 2
        write_jsonl(root / f"s{s}" / f"{s}-a.jsonl", mine[:half])
        write_jsonl(root / f"s{s}" / f"{s}-b.jsonl", mine[half:])
        data = pipeline_dict([str(root / f"s{s}" / "*.jsonl")], root / f"run{s}", kind=kind,
                             stages=[dict(st, against=[str(r) for r in runs]) for st in (stages or STAGES)])
        data["executor"].update(executor)
        run_pipeline(data)
        runs.append(root / f"run{s}")
    return runs


def verdicts(runs: list[Path]) -> dict[str, tuple[str, str | None]]:
    """id -> (kept | reason, dup_of) over every run's shards and decisions."""
    out: dict[str, tuple[str, str | None]] = {}
    for run in runs:
        for f in sorted((run / "shards").glob("*.parquet")):
            for i in pq.read_table(f, columns=["id"]).column("id").to_pylist():
                out[i] = ("kept", None)
        for f in sorted((run / "decisions").glob("*.parquet")):
            t = pq.read_table(f, columns=["id", "reason", "details"]).to_pylist()
            for r in t:
                out[r["id"]] = (r["reason"], json.loads(r["details"])["dup_of"])
    return out


def reference(docs: list[tuple[str, str, int]], snapshots: int, keep: str = "longest") -> dict[str, Any]:
    order: dict[int, int] = {}
    ref_docs = []
    for i, t, s in docs:
        ref_docs.append(Doc(i, t, s, order.setdefault(s, 0)))
        order[s] += 1
    return earlier_snapshot_wins(ref_docs, snapshots, keep=keep, threshold=THRESHOLD)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), snapshots=st.integers(2, 3), per_bucket=st.sampled_from([2, 5, 16_384]),
       data=st.data())
def test_snapshots_keep_what_the_earlier_snapshot_wins_reference_keeps(tmp_path_factory: pytest.TempPathFactory,
                                                                       monkeypatch: pytest.MonkeyPatch, seed: int,
                                                                       snapshots: int, per_bucket: int,
                                                                       data: st.DataObject) -> None:
    # Small buckets split tiny indexes into several files, and runs of different sizes into different counts.
    monkeypatch.setattr(dedup_index, "DOCS_PER_BUCKET", per_bucket)
    corpus = planted(seed)
    where = data.draw(st.lists(st.integers(0, snapshots - 1), min_size=len(corpus), max_size=len(corpus)))
    order = data.draw(st.permutations(range(len(corpus))))  # input order: copies may come before originals
    docs = [(corpus[k][0], corpus[k][1], where[k]) for k in order]
    root = tmp_path_factory.mktemp("snap")
    got = verdicts(snapshot_runs(root, docs, snapshots))
    assert got == reference(docs, snapshots)


def test_a_chain_of_five_snapshots_and_one_run_over_all_for_exact_dedup(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Five snapshots, each against all earlier ones, agree with the reference; exact dedup alone agrees
    with one run over the union (files of earlier snapshots first: "first in input order" is then
    "earliest snapshot"), since equal texts cannot bridge clusters."""
    monkeypatch.setattr(dedup_index, "DOCS_PER_BUCKET", 2)
    corpus = planted(11, bases=5)
    rng = np.random.default_rng(3)
    docs = [(i, t, int(rng.integers(0, 5))) for i, t in corpus]
    runs = snapshot_runs(tmp_path / "near", docs, 5)
    assert verdicts(runs) == reference(docs, 5)
    exact = [STAGES[0]]
    runs = snapshot_runs(tmp_path / "exact", docs, 5, stages=exact)
    union = sorted(str(p) for s in range(5) for p in (tmp_path / "exact" / f"s{s}").glob("*.jsonl"))
    one = tmp_path / "one"
    run_pipeline(pipeline_dict(union, one, stages=exact))
    kept = {i for i, (v, _) in verdicts(runs).items() if v == "kept"}
    assert kept == {i for i, (v, _) in verdicts([one]).items() if v == "kept"}
    assert len(kept) < len(docs)


def test_decisions_name_run_document_and_jaccard_and_the_manifest_reports_per_run(tmp_path: Path) -> None:
    base = salad(0)
    docs = [("c0-base", base, 0), ("u0", salad(1), 0), ("u1", salad(2), 1), ("new-copy", base, 1),
            ("new-near", base + " and a few more words at the end", 1)]
    runs = snapshot_runs(tmp_path, docs, 2)
    _, rows = query(runs[1], "SELECT id, stage, reason, details FROM decisions ORDER BY id")
    (copy, near) = rows
    assert copy[:3] == ("new-copy", "exact_dedup_v1", "duplicate_of_corpus")
    assert json.loads(copy[3]) == {"dup_of": "c0-base", "run": str(runs[0])}
    assert near[:3] == ("new-near", "near_dedup_v1", "duplicate_of_corpus")
    d = json.loads(near[3])
    assert (d["dup_of"], d["run"], d["dup_cluster_size"]) == ("c0-base", str(runs[0]), 2) and d["jaccard"] > 0.9
    m = json.loads((runs[1] / "manifest.json").read_text())
    assert m["corpus"] == [
        {"index": 0, "stage": "exact_dedup_v1", "docs_in": 3, "against": [{"run": str(runs[0]), "removed": 1,
                                                                           "share": 0.3333}]},
        {"index": 1, "stage": "near_dedup_v1", "docs_in": 2, "against": [{"run": str(runs[0]), "removed": 1,
                                                                          "share": 0.5}]}]
    s = summary(runs[1])
    assert s["corpus"] == [("exact_dedup_v1", str(runs[0]), 1, 0.3333), ("near_dedup_v1", str(runs[0]), 1, 0.5)]
    assert s["near_dup_sources"][0][:3] == ("1-b.jsonl", 1, 1)  # corpus removals count in the per-source table


def test_earlier_runs_are_never_read_beyond_their_index(tmp_path: Path) -> None:
    docs = [(i, t, k % 2) for k, (i, t) in enumerate(planted(2, bases=3))]
    first = snapshot_runs(tmp_path / "a", [d for d in docs if d[2] == 0], 1)[0]
    for sub in ("shards", "decisions", "_work", "_markers"):  # only manifest.json and dedup_index/ remain
        shutil.rmtree(first / sub, ignore_errors=True)
    before = {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()}
    data = pipeline_dict([str(tmp_path / "s1.jsonl")], tmp_path / "b", stages=[dict(s, against=[str(first)])
                                                                            for s in STAGES])
    write_jsonl(tmp_path / "s1.jsonl", [{"id": i, "text": t} for i, t, s in docs if s == 1])
    res = run_pipeline(data)
    assert res.manifest["corpus"][0]["against"][0]["run"] == str(first)
    assert {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()} == before  # nothing rewritten


def test_refusals_name_the_run_and_the_fix(tmp_path: Path) -> None:
    docs = [(i, t, 0) for i, t in planted(4, bases=1)]
    (first,) = snapshot_runs(tmp_path, docs, 1)
    write_jsonl(tmp_path / "new.jsonl", [{"id": "x", "text": docs[0][1]}])

    def attempt(name: str, **near: Any) -> None:
        stages = [dict(STAGES[0], against=[str(first)]), {**STAGES[1], "against": [str(first)], **near}]
        run_pipeline(pipeline_dict([str(tmp_path / "new.jsonl")], tmp_path / name, stages=stages))

    with pytest.raises(DedupIndexError, match=r"num_perm=128 \(this stage: 64\).*curate index .* --like"):
        attempt("perm", num_perm=64)
    assert not (tmp_path / "perm" / "_markers").exists()  # refused before the first pass
    with pytest.raises(DedupIndexError, match="not a finished run"):
        attempt("missing", against=[str(tmp_path / "nowhere")])
    m = json.loads((first / "manifest.json").read_text())
    del m["dedup_index"]
    (first / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DedupIndexError, match=rf"{first} has no dedup index .* `curate index {first}`"):
        attempt("old")
    with pytest.raises(CurationError, match="against: a run is named twice"):
        PipelineConfig.from_mapping(pipeline_dict([], tmp_path / "x", stages=[
            {"stage": "exact_dedup_v1", "against": ["a", "a"]}]))


def test_fingerprints_of_runs_without_against_are_unchanged(tmp_path: Path) -> None:
    cfg = PipelineConfig.from_mapping(pipeline_dict(["x"], tmp_path / "o", stages=STAGES))
    assert all("against" not in s for s in cfg.fingerprint_data()["stages"])
    cfg2 = PipelineConfig.from_mapping(pipeline_dict(["x"], tmp_path / "o", stages=[dict(STAGES[0], against=["r"])]))
    assert cfg2.fingerprint_data()["stages"][0]["against"] == ["r"]


def test_mass_removal_audit_reports_each_earlier_run(tmp_path: Path) -> None:
    texts = [salad(k) for k in range(3)]
    old = snapshot_runs(tmp_path, [("o%d" % k, t, 0) for k, t in enumerate(texts)], 1)[0]
    write_jsonl(tmp_path / "new" / "re.jsonl", [{"id": f"n{k}", "text": t + " again"} for k, t in enumerate(texts)])
    stages = [dict(STAGES[1], against=[str(old)], max_source_removal_fraction=0.5)]
    with pytest.raises(MassRemovalError, match=rf"'re.jsonl' loses 3 of 3 documents \(100.0%\) \(3 as "
                                               rf"duplicates of {old}\)"):
        run_pipeline(pipeline_dict([str(tmp_path / "new" / "*.jsonl")], tmp_path / "fail", stages=stages))


def test_cli_against_adds_the_run_to_every_dedup_stage_and_stats_shows_it(tmp_path: Path) -> None:
    docs = [(i, t, 0) for i, t in planted(6, bases=2)]
    (first,) = snapshot_runs(tmp_path, docs, 1)
    write_jsonl(tmp_path / "new.jsonl", [{"id": "x", "text": docs[0][1]}, {"id": "y", "text": "a new text " * 20}])
    cfg = tmp_path / "p.yaml"
    cfg.write_text(json.dumps(pipeline_dict([str(tmp_path / "new.jsonl")], tmp_path / "second", stages=STAGES)))
    r = CliRunner().invoke(app, ["run", str(cfg), "--against", str(first)])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "second" / "manifest.json").read_text())
    assert [s["against"] for s in m["config"]["stages"]] == [[str(first)], [str(first)]]
    assert "Corpus: earlier runs" in r.output and "duplicate_of_corpus" in r.output
    r = CliRunner().invoke(app, ["run", str(cfg), "--against", str(first), "-o", "stages=[]"])
    assert r.exit_code == 2 and "--against needs an exact_dedup_v1 or near_dedup_v1 stage" in r.output


def test_independent_earlier_runs_are_never_linked_to_each_other(tmp_path: Path) -> None:
    """Runs A and B were curated independently, and B's document is a near copy of A's. A new document
    close to B's but not to A's is named after B: corpus documents meet only through new ones (a link
    A-B would put all three in one cluster, named after A, the earlier-listed run)."""
    words = salad(7, 200).split()

    def edit(ws: list[str], at: list[int]) -> list[str]:
        return [f"zz{_word(p)}" if p in at else w for p, w in enumerate(ws)]

    a = words
    b = edit(a, [20, 90])  # J(a, b) ~ 0.9
    x = edit(b, [50, 140, 170])  # J(b, x) ~ 0.86, J(a, x) ~ 0.77 < 0.8
    runs = []
    for name, text in (("A", a), ("B", b)):
        write_jsonl(tmp_path / f"{name}.jsonl", [{"id": name, "text": " ".join(text)}])
        runs.append(run_pipeline(pipeline_dict([str(tmp_path / f"{name}.jsonl")], tmp_path / name,
                                               stages=[STAGES[1]])).root)
    write_jsonl(tmp_path / "x.jsonl", [{"id": "x", "text": " ".join(x)}])
    run_pipeline(pipeline_dict([str(tmp_path / "x.jsonl")], tmp_path / "C",
                               stages=[{**STAGES[1], "against": [str(r) for r in runs]}]))
    assert verdicts([tmp_path / "C"]) == {"x": ("duplicate_of_corpus", "B")}


@pytest.mark.ray
@pytest.mark.slow
def test_on_ray_the_corpus_joins_run_as_shuffles_and_agree(ray_cluster: None, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Snapshot 1 on Ray (its index written by the Ray executor), snapshot 2 against it with every global
    step as a Ray Data shuffle (``global_in_driver_mb: 0``): the band, exact and docs joins read the index
    in Ray workers. Same verdicts as the reference and as the in-process executor."""
    monkeypatch.setattr(dedup_index, "DOCS_PER_BUCKET", 2)  # several bucket files per kind
    corpus = planted(21, bases=3)
    rng = np.random.default_rng(21)
    docs = [(i, t, int(rng.integers(0, 2))) for i, t in corpus]
    ray_runs = snapshot_runs(tmp_path / "ray", docs, 2, kind="ray", global_in_driver_mb=0)
    want = reference(docs, 2)
    assert verdicts(ray_runs) == want
    assert any(v == "duplicate_of_corpus" for v, _ in want.values())
    assert verdicts(snapshot_runs(tmp_path / "local", docs, 2)) == want


def test_a_submitted_job_may_name_earlier_runs_only_under_the_input_roots(tmp_path: Path) -> None:
    """``against`` names folders the job reads (indexes, manifests): under ``curate serve`` they are checked
    against the input roots like models and eval sets (``Stage.artifact_keys``)."""
    from curation.io.input_roots import InputRoots

    (tmp_path / "corpus").mkdir()
    roots = InputRoots(roots=(str(tmp_path / "corpus"),), base=str(tmp_path))
    inside = str(tmp_path / "corpus" / "snap1")
    for name in ("exact_dedup_v1", "near_dedup_v1"):
        for bad in ("/etc", f"{tmp_path}/corpus/../state", "s3://other-bucket/runs/r1"):
            cfg = PipelineConfig.from_mapping(pipeline_dict(["x"], tmp_path / "o", stages=[
                {"stage": name, "against": [inside, bad]}]))
            with pytest.raises(CurationError, match=r"stages\[0\]\.against\.1: .*input roots"):
                cfg.stages[0].check_files(roots, "stages[0]")
        cfg = PipelineConfig.from_mapping(pipeline_dict(["x"], tmp_path / "o", stages=[{"stage": name, "against": [inside]}]))
        cfg.stages[0].check_files(roots, "stages[0]")


def test_plan_prices_the_join_against_the_named_runs_indexes(tmp_path: Path) -> None:
    from curation.planner import extrapolate, measure, parse_cluster

    docs = [(i, t, k % 2) for k, (i, t) in enumerate(planted(5, bases=4))]
    first = snapshot_runs(tmp_path / "a", [d for d in docs if d[2] == 0], 1)[0]
    index = json.loads((first / "manifest.json").read_text())["dedup_index"]
    write_jsonl(tmp_path / "s1.jsonl", [{"id": i, "text": t} for i, t, s in docs if s == 1])
    cfg = PipelineConfig.from_mapping(pipeline_dict([str(tmp_path / "s1.jsonl")], tmp_path / "b",
                                                    stages=[dict(s, against=[str(first)]) for s in STAGES]))
    m = measure(cfg, 1.0, tmp_path / "work")
    joins = {g.stage: g.join for g in m.globals}
    assert set(joins) == {"exact_dedup_v1", "near_dedup_v1"} and all(j is not None for j in joins.values())
    # the bytes come from the run's manifest, per kind the stage joins (near verifies: shingle sets too)
    assert joins["exact_dedup_v1"].bytes_by_kind == {"exact": index["bytes_by_kind"]["exact"]}
    assert joins["near_dedup_v1"].bytes_by_kind == {k: index["bytes_by_kind"][k] for k in ("bands", "docs", "shingles")}
    assert joins["near_dedup_v1"].read_bytes == sum(index["bytes_by_kind"][k] for k in ("bands", "docs", "shingles"))
    assert all(j.runs == 1 and j.seconds_per_byte > 0 for j in joins.values())
    pred = extrapolate(m, parse_cluster("cpus=2"))
    near = next(s for s in pred.steps if s["step"] == "global near_dedup_v1")
    assert near["index_read_bytes"] == joins["near_dedup_v1"].read_bytes and near["index_read_s"] > 0
    assert any("joins the dedup indexes of 1 earlier run(s)" in n for n in pred.notes)
    # a run without `against` has no join to price
    plain = PipelineConfig.from_mapping(pipeline_dict([str(tmp_path / "s1.jsonl")], tmp_path / "c", stages=STAGES))
    assert all(g.join is None for g in measure(plain, 1.0, tmp_path / "work2").globals)
    # the timed read leaves this process's cache of verified index bytes as it was
    before = dict(dedup_index._cache)
    dedup_index.open_index(str(first)).timed_read("bands", 0)
    assert dict(dedup_index._cache) == before
