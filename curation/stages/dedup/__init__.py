"""Global deduplication stages."""

from curation.stages.dedup import exact  # noqa: F401  (registers the stage)
