"""``pii_v1``: replace e-mail and IP addresses, phone and card numbers and secrets with placeholders.

Adds one int32 column per type (``pii_email``, ``pii_ip``, ``pii_phone``, ``pii_card``,
``pii_secret``: spans found in the document; null for a type that is not enabled) so that
``SELECT sum(pii_email) FROM docs`` aggregates directly. Nothing is dropped unless
``drop_if_secret`` is set; such documents leave with reason ``contains_secret`` and the counts
per type in the decision details. The rules are in ``_rules.py`` and ``docs/pii.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from curation.config import check_choices
from curation.registry import register_stage
from curation.stages.base import Decisions, Filter
from curation.stages.pii.detect import DEFAULT_KEEP_IPS, DEFAULT_PLACEHOLDERS, TYPES, Detector


@dataclass(kw_only=True)
class PIIConfig:
    """Options of ``pii_v1``.

    Args:
        types: Types to detect, any of ``secret, email, card, ip, phone``.
        mode: ``replace`` rewrites the text; ``mark`` only counts (text unchanged).
        placeholders: Replacement per type, merged over ``<EMAIL> <IP_ADDRESS> <PHONE> <CARD> <SECRET>``.
        ip_public_only: Leave private, loopback, link-local, documentation and reserved addresses.
        keep_ips: Addresses never replaced; by default a few public DNS resolvers.
        drop_if_secret: Drop documents that contain a secret (reason ``contains_secret``).
    """

    types: list[str] = field(default_factory=lambda: list(TYPES))
    mode: Literal["replace", "mark"] = "replace"
    placeholders: dict[str, str] = field(default_factory=dict)
    ip_public_only: bool = True
    keep_ips: list[str] = field(default_factory=lambda: list(DEFAULT_KEEP_IPS))
    drop_if_secret: bool = False

    def __post_init__(self) -> None:
        check_choices(self)
        for where, names in (("types", self.types), ("placeholders", list(self.placeholders))):
            bad = [t for t in names if t not in TYPES]
            if bad:
                raise ValueError(f"pii_v1.{where}: unknown type(s) {bad}; valid: {list(TYPES)}")
        if not self.types:
            raise ValueError("pii_v1.types: enable at least one type")
        if self.drop_if_secret and "secret" not in self.types:
            raise ValueError("pii_v1.drop_if_secret needs 'secret' in types")


def column_name(pii_type: str) -> str:
    return f"pii_{pii_type}"


@register_stage("pii_v1")
class PIIRedact(Filter):
    """Replaces (or only counts) PII spans and adds per-type count columns."""

    Config = PIIConfig

    def setup(self) -> None:
        c = self.config
        self._detector = Detector(c.types, {**DEFAULT_PLACEHOLDERS, **c.placeholders}, c.ip_public_only, c.keep_ips)

    def output_columns(self) -> dict[str, pa.DataType]:
        return {column_name(t): pa.int32() for t in TYPES}

    def decide(self, batch: pa.Table) -> Decisions:
        if not hasattr(self, "_detector"):
            self.setup()
        replace = self.config.mode == "replace"
        texts = batch.column("text").to_pylist()
        counts: dict[str, list[int]] = {t: [0] * len(texts) for t in self._detector.types}
        keep = np.ones(len(texts), dtype=bool)
        reasons: list[str | None] = [None] * len(texts)
        details: list[dict[str, Any] | None] = [None] * len(texts)
        changed = False
        for i, text in enumerate(texts):
            new, found = self._detector.redact(text, replace)
            for t, n in found.items():
                counts[t][i] = n
            if new is not text:
                texts[i], changed = new, True
            if self.config.drop_if_secret and found.get("secret"):
                keep[i], reasons[i] = False, "contains_secret"
                details[i] = {column_name(t): n for t, n in found.items()}
        columns = {column_name(t): pa.array(counts[t], pa.int32()) if t in counts else pa.nulls(len(texts), pa.int32())
                   for t in TYPES}
        return Decisions(keep=keep, reasons=reasons, details=details, columns=columns,
                         texts=texts if changed else None)
