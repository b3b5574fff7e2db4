"""Runs whose inputs and outputs live on an S3 server (moto's server mode on loopback, never a cloud).

The quickstart reads the sample corpus from ``s3://`` and writes its run there through Ray; the
result must equal a local-disk run, ``curate stats``/``query`` must work on the URL (confined to the
run prefix), reruns must be no-ops, a lost task must resume, and no half-written object may appear.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.errors import CurationError
from curation.executors import make_executor
from curation.io.atomic import atomic_open, write_json
from curation.io.storage import run_path
from curation.io.writers import RollingParquetWriter
from curation.pipeline import load_pipeline
from curation.stats import query, summary
from tests.conftest import REPO, SAMPLE
from tests.curation.moto_s3 import s3  # noqa: F401  (module-scoped fixture)


def _run(out: str, *overrides: str, inputs: str = "s3://corpus/sample/*.jsonl.gz", kind: str = "ray") -> Any:
    cfg = load_pipeline(REPO / "pipelines" / "quickstart.yaml",
                        [f"input.paths=[{inputs}]", f"output.dir={out}", f"executor.kind={kind}", *overrides])
    ex = make_executor(cfg)
    try:
        return ex.run()
    finally:
        ex.close()


def _shard_digests(fs: Any, root: str) -> dict[str, str]:
    manifest = json.loads(fs.cat(f"{root}/manifest.json"))
    return {s["path"]: hashlib.sha256(fs.cat(f"{root}/{s['path']}")).hexdigest() for s in manifest["shards"]}


@pytest.mark.slow
def test_quickstart_reads_and_writes_s3(s3: Any, tmp_path: Path) -> None:
    # The run's own temp folder (Ray's stays in the shared one: its socket paths must stay short), so the
    # staging files counted below are this run's, not those of runs other test processes make meanwhile.
    staging = tmp_path / "staging"
    staging.mkdir()
    env = {**os.environ, "TMPDIR": str(staging), "RAY_TMPDIR": tempfile.gettempdir()}
    # The README's command on a fresh local Ray cluster, whose workers get the S3 settings from the
    # environment as a real cluster's nodes would; global steps go through Ray Data shuffles.
    r = subprocess.run([sys.executable, "-m", "curation.cli", "run", "pipelines/quickstart.yaml",
                        "-o", "input.paths=[s3://corpus/sample/*.jsonl.gz]", "-o", "output.dir=s3://runs/quickstart",
                        "-o", "executor.global_in_driver_mb=0"], cwd=REPO, capture_output=True, text=True, timeout=600,
                       env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "done" in r.stdout and "s3://runs/quickstart" in r.stdout
    result_manifest = json.loads(s3.cat("runs/quickstart/manifest.json"))
    local = _run(str(tmp_path / "local"), inputs=str(SAMPLE / "*.jsonl.gz"), kind="local")
    assert result_manifest["totals"]["docs_out"] == local.manifest["totals"]["docs_out"] > 100
    assert "local" not in result_manifest["nodes"]  # the tasks ran on Ray
    # Same documents, same bytes: every shard's digest in the manifest is the object's real digest.
    remote = _shard_digests(s3, "runs/quickstart")
    assert remote == {s["path"]: s["sha256"] for s in result_manifest["shards"]}
    assert remote == {s["path"]: s["sha256"] for s in local.manifest["shards"]}
    assert [s["source"] for s in result_manifest["inputs"]] == [s["source"] for s in local.manifest["inputs"]]
    # Nothing half-written: no temp objects on the store, no staging files left on local disk.
    assert not [p for p in s3.find("runs/quickstart") if p.endswith(".tmp")]
    assert not list(staging.glob("curation-*.tmp"))
    # Stats and SQL read the run on the store, confined to its prefix.
    s = summary("s3://runs/quickstart")
    assert s["totals"]["docs_out"] == sum(n for _, n, *_ in s["domains"])
    assert query("s3://runs/quickstart", "SELECT count(*) FROM docs")[1] == [(result_manifest["totals"]["docs_out"],)]
    with pytest.raises(Exception, match="disabled by configuration|Permission"):
        query("s3://runs/quickstart", "SELECT count(*) FROM read_json_auto('s3://corpus/sample/*.jsonl.gz')")
    # A rerun is a no-op; a finished run with a different config is refused.
    assert _run("s3://runs/quickstart", "executor.global_in_driver_mb=0", kind="local").nothing_to_do
    with pytest.raises(CurationError, match="different config"):
        _run("s3://runs/quickstart", "stages.0.min_chars=300", kind="local")


@pytest.mark.slow
def test_lost_task_on_s3_resumes_to_the_same_shards(s3: Any, tmp_path: Path) -> None:
    root = "runs/resume"
    first = _run(f"s3://{root}", kind="local")
    before = _shard_digests(s3, root)
    # Lose the commit point and one final-pass task (its marker and shards), as a crash would.
    last_seg = max(int(p.rsplit("seg", 1)[1].split("/")[0]) for p in s3.find(f"{root}/_markers") if "/seg" in p)
    s3.rm(f"{root}/manifest.json")
    s3.rm(f"{root}/_markers/seg{last_seg}/00002.json")
    for p in s3.find(f"{root}/shards"):
        if p.rsplit("/", 1)[1].startswith("00002-"):
            s3.rm(p)
    second = _run(f"s3://{root}", kind="local")
    assert second.tasks_run == 1
    assert _shard_digests(s3, root) == before
    assert second.manifest["shards"] == first.manifest["shards"]
    # The dedup index, rebuilt from the shards (the first run's task parts were removed with its commit), is the same.
    assert second.manifest["dedup_index"]["files"] == first.manifest["dedup_index"]["files"]


def test_failed_writes_publish_nothing(s3: Any) -> None:
    folder = run_path("s3://runs/aborted")
    schema = pa.schema([("x", pa.int64())])
    w = RollingParquetWriter(folder, "part-", schema)
    w.write(pa.table({"x": [1, 2, 3]}))
    staged = w._tmp
    assert staged is not None and staged.exists()  # written locally while open
    w.abort()
    assert not staged.exists() and not s3.exists("runs/aborted")
    with pytest.raises(RuntimeError):
        with atomic_open("s3://runs/aborted/x.json") as fh:
            fh.write(b"{half")
            raise RuntimeError("crash while writing")
    assert not s3.exists("runs/aborted/x.json")
    write_json("s3://runs/aborted/ok.json", {"a": 1})
    assert json.loads(s3.cat("runs/aborted/ok.json")) == {"a": 1}
    w = RollingParquetWriter(folder, "part-", schema)
    w.write(pa.table({"x": [1, 2, 3]}))
    (f,) = w.close()
    assert f["sha256"] == hashlib.sha256(s3.cat("runs/aborted/part-000.parquet")).hexdigest()
    with s3.open("runs/aborted/part-000.parquet", "rb") as fh:
        assert pq.read_table(fh).column("x").to_pylist() == [1, 2, 3]


@pytest.mark.slow
def test_training_loader_reads_a_run_on_s3(s3: Any, tmp_path: Path) -> None:
    from training.data.loader import LoaderConfig, MixtureLoader

    _run("s3://runs/forloader", kind="local")
    _run(str(tmp_path / "local"), inputs=str(SAMPLE / "*.jsonl.gz"), kind="local")
    batches = []
    for run in ("s3://runs/forloader", str(tmp_path / "local")):
        loader = MixtureLoader(LoaderConfig(runs=[run], ratios={"python_docs": 1.0, "readme": 1.0}, seq_len=32,
                                            batch_size=2, tokenizer="bytes"))
        it = iter(loader)
        batches.append([next(it)[0].tolist() for _ in range(3)])
    assert batches[0] == batches[1]  # same documents, same order, wherever the shards live
