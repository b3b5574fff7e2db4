"""Global deduplication stages."""

from curation.stages.dedup import exact, near, paragraph  # noqa: F401  (registers the stages)
