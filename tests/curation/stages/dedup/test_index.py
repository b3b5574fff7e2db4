"""A run's dedup index: what it holds, that ``curate index`` rebuilds the same files, and that an edited,
truncated or extra file is refused by ``curate verify`` and by a run against it, naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curation.cli import app
from curation.io import dedup_index
from curation.io.dedup_index import DedupIndexError, index_buckets
from curation.stages.dedup.exact import text_hashes
from curation.stages.frame import bucket_of
from tests.conftest import pipeline_dict, write_jsonl
from tests.curation.executors.runs import run_pipeline
from tests.curation.stages.dedup.test_incremental import STAGES, salad

runner = CliRunner()


def small_run(root: Path, name: str = "run", n: int = 7) -> Path:
    """``n`` unrelated texts plus an exact and a near copy (dropped) in two input files."""
    texts = [salad(k) for k in range(n)]
    write_jsonl(root / "in" / "a.jsonl", [{"id": f"a{k}", "text": t} for k, t in enumerate(texts[:4])])
    write_jsonl(root / "in" / "b.jsonl", [{"id": f"b{k}", "text": t} for k, t in enumerate(texts[4:])]
                + [{"id": "copy", "text": texts[0]}, {"id": "near", "text": texts[1] + " plus a tail"}])
    run_pipeline(pipeline_dict([str(root / "in" / "*.jsonl")], root / name, stages=STAGES))
    return root / name


def test_the_index_holds_every_kept_document_by_bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dedup_index, "DOCS_PER_BUCKET", 2)  # 7 kept documents -> 4 buckets of each kind
    run = small_run(tmp_path)
    m = json.loads((run / "manifest.json").read_text())
    ix = m["dedup_index"]
    assert (ix["docs"], ix["buckets"], m["totals"]["docs_out"]) == (7, 4, 7)
    assert ix["params"] == {"normalize": "whitespace", "num_perm": 128, "ngram": 5, "seed": 42, "bands": 16,
                            "rows": 8, "shingles": True}
    shards = pa.concat_tables([pq.read_table(f, columns=["id", "text"]) for f in sorted((run / "shards").glob("*"))])
    shard_ids = shards.column("id").to_pylist()
    tables = {}
    for kind in ("exact", "bands", "docs", "shingles"):
        parts = []
        for f in ix["files"]:
            if f["path"].startswith(f"dedup_index/{kind}/"):
                t = pq.read_table(run / f["path"])
                b = int(f["path"][-11:-8])
                key = {"exact": "hash", "bands": "key"}.get(kind, "pos")
                assert set(bucket_of(t.column(key).to_numpy(), 4).tolist()) == {b}  # each row in its bucket
                assert len(t) == f["rows"]
                parts.append(t)
        tables[kind] = pa.concat_tables(parts)
    docs = tables["docs"].sort_by("pos")
    assert docs.column("pos").to_pylist() == list(range(7)) and docs.column("id").to_pylist() == shard_ids
    assert tables["shingles"].sort_by("pos").column("pos").to_pylist() == list(range(7))
    exact = tables["exact"].sort_by("pos")
    assert exact.column("hash").to_pylist() == text_hashes(shards.column("text").to_pylist(), "whitespace").tolist()
    assert len(tables["bands"]) == 7 * 16 and sorted(set(tables["bands"].column("pos").to_pylist())) == list(range(7))
    assert not (run / "_work" / "index").exists()  # the parts are gone once the manifest is written


def test_curate_index_rebuilds_the_same_files_and_builds_one_for_an_old_run(tmp_path: Path) -> None:
    run = small_run(tmp_path)
    m = json.loads((run / "manifest.json").read_text())
    wrote = {f["path"]: f["sha256"] for f in m["dedup_index"]["files"]}
    r = runner.invoke(app, ["index", str(run)])
    assert r.exit_code == 0 and "already there" in r.output, r.output
    r = runner.invoke(app, ["index", str(run), "--force"])
    assert r.exit_code == 0 and "built: 7 documents" in r.output, r.output
    again = json.loads((run / "manifest.json").read_text())
    assert {f["path"]: f["sha256"] for f in again["dedup_index"]["files"]} == wrote  # byte for byte
    # A dataset without an index (as `curate skill-order` writes one): no entry, no folder.
    del again["dedup_index"]
    (run / "manifest.json").write_text(json.dumps(again))
    for f in sorted((run / "dedup_index").rglob("*.parquet")):
        f.unlink()
    r = runner.invoke(app, ["index", str(run)])
    assert r.exit_code == 0 and "built" in r.output, r.output
    rebuilt = json.loads((run / "manifest.json").read_text())
    assert {f["path"]: f["sha256"] for f in rebuilt["dedup_index"]["files"]} == wrote
    assert {k: v for k, v in rebuilt.items() if k != "dedup_index"} == {k: v for k, v in again.items()}
    r = runner.invoke(app, ["verify", str(run)])
    assert r.exit_code == 0 and "4 dedup index files match" in r.output, r.output


def test_curate_index_like_another_pipeline(tmp_path: Path) -> None:
    run = small_run(tmp_path)
    like = tmp_path / "later.yaml"
    later = [STAGES[0], {**STAGES[1], "num_perm": 64, "verify": False}]
    like.write_text(json.dumps(pipeline_dict(["x"], tmp_path / "x", stages=later)))
    r = runner.invoke(app, ["index", str(run), "--like", str(like)])
    assert r.exit_code == 2 and "use --force to replace it" in r.output, r.output
    r = runner.invoke(app, ["index", str(run), "--like", str(like), "--force"])
    assert r.exit_code == 0, r.output
    params = json.loads((run / "manifest.json").read_text())["dedup_index"]["params"]
    assert (params["num_perm"], params["shingles"]) == (64, False)
    assert not (run / "dedup_index" / "shingles").exists()  # unverified near-dedup needs no shingle sets
    write_jsonl(tmp_path / "new.jsonl", [{"id": "n0", "text": salad(3) + " with a tail"}])
    res = run_pipeline(pipeline_dict([str(tmp_path / "new.jsonl")], tmp_path / "later",
                                     stages=[{**s, "against": [str(run)]} for s in later]))
    assert res.manifest["stages"][-1]["dropped"] == {"duplicate_of_corpus": 1}


@pytest.mark.parametrize("damage,kind", [("edit", "docs"), ("truncate", "bands")])
def test_a_changed_index_file_is_refused_naming_it(tmp_path: Path, damage: str, kind: str) -> None:
    run = small_run(tmp_path)
    victim = next((run / "dedup_index" / kind).glob("*.parquet"))
    data = bytearray(victim.read_bytes())
    if damage == "edit":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    victim.write_bytes(bytes(data))
    rel = str(victim.relative_to(run))
    r = runner.invoke(app, ["verify", str(run)])
    assert r.exit_code == 1 and f"MISMATCH {rel}: " in r.output, r.output
    write_jsonl(tmp_path / "new.jsonl", [{"id": "n0", "text": salad(2) + " with a tail"}])
    with pytest.raises(DedupIndexError, match=rf"{victim}: .*(bytes|sha256).* not used; rebuild it with `curate "
                                              rf"index {run} --force`"):
        run_pipeline(pipeline_dict([str(tmp_path / "new.jsonl")], tmp_path / "later",
                                   stages=[{**s, "against": [str(run)]} for s in STAGES]))
    r = runner.invoke(app, ["index", str(run), "--force"])
    assert r.exit_code == 0 and runner.invoke(app, ["verify", str(run)]).exit_code == 0


def test_verify_reports_an_unlisted_index_file(tmp_path: Path) -> None:
    run = small_run(tmp_path)
    (run / "dedup_index" / "bands" / "999.parquet").write_bytes(b"x")
    r = runner.invoke(app, ["verify", str(run)])
    assert r.exit_code == 1 and "dedup_index/bands/999.parquet: unexpected file" in r.output, r.output


def test_bucket_counts_are_powers_of_two_that_refine_into_the_largest() -> None:
    assert [index_buckets(n) for n in (0, 1, 16_384, 16_385, 100_000, 1_000_000, 10**9)] == [1, 1, 1, 2, 8, 64, 64]
    h = np.random.default_rng(0).integers(0, 2**63, 1000)
    for n in (1, 2, 8, 64):  # a group keyed by the finest bucket needs exactly one file of every index
        assert (bucket_of(h, 64) % n == bucket_of(h, n)).all()
