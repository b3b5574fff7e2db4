"""Paragraph (or line) deduplication across the corpus, as a global stage: ``paragraph_dedup_v1``.

Boilerplate (navigation, cookie banners, licence footers, "Previous | Next | Contents") repeats across
the pages of a site while the rest of each page differs, so document-level dedup keeps it. This stage
removes every unit (a line, or a blank-line separated paragraph) that occurs in at least ``min_docs``
documents from every document but the first one holding it, and drops a document left shorter than
``min_chars`` as ``boilerplate_only``. The exact rules are in docs/methods.md, "Paragraph and line
deduplication"; in short:

* **Units.** The text is cut at separators: in ``line`` mode a newline with any blank lines after it,
  in ``paragraph`` mode a newline followed by at least one blank (whitespace-only) line. So the text
  is ``u0 s0 u1 s1 ... un`` and no unit is blank inside.
* **Key.** xxh3-64 of the unit after NFC, whitespace collapsed and stripped, lower case and, with
  ``normalize_digits``, each number (digits with an optional decimal part) mapped to ``0``. A unit whose
  key is shorter than ``min_unit_chars`` (or empty) has no key: it is never counted nor removed.
* **Count.** A key's documents: those reaching the stage that hold it (repeats inside one document
  count once). With at least ``min_docs`` of them, the key is removed from all but the first holder, by
  input position (input file, then row: the ``_task``/``_row`` order every dedup stage uses); all its
  copies stay in the first holder, all are removed from the others.
* **Rewrite.** A removed unit goes with the separator after it; when the last units are removed, the
  separator after the last unit kept goes too (nothing dangles at the end). Everything else is kept
  byte for byte.
* **Verdict.** A document with units removed whose remaining text has fewer than ``min_chars``
  characters is dropped (``boilerplate_only``, details: characters removed and left, the units);
  others are kept with ``para_dedup_chars`` (characters removed) and ``para_dedup_units`` (per
  removed key: its hash in hex, copies removed here, documents holding it, the document it is kept in).

Steps on the ``Frame`` (``frame.py``), none of which gathers documents in one process:

1. **Keys** (shard pass): per document the key of every unit (0 for a unit without one) and the
   lengths of each unit and of the separator after it: 16 bytes per unit.
2. **Count** (shuffle 1, by key): one ``(key, node, id)`` row per distinct key of a document; a
   group holds every holder of its keys, sorted by node; keys with ``min_docs`` holders or more
   give a removal row ``(node, key, docs, kept_in)`` to every holder but the first.
3. **Resolve** (shuffle 2, by node): each document's key row meets its removal rows; the characters
   removed follow from the unit and separator lengths by the rewrite rule, so the verdict and the
   audit are known before any text is rewritten, and ``apply`` recomputes and checks them.
4. **Audit** (``max_source_removal_fraction`` set): per source (the input file; ``domain`` where it is
   empty, as near-dedup's audit), the share of the characters reaching the stage that it removes
   (units from kept documents, and the whole text of dropped ones). Over the limit the run fails
   (``MassRemovalError``) or, with ``on_mass_removal: warn``, the finding goes to the manifest.

Nodes are ``(task << 32) | row``, so the first holder is the smallest node in any bucketing, on Ray or
in process, and the resolved rows (hence the output bytes) do not depend on either.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import xxhash

from curation.config import check_choices
from curation.registry import register_stage
from curation.stages.base import StageResult, split, with_texts
from curation.stages.dedup.audit import COUNTS, audit_source, enforce, over_limit, sum_by_source
from curation.stages.frame import Frame
from curation.stages.global_stage import GlobalStage, row_positions

log = logging.getLogger(__name__)

#: Separators, as capturing patterns for ``re.split``: a newline and any blank lines after it (``line``),
#: a newline and at least one blank line (``paragraph``). ``[^\S\n]`` is whitespace other than a newline.
SEPARATORS: dict[str, re.Pattern[str]] = {
    "line": re.compile(r"(\n(?:[^\S\n]*\n)*)"),
    "paragraph": re.compile(r"(\n(?:[^\S\n]*\n)+)"),
}

#: A number for ``normalize_digits``: the pattern datatrove's ``simplify_text`` maps to "0" (Python's
#: ``\d`` on str is Unicode's Nd, as ``\p{Nd}`` there), so the two agree on what a digit change is.
NUMBERS = re.compile(r"\d+(?:[.,،٫⎖⎗⎘]\d+)?")

#: How many removed units a dropped document's decision details list (``units_total`` counts all).
DETAIL_UNITS = 50
#: Example documents per source that a mass-removal error or warning names.
EXAMPLES = 3

UNIT_TYPE = pa.struct([
    pa.field("hash", pa.uint64()),  # the unit's key
    pa.field("n", pa.int32()),  # copies of it removed from this document
    pa.field("docs", pa.int64()),  # documents holding it (reaching the stage)
    pa.field("kept_in", pa.string()),  # id of its first holder, which keeps it
])

RESULT_SCHEMA = pa.schema([
    pa.field("_task", pa.int32(), nullable=False),
    pa.field("_row", pa.int64(), nullable=False),
    pa.field("id", pa.string(), nullable=False),
    pa.field("source", pa.string()),  # the audit's source
    pa.field("n_chars", pa.int64(), nullable=False),  # before this stage
    pa.field("removed_chars", pa.int64(), nullable=False),
    pa.field("drop", pa.bool_(), nullable=False),  # boilerplate_only
    pa.field("units", pa.list_(UNIT_TYPE)),  # by documents holding it (most first), then hash
])

#: The kept documents' record of what was removed: ``hash`` as 16 hex digits (as in decision details,
#: JSON having no uint64), so a line can be looked up with ``unit_hash`` and the keeper opened.
OUT_UNIT_TYPE = pa.struct([pa.field("hash", pa.string()), pa.field("n", pa.int32()), pa.field("docs", pa.int64()),
                           pa.field("kept_in", pa.string())])

_UNIT_ROWS = pa.schema([pa.field("h", pa.uint64()), pa.field("node", pa.int64()), pa.field("id", pa.string())])
_JOIN = pa.schema([
    pa.field("node", pa.int64()),
    pa.field("h", pa.uint64()),  # null on a document's row; the removed key on a removal row
    pa.field("docs", pa.int64()),
    pa.field("kept_in", pa.string()),
    pa.field("id", pa.string()),
    pa.field("src", pa.string()),
    pa.field("hs", pa.list_(pa.uint64())),
    pa.field("ulen", pa.list_(pa.int32())),
    pa.field("slen", pa.list_(pa.int32())),
])


@dataclass(kw_only=True)
class ParagraphDedupConfig:
    """Corpus-wide removal of repeated lines or paragraphs.

    Args:
        unit: ``paragraph`` (blank-line separated) or ``line``.
        min_docs: A unit held by at least this many documents is removed from all but the first.
        min_unit_chars: Units whose normalised text is shorter are never counted nor removed ("Yes",
            "}", a bare heading): short lines recur by chance, not because they are boilerplate.
        normalize_digits: Map each number to 0 before hashing, so "Page 3 of 12" and "Page 4 of 12"
            (or dated copyright lines) are one unit.
        min_chars: A document with units removed that is left with fewer characters is dropped as
            ``boilerplate_only``; a document with nothing removed is never dropped here.
        max_source_removal_fraction: Largest share of one source's characters (documents reaching
            the stage; a source is the input file, or ``domain`` where that is empty) that may be
            removed, counting a dropped document's whole text; ``null`` turns the audit off.
        on_mass_removal: ``fail`` (the run stops naming the source, its share and example documents)
            or ``warn`` (logged and recorded in the manifest's ``warnings``).
        num_buckets: Parallelism of the shuffles; the result never depends on it.
    """

    unit: Literal["paragraph", "line"] = "paragraph"
    min_docs: int = 3
    min_unit_chars: int = 20
    normalize_digits: bool = False
    min_chars: int = 100
    max_source_removal_fraction: float | None = 0.5
    on_mass_removal: Literal["fail", "warn"] = "fail"
    num_buckets: int = 64

    def __post_init__(self) -> None:
        check_choices(self)
        if self.min_docs < 2:
            raise ValueError(f"min_docs must be >= 2 (a unit in one document is no duplicate), got {self.min_docs}")
        if self.min_unit_chars < 0 or self.min_chars < 0:
            raise ValueError("min_unit_chars and min_chars must be >= 0")
        if self.num_buckets < 1:
            raise ValueError("num_buckets must be >= 1")
        frac = self.max_source_removal_fraction
        if frac is not None and not 0.0 <= frac <= 1.0:
            raise ValueError(f"max_source_removal_fraction must be in [0, 1] or null, got {frac}")


def split_units(text: str, unit: str) -> tuple[list[str], list[str]]:
    """``text`` as units and the separator after each (``""`` after the last): ``text`` is their
    interleaving, ``u0 s0 u1 s1 ... un ""``."""
    parts = SEPARATORS[unit].split(text)
    return parts[0::2], [*parts[1::2], ""]


def normalize_unit(unit: str, digits: bool = False) -> str:
    """What a unit is compared by: NFC, whitespace collapsed and stripped, lower case, numbers as 0."""
    # " ".join(s.split()) is re.sub(r"\s+", " ", s).strip() (exact.py's text_hashes checks this), faster.
    u = " ".join((unit if unit.isascii() else unicodedata.normalize("NFC", unit)).split()).lower()
    return NUMBERS.sub("0", u) if digits else u


def unit_hash(unit: str, digits: bool = False, min_unit_chars: int = 0) -> int:
    """The key of one unit (``paragraph_dedup_v1``'s ``para_dedup_units.hash``, in hex there), or 0 for
    a unit that has none (blank, or shorter than ``min_unit_chars`` once normalised)."""
    u = normalize_unit(unit, digits)
    if not u or len(u) < min_unit_chars:
        return 0
    # 0 marks "no key", so a text hashing to 0 (a 2^-64 chance) takes 1: merged with that one key at worst.
    return xxhash.xxh3_64_intdigest(u.encode("utf-8", "surrogatepass")) or 1


def rebuild(units: list[str], seps: list[str], keep: list[bool]) -> str:
    """The text with the units not in ``keep`` removed, each with its separator; a removed tail also
    takes the separator after the last kept unit (that separator only led to removed text)."""
    out: list[str] = []
    last = -1
    for i, (u, s, k) in enumerate(zip(units, seps, keep)):
        if k:
            out += (u, s)
            last = i
    if 0 <= last < len(units) - 1:
        out[-1] = ""
    return "".join(out)


def removed_chars(ulen: np.ndarray, slen: np.ndarray, keep: np.ndarray) -> int:
    """``len(text) - len(rebuild(...))`` from the lengths alone (what ``run_global`` knows)."""
    total = int(ulen.sum() + slen.sum())
    if not keep.any():
        return total
    last = int(np.flatnonzero(keep)[-1])
    kept = int(ulen[keep].sum() + slen[keep].sum())
    if last < len(keep) - 1:
        kept -= int(slen[last])
    return total - kept


@register_stage("paragraph_dedup_v1")
class ParagraphDedup(GlobalStage):
    """Removes lines or paragraphs repeated across ``min_docs`` documents from all but the first."""

    Config = ParagraphDedupConfig
    reason = "boilerplate_only"
    result_schema = RESULT_SCHEMA

    def __init__(self, config: ParagraphDedupConfig | None = None) -> None:
        super().__init__(config)
        self.num_buckets = self.config.num_buckets

    def describe(self) -> str:
        c = self.config
        audit = ("no audit" if c.max_source_removal_fraction is None else
                 f"{c.on_mass_removal} above {c.max_source_removal_fraction:.0%} of a source's characters")
        return (f"paragraph_dedup: {c.unit}s of >= {c.min_unit_chars} normalised chars"
                f"{' (digits as 0)' if c.normalize_digits else ''} in >= {c.min_docs} documents are kept in the "
                f"first only; documents left under {c.min_chars} chars are dropped; {audit}")

    # -- shard pass ---------------------------------------------------------------------------

    def key_columns(self) -> dict[str, pa.DataType]:
        return {"_pd_h": pa.list_(pa.uint64()), "_pd_ulen": pa.list_(pa.int32()),
                "_pd_slen": pa.list_(pa.int32()), "_pd_src": pa.string()}

    def add_keys(self, batch: pa.Table) -> pa.Table:
        c = self.config
        sep = SEPARATORS[c.unit]
        digits, min_len = c.normalize_digits, c.min_unit_chars
        hs: list[int] = []
        ulen: list[int] = []
        slen: list[int] = []
        offsets = [0]
        # One pass per document, inlined (the hot loop of the stage: a call per unit costs ~15%).
        for text in batch.column("text").to_pylist():
            parts = sep.split(text)
            for i in range(0, len(parts), 2):
                u = parts[i]
                ulen.append(len(u))
                slen.append(len(parts[i + 1]) if i + 1 < len(parts) else 0)
                v = " ".join((u if u.isascii() else unicodedata.normalize("NFC", u)).split()).lower()
                if digits:
                    v = NUMBERS.sub("0", v)
                hs.append(0 if not v or len(v) < min_len
                          else xxhash.xxh3_64_intdigest(v.encode("utf-8", "surrogatepass")) or 1)
            offsets.append(len(hs))
        off = pa.array(offsets, pa.int32())

        def lists(values: list[int], dtype: pa.DataType) -> pa.Array:
            return pa.ListArray.from_arrays(off, pa.array(values, dtype))

        return (batch.append_column("_pd_h", lists(hs, pa.uint64()))
                .append_column("_pd_ulen", lists(ulen, pa.int32()))
                .append_column("_pd_slen", lists(slen, pa.int32()))
                .append_column("_pd_src", audit_source(batch)))

    # -- global step --------------------------------------------------------------------------

    def run_global(self, keys: Frame) -> Frame:
        log.info(self.describe())
        removals = keys.map(_unit_rows).group("h", _Holders(self.config.min_docs))
        joined = keys.map(_doc_rows).union(removals).group("node", _Resolve(self.config.min_chars))
        if self.config.max_source_removal_fraction is None:
            return joined
        result = joined.materialize()  # read twice: by the audit, then by the executor's write
        self._audit(keys, result)
        return result

    def _audit(self, keys: Frame, result: Frame) -> None:
        """Fail (or warn) when a source would lose more than ``max_source_removal_fraction`` of its characters."""
        chars_in = sum_by_source(keys.map(_source_chars).collect())
        removed = sum_by_source(result.map(_source_removed).collect())
        frac = self.config.max_source_removal_fraction
        assert frac is not None
        over = over_limit(chars_in, removed, frac)
        if not over:
            return
        examples = _examples(result.map(_top_removals).collect())
        findings = [{"source": s, "chars_in": chars_in[s], "chars_removed": removed[s], "share": round(share, 4),
                     "examples": examples.get(s, [])} for share, s in over]
        lines = "; ".join(
            f"source {f['source']!r} loses {f['chars_removed']} of {f['chars_in']} characters "
            f"({100 * f['share']:.1f}%), e.g. " + ", ".join(
                f"{e['id']} ({'dropped, ' if e['dropped'] else ''}-{e['removed_chars']} chars, its most widespread "
                f"unit kept in {e['kept_in']})" for e in f["examples"])
            for f in findings)
        enforce(self, frac, findings, f"{self.name}: unit removal over max_source_removal_fraction={frac} in "
                                      f"{len(findings)} source(s): {lines}")

    # -- applying pass ------------------------------------------------------------------------

    def output_columns(self) -> dict[str, pa.DataType]:
        return {"para_dedup_chars": pa.int64(), "para_dedup_units": pa.list_(OUT_UNIT_TYPE)}

    def apply(self, batch: pa.Table, marks: pa.Table) -> StageResult:
        n = len(batch)
        pos = row_positions(batch, marks)
        found = np.flatnonzero(pos >= 0)
        chars = np.zeros(n, dtype=np.int64)
        units: list[list[dict[str, Any]]] = [[] for _ in range(n)]
        keep = np.ones(n, dtype=bool)
        reasons: list[str | None] = [None] * n
        details: list[dict[str, Any] | None] = [None] * n
        if len(found) == 0:
            return self._result(batch, keep, reasons, details, chars, units)
        at = pa.array(found, pa.int64())
        texts = batch.column("text").take(at).to_pylist()
        hs = batch.column("_pd_h").take(at).to_pylist()
        mine = marks.take(pa.array(pos[found], pa.int64()))
        new_texts = batch.column("text").to_pylist()
        for i, text, h, removed, m_units, drop in zip(
                found.tolist(), texts, hs, mine.column("removed_chars").to_pylist(),
                mine.column("units").to_pylist(), mine.column("drop").to_pylist()):
            gone = {u["hash"] for u in m_units}
            us, ss = split_units(text, self.config.unit)
            if len(us) != len(h):
                raise RuntimeError(f"{self.name}: document {batch.column('id')[i].as_py()} has {len(us)} units, its keys "
                                   f"{len(h)} (work files changed during the run?)")
            out = rebuild(us, ss, [k not in gone for k in h])
            if len(text) - len(out) != removed:
                raise RuntimeError(f"{self.name}: document {batch.column('id')[i].as_py()} lost {len(text) - len(out)} "
                                   f"characters, its resolved row says {removed}")
            chars[i] = removed
            units[i] = [{**u, "hash": f"{u['hash']:016x}"} for u in m_units]
            if drop:
                keep[i], reasons[i] = False, self.reason
                details[i] = {"removed_chars": removed, "remaining_chars": len(out),
                              "min_chars": self.config.min_chars, "units_total": len(units[i]),
                              "units": units[i][:DETAIL_UNITS]}
            else:
                new_texts[i] = out
        # Dropped documents keep their original text: the decisions table shows what was there.
        return self._result(with_texts(batch, new_texts), keep, reasons, details, chars, units)

    def _result(self, batch: pa.Table, keep: np.ndarray, reasons: list[str | None],
                details: list[dict[str, Any] | None], chars: np.ndarray,
                units: list[list[dict[str, Any]]]) -> StageResult:
        batch = (batch.append_column("para_dedup_chars", pa.array(chars, pa.int64()))
                 .append_column("para_dedup_units", pa.array(units, pa.list_(OUT_UNIT_TYPE))))
        return split(batch, keep, reasons, details)


# -- Frame functions (module level, so Ray pickles them by reference) ------------------------------


def _node(t: pa.Table) -> np.ndarray:
    return (t.column("_task").to_numpy().astype(np.int64) << 32) | t.column("_row").to_numpy().astype(np.int64)


def _flat(t: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The values of list column ``name`` and, for each, the index of its row."""
    col = t.column(name).combine_chunks()
    counts = col.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
    return col.flatten().to_numpy(zero_copy_only=False), np.repeat(np.arange(len(t)), counts)


def _unit_rows(t: pa.Table) -> pa.Table:
    """One ``(h, node, id)`` row per distinct key of each document (repeats inside it count once)."""
    h, row = _flat(t, "_pd_h")
    sel = h != 0
    h, row = h[sel], row[sel]
    order = np.lexsort((h, row))
    h, row = h[order], row[order]
    first = np.ones(len(h), dtype=bool)
    first[1:] = (h[1:] != h[:-1]) | (row[1:] != row[:-1])
    h, row = h[first], row[first]
    return pa.table({"h": pa.array(h, pa.uint64()), "node": pa.array(_node(t)[row], pa.int64()),
                     "id": t.column("id").take(pa.array(row, pa.int64()))}, schema=_UNIT_ROWS)


class _Holders:
    """Group (every holder of some keys): a removal row for each holder but the first of a key held by
    at least ``min_docs`` documents."""

    def __init__(self, min_docs: int) -> None:
        self.min_docs = min_docs

    def __call__(self, t: pa.Table) -> pa.Table:
        h, node = t.column("h").to_numpy(), t.column("node").to_numpy()
        order = np.lexsort((node, h))
        h, node = h[order], node[order]
        first = np.ones(len(h), dtype=bool)
        first[1:] = h[1:] != h[:-1]
        starts = np.flatnonzero(first)
        run = np.cumsum(first) - 1
        size = np.diff(np.r_[starts, len(h)])[run]
        sel = ~first & (size >= self.min_docs)
        keeper = order[starts[run[sel]]]
        n = int(sel.sum())
        return pa.table({
            "node": pa.array(node[sel], pa.int64()), "h": pa.array(h[sel], pa.uint64()),
            "docs": pa.array(size[sel], pa.int64()), "kept_in": t.column("id").take(pa.array(keeper, pa.int64())),
            "id": pa.nulls(n, pa.string()), "src": pa.nulls(n, pa.string()),
            "hs": pa.nulls(n, pa.list_(pa.uint64())), "ulen": pa.nulls(n, pa.list_(pa.int32())),
            "slen": pa.nulls(n, pa.list_(pa.int32())),
        }, schema=_JOIN)


def _doc_rows(t: pa.Table) -> pa.Table:
    """Each document's join row: its node, id, source and unit keys and lengths."""
    n = len(t)
    return pa.table({
        "node": pa.array(_node(t), pa.int64()), "h": pa.nulls(n, pa.uint64()), "docs": pa.nulls(n, pa.int64()),
        "kept_in": pa.nulls(n, pa.string()), "id": t.column("id"), "src": t.column("_pd_src"),
        "hs": t.column("_pd_h"), "ulen": t.column("_pd_ulen"), "slen": t.column("_pd_slen"),
    }, schema=_JOIN)


class _Resolve:
    """Group (all rows of some nodes): for each document with removal rows, its resolved row."""

    def __init__(self, min_chars: int) -> None:
        self.min_chars = min_chars

    def __call__(self, t: pa.Table) -> pa.Table:
        is_doc = t.column("h").is_null().to_numpy(zero_copy_only=False)
        node = t.column("node").to_numpy()
        rem_idx = np.flatnonzero(~is_doc)
        if len(rem_idx) == 0:
            return RESULT_SCHEMA.empty_table()
        doc_idx = np.flatnonzero(is_doc)
        doc_idx = doc_idx[np.argsort(node[doc_idx], kind="stable")]
        doc_nodes = node[doc_idx]
        # Removal rows by document, then documents holding the key (most first), then key.
        r_node = node[rem_idx]
        r_h = t.column("h").take(pa.array(rem_idx, pa.int64())).to_numpy()
        r_docs = t.column("docs").take(pa.array(rem_idx, pa.int64())).to_numpy()
        order = np.lexsort((r_h, -r_docs, r_node))
        rem_idx, r_node, r_h, r_docs = rem_idx[order], r_node[order], r_h[order], r_docs[order]
        d = np.searchsorted(doc_nodes, r_node)
        if len(doc_nodes) == 0 or np.any(d >= len(doc_nodes)) or np.any(doc_nodes[np.minimum(d, len(doc_nodes) - 1)]
                                                                         != r_node):
            raise RuntimeError("paragraph_dedup: a removal names a document with no key row")
        # The documents with removals, in node order, and their units (flattened).
        docs_hit = np.unique(d)
        dt = t.take(pa.array(doc_idx[docs_hit], pa.int64()))
        hs, unit_doc = _flat(dt, "hs")
        ulen, _ = _flat(dt, "ulen")
        slen, _ = _flat(dt, "slen")
        r_doc = np.searchsorted(docs_hit, d)  # each removal row's index among the documents hit
        # A unit is removed when (its document, its key) is a removal row: match on one int64 key,
        # the document index times the number of distinct keys plus the key's rank.
        keys, inv = np.unique(np.concatenate([hs, r_h]), return_inverse=True)
        width = np.int64(len(keys))
        unit_key = unit_doc.astype(np.int64) * width + inv[: len(hs)]
        rem_key = r_doc.astype(np.int64) * width + inv[len(hs):]
        gone = np.isin(unit_key, rem_key) & (hs != 0)
        # Copies removed per removal row.
        u_sorted = np.sort(unit_key[gone])
        n_copies = np.searchsorted(u_sorted, rem_key, side="right") - np.searchsorted(u_sorted, rem_key)
        # Characters removed per document, by the rewrite rule (see ``removed_chars``).
        starts = np.r_[0, np.cumsum(np.bincount(unit_doc, minlength=len(docs_hit)))[:-1]]
        cost = (ulen + slen).astype(np.int64)
        total = np.add.reduceat(cost, starts) if len(cost) else np.zeros(0, np.int64)
        kept_cost = np.add.reduceat(np.where(gone, 0, cost), starts)
        pos = np.arange(len(hs))
        last_kept = np.maximum.reduceat(np.where(gone, -1, pos), starts)
        ends = np.r_[starts[1:], len(hs)] - 1
        tail_gone = (last_kept >= 0) & (last_kept < ends)
        kept_cost -= np.where(tail_gone, slen[np.maximum(last_kept, 0)], 0)
        removed = total - kept_cost
        # Per document: its removal rows as the ``units`` list.
        r_off = np.r_[0, np.cumsum(np.bincount(r_doc, minlength=len(docs_hit)))]
        kept_in = t.column("kept_in").take(pa.array(rem_idx, pa.int64()))
        units = pa.ListArray.from_arrays(pa.array(r_off, pa.int32()), pa.StructArray.from_arrays(
            [pa.array(r_h, pa.uint64()), pa.array(n_copies, pa.int32()), pa.array(r_docs, pa.int64()),
             kept_in.combine_chunks() if isinstance(kept_in, pa.ChunkedArray) else kept_in], fields=list(UNIT_TYPE)))
        hit_nodes = doc_nodes[docs_hit]
        return pa.table({
            "_task": pa.array(hit_nodes >> 32, pa.int32()), "_row": pa.array(hit_nodes & 0xFFFFFFFF, pa.int64()),
            "id": dt.column("id"), "source": dt.column("src"), "n_chars": pa.array(total, pa.int64()),
            "removed_chars": pa.array(removed, pa.int64()), "drop": pa.array(total - removed < self.min_chars),
            "units": units,
        }, schema=RESULT_SCHEMA)


# -- audit helpers -------------------------------------------------------------------------------

def _by_source(src: pa.ChunkedArray | pa.Array, n: np.ndarray) -> pa.Table:
    if len(n) == 0:
        return COUNTS.empty_table()
    agg = pa.table({"source": src, "n": pa.array(n, pa.int64())}).group_by("source").aggregate([("n", "sum")])
    return pa.table({"source": agg.column("source"), "n": agg.column("n_sum")}, schema=COUNTS)


def _source_chars(t: pa.Table) -> pa.Table:
    """Characters reaching the stage per source, in one block of keys."""
    ulen, row = _flat(t, "_pd_ulen")
    slen, _ = _flat(t, "_pd_slen")
    per_doc = np.bincount(row, weights=ulen.astype(np.int64) + slen, minlength=len(t)).astype(np.int64)
    return _by_source(t.column("_pd_src"), per_doc)


def _source_removed(t: pa.Table) -> pa.Table:
    """Characters removed per source (a dropped document's whole text), in one block of resolved rows."""
    drop = t.column("drop").to_numpy(zero_copy_only=False)
    n = np.where(drop, t.column("n_chars").to_numpy(), t.column("removed_chars").to_numpy())
    return _by_source(t.column("source"), n)


def _top_removals(t: pa.Table) -> pa.Table:
    """Per source, the ``EXAMPLES`` rows of this block that remove the most characters (then smallest id)."""
    drop = t.column("drop").to_numpy(zero_copy_only=False)
    lost = np.where(drop, t.column("n_chars").to_numpy(), t.column("removed_chars").to_numpy())
    ids, src, units = t.column("id").to_pylist(), t.column("source").to_pylist(), t.column("units").to_pylist()
    order = sorted(range(len(t)), key=lambda i: (src[i], -int(lost[i]), ids[i]))
    picked: list[dict[str, Any]] = []
    count: dict[str, int] = {}
    for i in order:
        if count.get(src[i], 0) < EXAMPLES:
            count[src[i]] = count.get(src[i], 0) + 1
            picked.append({"source": src[i], "id": ids[i], "removed_chars": int(lost[i]), "dropped": bool(drop[i]),
                           "kept_in": units[i][0]["kept_in"] if units[i] else None})
    return pa.Table.from_pylist(picked, schema=_EXAMPLE_SCHEMA)


_EXAMPLE_SCHEMA = pa.schema([pa.field("source", pa.string()), pa.field("id", pa.string()),
                             pa.field("removed_chars", pa.int64()), pa.field("dropped", pa.bool_()),
                             pa.field("kept_in", pa.string())])


def _examples(t: pa.Table) -> dict[str, list[dict[str, Any]]]:
    """``EXAMPLES`` documents per source, most characters removed first (then id): the same whatever
    the block split."""
    out: dict[str, list[dict[str, Any]]] = {}
    if t.num_columns == 0:
        return out
    for r in sorted(t.to_pylist(), key=lambda r: (r["source"], -r["removed_chars"], r["id"])):
        ex = out.setdefault(r["source"], [])
        if len(ex) < EXAMPLES:
            ex.append({k: r[k] for k in ("id", "removed_chars", "dropped", "kept_in")})
    return out
