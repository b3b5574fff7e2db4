"""Shared fixtures: offline environment, tiny corpora written per test, one Ray cluster per session."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from curation.testing.tiny import PROSE  # noqa: F401 (re-exported: tests import it from here)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]


def cuda_available() -> bool:
    """Whether torch sees a CUDA device (False without torch)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu`-marked tests, with the reason shown by -rs, where there is no CUDA device.

    torch is imported only when such a test was collected, so a CPU-only selection stays fast.
    """
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if gpu and not cuda_available():
        for item in gpu:
            item.add_marker(pytest.mark.skip(reason="gpu: needs a CUDA device, and torch sees none"))


SAMPLE = REPO / "curation" / "data" / "sample"


def write_jsonl(path: Path, records: list[Any], compress: str | None = None) -> Path:
    """Write records (dicts, or raw str/bytes lines written as-is) as JSON lines."""
    lines = []
    for rec in records:
        if isinstance(rec, bytes):
            lines.append(rec)
        elif isinstance(rec, str):
            lines.append(rec.encode())
        else:
            lines.append(json.dumps(rec).encode())
    data = b"\n".join(lines) + b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress == "gz":
        data = gzip.compress(data)
    elif compress == "zst":
        import zstandard

        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def pipeline_dict(inputs: list[str], out: Path, stages: list[dict[str, Any]] | None = None,
                  kind: str = "local", **output: Any) -> dict[str, Any]:
    return {
        "name": "test",
        "input": {"paths": inputs, "batch_size": 4},
        "stages": stages if stages is not None else [{"stage": "text_length_v1", "min_chars": 20},
                                                     {"stage": "exact_dedup_v1", "num_buckets": 4}],
        "output": {"dir": str(out), "token_counter": "whitespace", **output},
        "executor": {"kind": kind, "num_cpus": 2},
    }


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    """Three JSONL files (plain, gz, zst) with prose, duplicates and short docs."""
    d = tmp_path / "in"
    write_jsonl(d / "a.jsonl", [
        {"id": "a1", "text": PROSE[0], "domain": "web"},
        {"id": "a2", "text": PROSE[1], "domain": "web"},
        {"id": "a3", "text": "too short", "domain": "web"},
    ])
    write_jsonl(d / "b.jsonl.gz", [
        {"id": "b1", "text": PROSE[0] + "  ", "domain": "books"},  # whitespace-normalised duplicate of a1
        {"id": "b2", "text": PROSE[2], "domain": "books"},
    ], compress="gz")
    write_jsonl(d / "c.jsonl.zst", [
        {"id": "c1", "text": PROSE[1], "domain": "web"},  # duplicate of a2
        {"id": "c2", "text": PROSE[2].upper(), "domain": "web"},
    ], compress="zst")
    return d


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """One local Ray cluster for the session (executors reuse it and leave it running)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialling hosts this machine cannot reach.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's Chromium driven by Playwright, one per test module (the page tests share it)."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install it with `apt-get update && apt-get install -y chromium` "
                    "(scripts/setup.sh does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()
