"""Find PII spans in a text and replace them with typed placeholders.

    from curation.stages.pii.detect import Detector
    Detector().redact("mail jane@example.org")   # -> ("mail <EMAIL>", {"email": 1, ...})

Finders for all enabled types run on the original text; where two spans overlap, the type
earlier in ``TYPES`` wins (secret, email, card, ip, phone), so a token in a URL's user part
(``https://ghp_...@github.com``) is one secret, not an e-mail, and a card is never a phone.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import NamedTuple

from curation.stages.pii import _rules

#: Detected types, in priority order for overlapping spans.
TYPES: tuple[str, ...] = ("secret", "email", "card", "ip", "phone")

DEFAULT_PLACEHOLDERS: dict[str, str] = {
    "email": "<EMAIL>", "ip": "<IP_ADDRESS>", "phone": "<PHONE>", "card": "<CARD>", "secret": "<SECRET>",
}

#: Public resolvers that appear in networking docs and identify no person.
DEFAULT_KEEP_IPS: tuple[str, ...] = ("8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "9.9.9.9",
                                     "208.67.222.222", "208.67.220.220", "2001:4860:4860::8888",
                                     "2001:4860:4860::8844", "2606:4700:4700::1111", "2606:4700:4700::1001")


class Span(NamedTuple):
    start: int
    end: int
    type: str


class Detector:
    """Finds spans of the enabled ``types`` (all by default).

    Args:
        types: Which of ``TYPES`` to look for.
        placeholders: Replacement string per type (defaults: ``DEFAULT_PLACEHOLDERS``).
        ip_public_only: Leave private, loopback, link-local, documentation and reserved addresses.
        keep_ips: Addresses never replaced (compared as written and in canonical form).
        rules: The module with the ``find_*`` functions (default: ``_rules``); the benchmark passes
            an older revision of it to compare rule versions on the same set.
    """

    def __init__(self, types: Iterable[str] = TYPES, placeholders: dict[str, str] | None = None,
                 ip_public_only: bool = True, keep_ips: Iterable[str] = DEFAULT_KEEP_IPS,
                 rules: ModuleType = _rules) -> None:
        self.types = tuple(t for t in TYPES if t in set(types))
        self.placeholders = {**DEFAULT_PLACEHOLDERS, **(placeholders or {})}
        keep = frozenset(keep_ips)
        finders: dict[str, Callable[[str], _rules.Spans]] = {
            "secret": rules.find_secrets, "email": rules.find_emails, "card": rules.find_cards,
            "ip": lambda t: rules.find_ips(t, ip_public_only, keep), "phone": rules.find_phones,
        }
        self._finders = [(t, finders[t]) for t in self.types]
        self._rank = {t: i for i, t in enumerate(TYPES)}

    def find(self, text: str) -> list[Span]:
        """Non-overlapping spans, sorted by start."""
        found = [Span(s, e, t) for t, f in self._finders for s, e in f(text) if e > s]
        if len(found) < 2:
            return found
        # Higher-priority types claim their spans first; within a type, leftmost then longest.
        found.sort(key=lambda sp: (self._rank[sp.type], sp.start, sp.start - sp.end))
        starts: list[int] = []
        taken: list[Span] = []
        for sp in found:
            i = bisect.bisect_right(starts, sp.start)
            if (i and taken[i - 1].end > sp.start) or (i < len(taken) and taken[i].start < sp.end):
                continue
            starts.insert(i, sp.start)
            taken.insert(i, sp)
        return taken

    def redact(self, text: str, replace: bool = True) -> tuple[str, dict[str, int]]:
        """The text with each span replaced by its type's placeholder (unchanged when
        ``replace`` is False), and the number of spans per enabled type."""
        spans = self.find(text)
        counts = dict.fromkeys(self.types, 0)
        for sp in spans:
            counts[sp.type] += 1
        if not spans or not replace:
            return text, counts
        parts, pos = [], 0
        for sp in spans:
            parts += [text[pos:sp.start], self.placeholders[sp.type]]
            pos = sp.end
        parts.append(text[pos:])
        return "".join(parts), counts
