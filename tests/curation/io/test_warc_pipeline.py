"""Crawl archives through whole runs: ``pipelines/web.yaml`` on the bundled sample, and the URL filter on WARC URLs."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from curation.config import load_yaml
from curation.io.readers import InputConfig, read_documents
from tests.conftest import REPO, pipeline_dict
from tests.curation.executors.runs import run_pipeline
from tests.curation.io.test_warc import PAGE_TEXT, page, rid, warc_bytes

SAMPLE_WEB = REPO / "curation" / "data" / "sample_web"


def test_web_pipeline_runs_on_the_bundled_sample(tmp_path: Path) -> None:
    cfg = load_yaml(REPO / "pipelines" / "web.yaml")
    cfg["input"]["paths"] = [str(SAMPLE_WEB / "*.warc.gz")]
    cfg["output"]["dir"] = str(tmp_path / "run")
    cfg["executor"] = {"kind": "local"}
    m = run_pipeline(cfg).manifest
    # 100 records: warcinfo, 48 request/response pairs, a metadata record, a text/plain and a 404 response.
    assert m["totals"] == {"blank_lines": 52, "docs_out": 12, "docs_read": 48, "input_bytes": 245430,
                           "input_files": 1, "lines": 100, "quarantined": 0}
    funnel = {s["name"]: (s["in"], s["out"]) for s in m["stages"]}
    assert funnel["url_filter_v1"] == (48, 48) and funnel["exact_dedup_v1"] == (35, 34)
    shards = pq.read_table(tmp_path / "run" / "shards").to_pylist()
    assert len(shards) == 12 and all(d["url"].startswith("https://debian-doc.invalid/") for d in shards)
    assert {d["domain"] for d in shards} == {"web"}
    intro = next(d for d in shards if d["url"].endswith("libffi8/html/Introduction.html"))
    meta = json.loads(intro["metadata"])
    assert intro["id"] == meta["warc_record_id"].strip("<>") and meta["http_status"] == 200
    # The extracted text, with paragraph breaks made single by c4_quality_v1's line filter.
    assert "\n1 What is libffi?\nCompilers for high level languages generate code" in intro["text"]
    # The page captured twice: the later capture is the exact duplicate dropped.
    read = [d for b in read_documents(str(SAMPLE_WEB / "debian-doc.warc.gz"), "s",
                                      InputConfig(paths=["x"])) for d in b.table.to_pylist()]
    captures = sorted((json.loads(d["metadata"])["warc_date"], d["id"]) for d in read if d["url"] == intro["url"])
    dropped = duckdb.sql(f"SELECT id FROM '{tmp_path}/run/decisions/**/*.parquet' "
                         "WHERE stage = 'exact_dedup_v1'").fetchall()
    assert [c[1] for c in captures] == [intro["id"], dropped[0][0]] and len(dropped) == 1


def test_the_url_filter_sees_the_warc_target_uri(tmp_path: Path) -> None:
    data, _ = warc_bytes([page(1, "https://www.spam-offers.com/deal"), page(2, "https://docs.example/page")])
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "c.warc").write_bytes(data)
    cfg = pipeline_dict([str(tmp_path / "in" / "*.warc")], tmp_path / "run",
                        stages=[{"stage": "url_filter_v1", "extra_domains": ["spam-offers.com"]}])
    m = run_pipeline(cfg).manifest
    assert m["totals"]["docs_out"] == 1
    (kept,) = pq.read_table(tmp_path / "run" / "shards").to_pylist()
    assert (kept["id"], kept["url"], kept["text"]) == (rid(2).strip("<>"), "https://docs.example/page", PAGE_TEXT)
    rows = duckdb.sql(f"SELECT id, stage, reason, url FROM '{tmp_path}/run/decisions/**/*.parquet'").fetchall()
    assert rows == [(rid(1).strip("<>"), "url_filter_v1", "domain", "https://www.spam-offers.com/deal")]


def test_curate_plan_samples_web_inputs_as_raw_records(tmp_path: Path) -> None:
    from curation.io.web import sample_web_input, split_web_sample
    from curation.pipeline import PipelineConfig
    from curation.planner import Cluster, predict

    recs = [page(i, f"https://e.org/{i}", b"<p>%s page %d</p>" % (b"keep" if i % 3 else b"drop", i))
            for i in range(1, 10)] + [page(10, "https://e.org/t.txt", b"keep me?", ctype="text/plain")]
    data, _ = warc_bytes(recs)
    path = tmp_path / "in.warc"
    path.write_bytes(data)
    cfg = InputConfig(paths=[str(path)])
    sample = tmp_path / "s.warc"
    docs, size, sampled, sampled_size = sample_web_input(str(path), "warc", cfg, lambda t: "keep" in t, sample)
    assert (docs, sampled) == (9, 6)  # the text/plain response is not a document
    moved = split_web_sample(sample, 2, tmp_path / "probe.warc")
    probe = read_documents(str(tmp_path / "probe.warc"), "p", cfg)
    read_urls = [u for b in probe for u in b.table.column("url").to_pylist()]
    assert read_urls == ["https://e.org/1", "https://e.org/2"] and 0 < moved < sampled_size < size
    # The whole planner on the bundled sample: every page is sampled (it is small) and read as the run reads it.
    data_cfg = load_yaml(REPO / "pipelines" / "web.yaml")
    data_cfg["input"]["paths"] = [str(SAMPLE_WEB / "*.warc.gz")]
    data_cfg["stages"] = [{"stage": "text_length_v1", "min_chars": 200}]
    pred = predict(PipelineConfig.from_mapping(data_cfg), 0.01, Cluster(cpus=2))
    assert pred.input_docs == 48 and pred.kept_docs == 44
