"""Hand-made eval sets (JSONL, Parquet, plain text) and documents with known overlaps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

ALPHA = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron"  # 15 words
SHORT_Q = "What is the capital city of France today?"  # 8 words: indexed whole
TINY_Q = "yes or no"  # 3 words: below min_item_words, ignored
NUMBERS = "one two three four five six seven eight nine ten eleven twelve thirteen"  # 13 words
COLOURS = "red orange yellow green blue indigo violet black white grey pink brown gold silver"  # 14 words

#: Documents and what ``decontaminate_v1`` (n=13, defaults) must find in them.
DOCS = {
    # 13 words of ALPHA with other case and punctuation: 1 n-gram, 13 of 16 words.
    "d_case": "Intro. ALPHA, beta; Gamma delta epsilon zeta eta theta iota kappa lambda mu nu!! outro words",
    # 12 consecutive words of ALPHA only: no match.
    "d_12": "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu and then more",
    "d_parquet": "Counting: " + NUMBERS.upper() + ".",
    "d_txt": "colours " + COLOURS + " and more",
    "d_short": "Tell me: what is the capital city of France, today? Paris.",
    "d_tiny": "yes or no",
    "d_clean": "A plain document about nothing in particular that shares no long run of words.",
}


def write_eval_sets(root: Path) -> dict[str, Path]:
    """eval.jsonl (``question``, ``id``), eval.parquet (``prompt``, ids = row numbers), eval.txt."""
    root.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = [{"id": "q-alpha", "question": ALPHA}, {"id": "q-short", "question": SHORT_Q},
                                  {"id": "q-tiny", "question": TINY_Q}]
    (root / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.table({"prompt": ["an unrelated first prompt", NUMBERS]}), root / "eval.parquet")
    (root / "eval.txt").write_text("first line is short\n\n" + COLOURS + "\n")
    return {"jsonl": root / "eval.jsonl", "parquet": root / "eval.parquet", "txt": root / "eval.txt"}


def eval_config(files: dict[str, Path], **extra: Any) -> dict[str, Any]:
    """The stage's YAML mapping for the three eval files."""
    return {"stage": "decontaminate_v1", "eval_files": [
        {"path": str(files["jsonl"]), "fields": ["question"], "id_field": "id"},
        {"path": str(files["parquet"]), "fields": ["prompt"]},
        {"path": str(files["txt"])},
    ], **extra}
