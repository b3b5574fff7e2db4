"""Global deduplication stages."""

from curation.stages.dedup import exact, near  # noqa: F401  (registers the stages)
