"""The mass-removal audit the dedup stages share (near, paragraph, semantic).

Each stage counts, per source, what reaches it and what it removes (documents or characters), block by block,
so nothing but per-source sums reaches the driver; a source losing more than ``max_source_removal_fraction``
fails the run (``MassRemovalError``) or, with ``on_mass_removal: warn``, is logged and recorded in the
manifest's ``warnings``. The stages differ only in what they count and in the examples they name.
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curation.errors import ConfigError

log = logging.getLogger(__name__)

COUNTS = pa.schema([pa.field("source", pa.string()), pa.field("n", pa.int64())])


class MassRemovalError(ConfigError):
    """A dedup stage would remove more of a source than ``max_source_removal_fraction`` allows."""


def audit_source(batch: pa.Table) -> pa.Array:
    """The audit's notion of a document's source: ``source`` (its input file), or ``domain`` where
    ``source`` is empty (inputs read from a stream or a single unnamed file)."""
    source, domain = batch.column("source"), batch.column("domain")
    empty = pc.or_kleene(pc.is_null(source), pc.equal(source, ""))
    return pc.if_else(empty, domain, source).combine_chunks()


def count_by(col: pa.ChunkedArray | pa.Array) -> pa.Table:
    """Rows per source in one block (``COUNTS``)."""
    if len(col) == 0:
        return COUNTS.empty_table()
    vc = pc.value_counts(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col)
    return pa.table({"source": vc.field("values"), "n": vc.field("counts").cast(pa.int64())}, schema=COUNTS)


def sum_by_source(t: pa.Table) -> dict[str, int]:
    """The per-block ``(source, n)`` rows of a collect, summed per source."""
    if t.num_columns == 0 or len(t) == 0:  # a Ray collect of no blocks has no columns
        return {}
    agg = t.group_by("source").aggregate([("n", "sum")])
    return dict(zip(agg.column("source").to_pylist(), (int(v) for v in agg.column("n_sum").to_pylist())))


def over_limit(totals: dict[str, int], removed: dict[str, int], frac: float) -> list[tuple[float, str]]:
    """``(share, source)`` of the sources losing more than ``frac`` of their total, largest share first."""
    return sorted(((removed[s] / totals[s], s) for s in removed if totals.get(s) and removed[s] / totals[s] > frac),
                  key=lambda x: (-x[0], x[1]))


def enforce(stage: Any, frac: float, findings: list[dict[str, Any]], head: str) -> None:
    """Fail with ``head`` (the stage's one-line summary of ``findings``), or warn and record the findings, as the
    stage's ``on_mass_removal`` says."""
    if stage.config.on_mass_removal == "fail":
        raise MassRemovalError(
            f"{head}. If intended, raise max_source_removal_fraction, set it to null, or set "
            f"on_mass_removal: warn (a changed config needs a new output dir or --overwrite)")
    log.warning(head)
    stage.warnings.extend({"stage": stage.name, "kind": "mass_removal", "threshold": frac, **f} for f in findings)
