"""``decontaminate_v1``: drop, mark or cut documents that share word n-grams with eval sets.

The eval files are read and hashed once on the driver, when the plan builds the stage to
validate it; the built index is attached to the stage's config object, which travels to the
workers inside the pickled plan (Ray puts it in the object store once per pass), so workers do
not read the eval files and need not even see them. A process that builds the stage from a config
without an attached index (or whose eval files changed on disk since) builds it once, cached per
process by the sha256 of the eval files. Those files are named by ``path`` fields, so their
digests enter the run identity and editing one refuses a resume.

Matching: see ``ngrams`` (normalisation, hashing) and ``index`` (lookup). A document is
contaminated when it contains at least one eval n-gram and the share of its words inside matched
n-grams is at least ``min_overlap_fraction``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from curation.config import check_choices
from curation.errors import ConfigError
from curation.io.digest import file_digest
from curation.registry import register_stage
from curation.stages.base import Decisions, Filter
from curation.stages.decontam.evalsets import EvalFileSpec
from curation.stages.decontam.index import BatchMatch, EvalIndex, build_index
from curation.stages.decontam.ngrams import words, words_with_spans

_CACHE: dict[tuple[Any, ...], EvalIndex] = {}
_ATTACHED = "_built_index"  # attribute of the config object holding (stat key, index)


@dataclass(kw_only=True)  # not slots: the built index rides on the instance (see module docstring)
class DecontaminateConfig:
    """Args:
        eval_files: The eval sets (path, fields, id_field, format each).
        n: Words per n-gram (13, as GPT-3 and OLMo).
        mode: ``drop`` contaminated documents (reason ``contaminated``), ``mark`` them with
            ``contam_*`` columns, or ``remove_spans``: cut the matched word spans out.
        min_overlap_fraction: A document with matches counts as contaminated when at least this
            share of its words lies inside matched n-grams (0: any match).
        min_item_words: Eval texts shorter than n words are matched whole (as one n-gram of their
            own length) if they have at least this many words, else ignored (a 2-word answer would
            match most of the web).
        min_remaining_chars: ``remove_spans`` drops a document left with fewer characters than this.
    """

    eval_files: list[EvalFileSpec] = field(default_factory=list)
    n: int = 13
    mode: Literal["drop", "mark", "remove_spans"] = "drop"
    min_overlap_fraction: float = 0.0
    min_item_words: int = 8
    min_remaining_chars: int = 100

    def __post_init__(self) -> None:
        check_choices(self)
        if not self.eval_files:
            raise ValueError("eval_files: name at least one eval file")
        if self.n < 1:
            raise ValueError(f"n: must be >= 1, got {self.n}")
        if not 1 <= self.min_item_words <= self.n:
            raise ValueError(f"min_item_words: must be in [1, n={self.n}], got {self.min_item_words}")
        if not 0.0 <= self.min_overlap_fraction <= 1.0:
            raise ValueError(f"min_overlap_fraction: must be in [0, 1], got {self.min_overlap_fraction}")
        if self.min_remaining_chars < 0:
            raise ValueError(f"min_remaining_chars: must be >= 0, got {self.min_remaining_chars}")


def _stat_key(cfg: DecontaminateConfig) -> tuple[Any, ...] | None:
    """Cheap identity of the eval files on this machine; None when one is absent here."""
    try:
        stats = [os.stat(s.path) for s in cfg.eval_files]
    except FileNotFoundError:
        return None
    return tuple((s.path, st.st_size, st.st_mtime_ns) for s, st in zip(cfg.eval_files, stats))


def load_index(cfg: DecontaminateConfig) -> EvalIndex:
    """The index for ``cfg``: the one attached to it if still current, else built (cached per process)."""
    attached = getattr(cfg, _ATTACHED, None)
    stat = _stat_key(cfg)
    if attached is not None and (stat is None or attached[0] == stat):
        return attached[1]
    for s in cfg.eval_files:
        if not os.path.isfile(s.path):
            raise ConfigError(f"decontaminate_v1: eval file {s.path} does not exist")
    key = (cfg.n, cfg.min_item_words,
           tuple((s.path, tuple(s.fields), s.id_field, s.format, file_digest(s.path)) for s in cfg.eval_files))
    if key not in _CACHE:
        _CACHE[key] = build_index(cfg.eval_files, cfg.n, cfg.min_item_words)
    setattr(cfg, _ATTACHED, (stat, _CACHE[key]))
    return _CACHE[key]


def cut_spans(index: EvalIndex, text: str) -> str:
    """``text`` without any eval n-gram: each matched run of words is cut from the start of its
    first whitespace token to the end of its last. Cutting can join words into a new eval
    n-gram, so this repeats until nothing matches (each round removes words, so it ends)."""
    while True:
        ws, spans = words_with_spans(text)
        m = index.match([ws])
        if m.ngrams[0] == 0:
            return text
        edges = np.diff(np.concatenate([[0], m.covered.astype(np.int8), [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        pieces, last = [], 0
        for a, b in zip(starts, ends):
            pieces.append(text[last : spans[a][0]])
            last = spans[b - 1][1]
        pieces.append(text[last:])
        text = "".join(pieces)


@register_stage("decontaminate_v1")
class Decontaminate(Filter):
    """Drops (reason ``contaminated``), marks or cuts documents that overlap the eval sets.

    ``mark`` adds ``contam_ngrams`` (matched n-gram positions), ``contam_fraction`` (share of the
    words inside matches) and ``contam_source`` (``FILE#ID`` of the item with most matches, null
    unless contaminated); ``remove_spans`` adds those and ``contam_removed_chars``.
    """

    Config = DecontaminateConfig

    artifact_keys = ("eval_files.*.path",)

    def __init__(self, config: DecontaminateConfig | None = None) -> None:
        super().__init__(config)
        self.index = load_index(self.config)

    def output_columns(self) -> dict[str, pa.DataType]:
        if self.config.mode == "drop":
            return {}
        cols = {"contam_ngrams": pa.int32(), "contam_fraction": pa.float32(), "contam_source": pa.string()}
        if self.config.mode == "remove_spans":
            cols["contam_removed_chars"] = pa.int32()
        return cols

    def _details(self, m: BatchMatch, d: int, fraction: float) -> dict[str, Any]:
        (file, item_id), n_items = m.source(d)
        return {"eval_file": file, "eval_id": item_id, "eval_items": n_items,
                "matched_ngrams": int(m.ngrams[d]), "overlap_fraction": round(float(fraction), 6)}

    def decide(self, batch: pa.Table) -> Decisions:
        texts = batch.column("text").to_pylist()
        n = len(texts)
        m = self.index.match([words(t) for t in texts])
        fraction = m.fraction()
        hit = np.flatnonzero((m.ngrams > 0) & (fraction >= self.config.min_overlap_fraction))
        keep = np.ones(n, dtype=bool)
        reasons: list[str | None] = [None] * n
        details: list[dict[str, Any] | None] = [None] * n
        if self.config.mode == "drop":
            keep[hit] = False
            for d in hit:
                reasons[d], details[d] = "contaminated", self._details(m, d, fraction[d])
            return Decisions(keep=keep, reasons=reasons, details=details)
        source: list[str | None] = [None] * n
        for d in hit:
            (file, item_id), _ = m.source(d)
            source[d] = f"{file}#{item_id}"
        cols = {"contam_ngrams": pa.array(m.ngrams.astype(np.int32)),
                "contam_fraction": pa.array(fraction.astype(np.float32)),
                "contam_source": pa.array(source, type=pa.string())}
        if self.config.mode == "mark":
            return Decisions(keep=keep, reasons=reasons, details=details, columns=cols)
        removed = np.zeros(n, dtype=np.int32)
        new_texts = list(texts)
        for d in hit:
            new_texts[d] = cut_spans(self.index, texts[d])
            removed[d] = len(texts[d]) - len(new_texts[d])
            remaining = len(new_texts[d].strip())
            if remaining < self.config.min_remaining_chars:
                keep[d], reasons[d] = False, "contaminated"
                details[d] = {**self._details(m, d, fraction[d]), "remaining_chars": remaining}
        cols["contam_removed_chars"] = pa.array(removed)
        return Decisions(keep=keep, reasons=reasons, details=details, columns=cols,
                         texts=new_texts if len(hit) else None)
