"""DuckDB stats over a run, the read-only SQL guard, and shards readable by common tools."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curation.errors import ConfigError
from curation.stats import query, summary
from tests.conftest import pipeline_dict
from tests.curation.executors.runs import run_pipeline


@pytest.fixture
def run_dir(tiny_corpus: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    run_pipeline(pipeline_dict([str(tiny_corpus / "*")], out))
    return out


def test_summary_and_queries(run_dir: Path) -> None:
    s = summary(run_dir)
    # `curate stats --json` prints the totals as the manifest file has them, in its order
    assert list(s["totals"].items()) == list(json.loads((run_dir / "manifest.json").read_text())["totals"].items())
    assert s["funnel"] == [("input", 7, 7, 0), ("text_length_v1", 7, 6, 1), ("exact_dedup_v1", 6, 4, 2)]
    assert [(r[0], r[1], r[2]) for r in s["reasons"]] == [("exact_dedup_v1", "exact_duplicate", 2),
                                                           ("text_length_v1", "too_short", 1)]
    assert [(d[0], d[1]) for d in s["domains"]] == [("web", 3), ("books", 1)]
    cols, rows = query(run_dir, "SELECT id, reason, json_extract_string(details, '$.dup_of') AS kept "
                                "FROM decisions WHERE id = 'b1'")
    assert cols == ["id", "reason", "kept"] and rows == [("b1", "exact_duplicate", "a1")]
    _, rows = query(run_dir, "SELECT sum(rows) FROM shards")
    assert rows == [(4,)]


@pytest.mark.parametrize("sql,match", [
    ("SELECT * FROM read_csv('/etc/passwd')", "Permission"),
    ("SELECT * FROM read_text('/etc/hostname')", "Permission"),
    ("x') UNION SELECT * FROM read_csv('/etc/passwd') --", "does not parse"),
    # Writes inside the run directory, where DuckDB's own directory limit would let them through: only the
    # statement guard stops them, so the unchanged file listing below is a real check.
    ("COPY (SELECT 1) TO '{run}/x.csv'", "only SELECT"),
    ("SELECT 1; COPY (SELECT 1) TO '{run}/x.csv'", "exactly one"),
    ("SET enable_external_access = true", "only SELECT"),
    ("ATTACH '{run}/x.db'", "only SELECT"),
    ("INSTALL httpfs", "only SELECT"),
    ("CREATE TABLE t AS SELECT 1", "only SELECT"),
    ("SELECT * FROM glob('/etc/*')", "refused: Permission"),
    ("SELECT * FROM read_blob('/etc/hostname')", "refused: Permission"),
    ("SELECT * FROM read_csv('file:///etc/passwd')", "refused: Permission"),
    ("SELECT * FROM query('COPY (SELECT 1) TO ''/tmp/curation-x.csv''')", "Expected a single SELECT"),
    ("LOAD httpfs", "only SELECT"),
    ("EXPORT DATABASE '/tmp/curation-x'", "only SELECT"),
    ("PRAGMA enable_profiling", "only SELECT"),
    ("CALL pragma_version()", "only SELECT"),
])
def test_sql_guard_refuses(run_dir: Path, sql: str, match: str) -> None:
    before = sorted(run_dir.rglob("*"))
    with pytest.raises(ConfigError, match=match):
        query(run_dir, sql.format(run=run_dir))
    assert sorted(run_dir.rglob("*")) == before
    assert not Path("/tmp/curation-x.csv").exists() and not Path("/tmp/curation-x").exists()


def test_files_outside_the_run_are_refused_even_other_runs(run_dir: Path, tmp_path: Path, tiny_corpus: Path) -> None:
    sibling = tmp_path / "run-evil"  # sibling-prefix path of the run directory
    run_pipeline(pipeline_dict([str(tiny_corpus / "*")], sibling))
    with pytest.raises(ConfigError, match="Permission"):
        query(run_dir, f"SELECT count(*) FROM read_parquet('{sibling}/shards/*.parquet')")
    _, rows = query(run_dir, f"SELECT count(*) FROM read_parquet('{run_dir}/shards/*.parquet')")
    assert rows == [(4,)]


def test_unfinished_run_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no manifest.json"):
        summary(tmp_path)


def test_shards_load_unchanged_in_common_tools(run_dir: Path) -> None:
    import datasets
    import duckdb
    import pandas as pd
    import polars as pl

    files = sorted(str(p) for p in (run_dir / "shards").glob("*.parquet"))
    expected = sorted(["a1", "a2", "b2", "c2"])
    assert sorted(pd.concat([pd.read_parquet(f) for f in files])["id"]) == expected
    assert sorted(pl.read_parquet(files)["id"].to_list()) == expected
    assert sorted(r[0] for r in duckdb.sql(f"SELECT id FROM read_parquet({files})").fetchall()) == expected
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(run_dir.parent / "hf"))
    assert sorted(ds["id"]) == expected and set(ds.column_names) >= {"text", "domain", "n_chars"}


def test_near_dup_sources_and_pii_tables(tmp_path: Path) -> None:
    """`curate stats` tables: near-dup removals per source (templated source first) and PII per type."""
    from typer.testing import CliRunner

    from curation.cli import app
    from tests.conftest import write_jsonl
    from tests.curation.stages.dedup.test_near_audit import audit_corpus

    corpus = audit_corpus(tmp_path)
    write_jsonl(corpus / "mail.jsonl", [
        {"id": "m1", "text": "Write to ann@example.org or bob@example.com about the meeting on the third floor."},
        {"id": "m2", "text": "No contact details in this one, only a long enough sentence about the weather today."}])
    stages = [{"stage": "pii_v1", "types": ["email", "ip"]},
              {"stage": "near_dedup_v1", "threshold": 0.8, "num_buckets": 4, "on_mass_removal": "warn"}]
    out = tmp_path / "run"
    run_pipeline(pipeline_dict([str(corpus / "*.jsonl")], out, stages=stages))
    s = summary(out)
    assert [r[:4] for r in s["near_dup_sources"]] == [("tmpl.jsonl", 20, 19, 0.95), ("news.jsonl", 11, 1, 0.0909)]
    # checked: kept documents with the type enabled; phone/card/secret were not looked for (null)
    assert s["pii"] == [("email", 23, 1, 2), ("ip", 23, 0, 0), ("phone", 0, 0, 0), ("card", 0, 0, 0),
                        ("secret", 0, 0, 0)]
    printed = CliRunner().invoke(app, ["stats", str(out)], terminal_width=200)
    assert printed.exit_code == 0, printed.output
    assert "Near-dup removals per source" in printed.output and "PII found in kept documents" in printed.output
    assert "warning: near_dedup_v1: source 'tmpl.jsonl' lost 19 of 20 documents (95.0%)" in printed.output
    row = next(line for line in printed.output.splitlines() if "tmpl.jsonl" in line)
    assert [c.strip() for c in row.split("│")[1:5]] == ["tmpl.jsonl", "20", "19", "95.0"]


def test_stats_without_near_dedup_or_pii_have_no_such_tables(run_dir: Path) -> None:
    s = summary(run_dir)
    assert s["near_dup_sources"] == [] and s["pii"] == [] and s["warnings"] == []
