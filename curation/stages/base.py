"""Stage base classes. A stage maps an Arrow batch to a batch and knows nothing about Ray.

``Stage.process`` returns the kept rows and the dropped rows with a reason each; the executor
turns drops into rows of the decisions table and counts them per stage and reason. ``Filter``
owns that bookkeeping, so a subclass only decides: ``filter(doc) -> bool | (bool, reason)``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.errors import ConfigError


@dataclass(kw_only=True)
class NoConfig:
    """Config of a stage that takes no parameters."""


@dataclass
class StageResult:
    """What a stage did to one batch.

    Args:
        kept: Rows that continue, with any columns the stage adds.
        dropped: Rows removed, in input order (same columns as ``kept``).
        reasons: One reason per dropped row (``too_short``, ``exact_duplicate`` ...).
        details: One JSON string (or None) per dropped row with the measured values.
    """

    kept: pa.Table
    dropped: pa.Table
    reasons: list[str]
    details: list[str | None]


class Stage(ABC):
    """A batch-to-batch step. Subclasses set ``Config`` and implement ``process``.

    Heavy resources (models, tokenizers) are loaded in ``setup()``, which the executor calls
    once per worker before the first batch, never in ``__init__`` (stages are built on the
    driver to validate the config, then rebuilt on workers).
    """

    name: ClassVar[str] = "unregistered"
    Config: ClassVar[type] = NoConfig
    #: Importable modules this stage needs; checked at construction for a clear early error.
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.Config()
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if missing:
            raise ConfigError(f"stage {self.name!r} needs {', '.join(missing)}: pip install {' '.join(missing)}")

    def setup(self) -> None:
        """Load heavy resources; called once per worker."""

    def output_columns(self) -> dict[str, pa.DataType]:
        """Columns this stage adds to kept documents."""
        return {}

    def resources(self) -> dict[str, float]:
        """Ray resources a task running this stage needs (e.g. ``{"num_gpus": 1}``)."""
        return {}

    def cuda_demand(self) -> str | None:
        """The config setting that makes this stage need a CUDA device (``"device: cuda"``), or None.

        ``device: auto`` is no demand: it takes a GPU when the process sees one, else the CPU.
        The planner uses this to refuse, before anything runs, a Ray pass whose tasks ask for no
        GPU while one of its stages demands CUDA (Ray would not place such a task on a GPU of
        its own, so every copy of the model would pile onto whichever GPU the process sees).
        """
        return None

    #: Config keys naming local files or folders whose contents decide the output (models, eval sets,
    #: centroids, templates); ``*`` walks a list (``models.*.path``). A class attribute, so a submitted config
    #: can be checked against the service's input roots before the stage is built (building reads them).
    artifact_keys: ClassVar[tuple[str, ...]] = ()

    def artifacts(self) -> dict[str, str]:
        """``{dotted config key: path}`` of the local files named by ``artifact_keys``.

        The executor puts their digests in the run identity, so a changed file behind the same
        path refuses to resume into the old run's outputs.
        """
        return config_paths(self.config, *self.artifact_keys)

    def describe(self) -> str | None:
        """A line for the console at launch saying what the stage will do (None: nothing to say)."""
        return None

    @abstractmethod
    def process(self, batch: pa.Table) -> StageResult:
        """Map one batch of documents to kept and dropped rows."""


def config_paths(config: Any, *keys: str, urls: bool = False) -> dict[str, str]:
    """``{dotted key: value}`` of the config fields named by ``keys`` that hold a local path.

    A ``*`` in a key walks every item of a list field (``models.*.path`` gives ``models.0.path``,
    ``models.1.path``, ...). Unset or empty values are left out, and so are URLs (``s3://``) unless
    ``urls``; hub ids are checked for existence by the caller.
    """
    out: dict[str, str] = {}

    def walk(node: Any, parts: list[str], done: list[str]) -> None:
        if not parts:
            if isinstance(node, str) and node and (urls or "://" not in node):
                out[".".join(done)] = node
            return
        head, rest = parts[0], parts[1:]
        if head == "*":
            for i, item in enumerate(node or []):
                walk(item, rest, [*done, str(i)])
        else:
            walk(getattr(node, head) if not isinstance(node, dict) else node.get(head), rest, [*done, head])

    for key in keys:
        walk(config, key.split("."), [])
    return out


@dataclass(slots=True)
class Doc:
    """The per-document view a ``Filter`` decides on. ``text`` may be rewritten in place."""

    id: str
    text: str
    url: str | None = None
    domain: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


#: True / (True, reason): keep; False / (False, reason[, details]): drop. A kept document may come back as
#: (True, "", {column: value}) with the values of the filter's ``output_columns`` (a heuristic filter's metrics).
FilterOutcome = bool | tuple[bool, str] | tuple[bool, str, dict[str, Any]]


@dataclass
class Decisions:
    """A filter's verdicts for a batch: keep flags, reasons, details, added columns, new texts."""

    keep: np.ndarray
    reasons: list[str | None]
    details: list[dict[str, Any] | None]
    columns: dict[str, pa.Array] = field(default_factory=dict)
    texts: list[str] | None = None  # set when the filter rewrote some texts


class Filter(Stage):
    """Base class of keep/drop stages: the subclass implements ``filter`` (or ``decide``).

    Per-document filters (``filter`` only) run through ``run_chain``, alone or fused with
    their neighbours by the executor, so a document is decided the same way in both cases.
    """

    def filter(self, doc: Doc) -> FilterOutcome:
        """Decide on one document: True to keep, or (False, reason[, details])."""
        raise NotImplementedError

    def decide(self, batch: pa.Table) -> Decisions:
        """Decide on a whole batch at once; override this instead of ``filter`` for batched work.

        A filter that only implements ``filter`` never comes here: ``process`` (and the
        executor's fused chains) run it through ``run_chain``.
        """
        raise NotImplementedError(f"{type(self).__name__} implements neither filter nor decide")

    def process(self, batch: pa.Table) -> StageResult:
        if is_per_document(self):
            _, (step,) = run_chain([self], batch)
            return step.result
        d = self.decide(batch)
        if d.texts is not None:
            batch = with_texts(batch, d.texts)
        for name, values in d.columns.items():
            batch = batch.append_column(name, values)
        return split(batch, d.keep, d.reasons, d.details)


def with_texts(batch: pa.Table, texts: list[str]) -> pa.Table:
    """The batch with its ``text`` column replaced and ``n_chars`` recomputed to match."""
    text = pa.array(texts, type=batch.schema.field("text").type)
    batch = batch.set_column(batch.schema.get_field_index("text"), "text", text)
    return batch.set_column(batch.schema.get_field_index("n_chars"), "n_chars", pc.utf8_length(text).cast(pa.int64()))


def split(batch: pa.Table, keep: np.ndarray, reasons: Sequence[str | None],
          details: Sequence[dict[str, Any] | None] | None = None) -> StageResult:
    """Split a batch by a keep mask into a ``StageResult``."""
    drop_idx = np.flatnonzero(~keep)
    if len(drop_idx) == 0:  # common for scoring stages: no copy of the (large) text column
        return StageResult(kept=batch, dropped=batch.slice(0, 0), reasons=[], details=[])
    mask = pa.array(keep, type=pa.bool_())
    det = details or [None] * len(keep)
    return StageResult(
        kept=batch.filter(mask),
        dropped=batch.take(pa.array(drop_idx, type=pa.int64())),
        reasons=[reasons[i] or "filtered" for i in drop_idx],
        details=[None if det[i] is None else json.dumps(det[i], sort_keys=True) for i in drop_idx],
    )


def config_dict(config: Any) -> dict[str, Any]:
    """A stage config as plain data (for fingerprints and logs)."""
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else {}


def is_per_document(stage: Stage) -> bool:
    """True for filters that decide one document at a time (and so can be fused)."""
    return isinstance(stage, Filter) and type(stage).decide is Filter.decide


@dataclass
class ChainStep:
    """One filter's share of a fused chain run: documents in, and the ones it dropped."""

    n_in: int
    result: StageResult


def run_chain(filters: Sequence[Filter], batch: pa.Table) -> tuple[pa.Table, list[ChainStep]]:
    """Run per-document filters document-major: each document passes every filter before the next.

    This is the order datatrove's own executor uses; it lets filters share per-text caches (its
    word tokenisation is lru-cached per text) and stops at the first filter that drops a document.
    A filter with ``output_columns`` gets them appended, from the values its kept documents came back with
    (null for the documents it never kept).
    """
    n = len(batch)
    adds = {j: cols for j, f in enumerate(filters) if (cols := f.output_columns())}
    values: dict[int, list[dict[str, Any] | None]] = {j: [None] * n for j in adds}
    texts = batch.column("text").to_pylist()
    ids = batch.column("id").to_pylist()
    urls = batch.column("url").to_pylist()
    domains = batch.column("domain").to_pylist()
    dropped_by = np.full(n, len(filters), dtype=np.int64)  # len(filters) = kept
    reasons: list[str | None] = [None] * n
    details: list[dict[str, Any] | None] = [None] * n
    changed = False
    for i in range(n):
        doc = Doc(id=ids[i], text=texts[i], url=urls[i], domain=domains[i])
        for j, f in enumerate(filters):
            outcome = f.filter(doc)
            if outcome is True:
                continue
            if outcome is not False and outcome[0]:
                if len(outcome) > 2 and j in values:
                    values[j][i] = outcome[2]
                continue
            dropped_by[i] = j
            reasons[i] = "filtered" if outcome is False else outcome[1]
            details[i] = outcome[2] if outcome is not False and len(outcome) > 2 else None
            break
        if doc.text is not texts[i]:
            texts[i] = doc.text
            changed = True
    if changed:
        batch = with_texts(batch, texts)
    for j, cols in adds.items():
        for name, dtype in cols.items():
            batch = batch.append_column(name, pa.array([v.get(name) if v else None for v in values[j]], type=dtype))
    steps = []
    for j in range(len(filters)):
        mine = dropped_by == j
        res = split(batch, ~mine, reasons, details)
        steps.append(ChainStep(n_in=int((dropped_by >= j).sum()), result=res))
    if len(filters) == 1:  # a lone filter's kept rows are the chain's: no second copy of the batch
        return steps[0].result.kept, steps
    return batch.filter(pa.array(dropped_by == len(filters))), steps
