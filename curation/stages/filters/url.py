"""URL blocklist via datatrove's ``URLFilter`` (its lists ship inside the datatrove wheel)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from curation.config import check_choices

from curation.registry import register_stage
from curation.stages.base import Doc, FilterOutcome
from curation.stages.filters._datatrove import DatatroveFilter


@dataclass(kw_only=True)
class URLFilterConfig:
    """Blocklist options; ``missing_url`` says what happens to documents without a URL."""

    soft_word_threshold: int = 2
    extra_domains: list[str] = field(default_factory=list)
    extra_urls: list[str] = field(default_factory=list)
    use_integrated_lists: bool = True
    missing_url: Literal["keep", "drop"] = "keep"

    def __post_init__(self) -> None:
        check_choices(self)


@register_stage("url_filter_v1")
class URLFilter(DatatroveFilter):
    """Drops documents whose URL is on the adult/spam blocklists or names banned words."""

    Config = URLFilterConfig
    requires = ("datatrove", "tldextract")

    def make_filter(self) -> Any:
        from datatrove.pipeline.filters import URLFilter as DTURLFilter

        return DTURLFilter(
            soft_word_threshold=self.config.soft_word_threshold,
            extra_domains=self.config.extra_domains or None,
            extra_urls=self.config.extra_urls or None,
            use_integrated_lists=self.config.use_integrated_lists,
        )

    def filter(self, doc: Doc) -> FilterOutcome:
        if not doc.url:
            return True if self.config.missing_url == "keep" else (False, "missing_url")
        return super().filter(doc)
