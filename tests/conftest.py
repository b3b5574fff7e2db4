"""Shared fixtures: offline environment, tiny corpora written per test, one Ray cluster per session."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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

# Real English prose long enough for the Gopher/C4/FineWeb rules (>= 50 words, 5 sentences).
PROSE = [
    "The library keeps a record of every book that is borrowed by a member of the public. "
    "When a book is returned late, the member pays a small fine that goes to the reading fund. "
    "Most of the members are students who come to the library in the evening to study. "
    "The staff have noticed that the quiet rooms are full by seven o'clock on most days. "
    "They have asked the council for more money so that they can open a second floor for study. "
    "The council will make its decision at the meeting that is planned for the end of the month.",
    "Rivers carry water from the mountains to the sea, and along the way they shape the land. "
    "A fast river cuts a deep valley into the rock, while a slow one spreads out over a wide plain. "
    "Farmers have lived beside rivers for thousands of years because the soil there is rich. "
    "Floods bring new soil each year, but they can also destroy homes and fields in a single night. "
    "Engineers build walls and channels to control the water and to protect the towns nearby. "
    "Some scientists argue that these walls make the floods worse further down the river.",
    "Learning to cook is one of the most useful skills that a young person can have at home. "
    "It saves money, because a meal made at home costs much less than one bought in a shop. "
    "It is also healthier, since the cook can choose fresh food and use less salt and sugar. "
    "Many people say that they do not have the time to cook, but simple meals take only minutes. "
    "A pot of soup or a plate of pasta with vegetables can be ready in less than half an hour. "
    "With a little practice, anyone can learn to make a few good dishes that the family will enjoy.",
]


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
