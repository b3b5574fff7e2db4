"""Metadata conditioning then cooldown (MeCo, Gao et al. 2025): a document's metadata as a prefix.

While conditioning is on, the loader puts ``template.format(value=...)`` before each document
whose metadata field has a value (``URL: docs.python.org\\n\\n`` + text + EOS). The prefix is
tokenised on its own, so its tokens are known exactly; their *targets* are ``IGNORE_INDEX``, so
the loss covers document tokens (and EOS) only, while the inputs still show the prefix. For the
last ``cooldown_fraction`` of training steps the prefix is off (the model must also work without
metadata). The switch is a pure function of the step (``conditioning_at``), which ``train.py``
hands to the loader every step, so a run resumed from any checkpoint switches where an
uninterrupted one does.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

#: Target value the loss skips: ``torch.nn.functional.cross_entropy``'s default ``ignore_index``,
#: passed explicitly by ``training/model.py``.
IGNORE_INDEX = -100

#: Field names computed from a column rather than read as-is.
URL_DOMAIN = "url_domain"
METADATA_PREFIX = "metadata."
#: ``scheme:`` not followed by a port number: a URL with no host (``mailto:a@b``, ``urn:isbn:1``).
_OPAQUE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:(?!\d)")


@dataclass(kw_only=True)
class MecoConfig:
    """``field``: ``url_domain`` (the ``url`` column's host, lower case, ``www.`` stripped),
    ``metadata.KEY`` (a key of the ``metadata`` JSON column) or any shard column (``domain``,
    ``source``, a stage's column). ``template``: the prefix, with ``{value}``. ``cooldown_fraction``:
    the last share of training steps (= tokens) without prefix. ``cooldown_start_step``: an
    absolute step instead, which stays put when ``steps`` is raised on resume."""

    field: str = URL_DOMAIN
    template: str = "{value}\n\n"  # the paper: "URL: {value}\n\n" with url_domain
    cooldown_fraction: float = 0.1
    cooldown_start_step: int | None = None

    def __post_init__(self) -> None:
        if not self.field or self.field == METADATA_PREFIX:
            raise ValueError(f"meco.field: {self.field!r} names no column; use url_domain, metadata.KEY or a column")
        if "{value}" not in self.template:
            raise ValueError(f"meco.template: {self.template!r} has no '{{value}}' placeholder")
        try:
            self.template.format(value="x")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"meco.template: {self.template!r} is not a format string with only {{value}}: "
                             f"{e}") from e
        if not 0.0 <= self.cooldown_fraction <= 1.0:
            raise ValueError(f"meco.cooldown_fraction: {self.cooldown_fraction} is not in [0, 1]")
        if self.cooldown_start_step is not None and self.cooldown_start_step < 0:
            raise ValueError(f"meco.cooldown_start_step: {self.cooldown_start_step} is negative")

    @property
    def column(self) -> str:
        """The shard column the field is read from."""
        if self.field == URL_DOMAIN:
            return "url"
        if self.field.startswith(METADATA_PREFIX):
            return "metadata"
        return self.field


def switch_step(total_steps: int, cfg: MecoConfig) -> int:
    """First step without prefix: the last ``round(cooldown_fraction * total_steps)`` steps are the
    cooldown (rounded, so 0.1 of 100 steps is exactly 10 whatever the float error)."""
    if cfg.cooldown_start_step is not None:
        return cfg.cooldown_start_step
    return total_steps - int(round(cfg.cooldown_fraction * total_steps))


def conditioning_at(step: int, total_steps: int, cfg: MecoConfig) -> bool:
    """Whether the batches of training step ``step`` (0-based) carry the prefix."""
    return step < switch_step(total_steps, cfg)


def url_domain(url: Any) -> str | None:
    """The host of ``url``, lower case, without port and leading ``www.``; a bare ``host/path``
    counts as a host, a URL without an authority (``mailto:``, ``urn:``) has none."""
    if not isinstance(url, str) or not url.strip():
        return None
    url = url.strip()
    if "//" not in url:
        if _OPAQUE.match(url):
            return None
        url = "//" + url
    try:
        host = urlsplit(url).hostname
    except ValueError:  # e.g. a malformed IPv6 literal: no usable host, so no prefix
        return None
    if not host:
        return None
    return host[4:] if host.startswith("www.") and len(host) > 4 else host


def field_value(cfg: MecoConfig, raw: Any) -> str | None:
    """The metadata string for one document from its ``cfg.column`` value; None (no prefix) when
    the document lacks it (null, empty, no host, key absent, metadata not a JSON object)."""
    if cfg.field == URL_DOMAIN:
        return url_domain(raw)
    if cfg.field.startswith(METADATA_PREFIX):
        if not isinstance(raw, str):
            return None
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError:
            return None
        raw = obj.get(cfg.field[len(METADATA_PREFIX):]) if isinstance(obj, dict) else None
    if raw is None or isinstance(raw, (dict, list)):
        return None
    value = str(raw).strip()
    return value or None


def runs_of(mask: list[int]) -> list[list[int]]:
    """``[start, end)`` runs of ones: how a buffer's mask goes into the JSON loader state compactly."""
    runs: list[list[int]] = []
    start = None
    for i, m in enumerate(mask):
        if m and start is None:
            start = i
        elif not m and start is not None:
            runs.append([start, i])
            start = None
    if start is not None:
        runs.append([start, len(mask)])
    return runs


def mask_of(runs: list[list[int]], length: int) -> list[int]:
    mask = [0] * length
    for start, end in runs:
        if not 0 <= start < end <= length:
            raise ValueError(f"loader state: masked run [{start}, {end}) lies outside the buffer of {length} tokens")
        mask[start:end] = [1] * (end - start)
    return mask
