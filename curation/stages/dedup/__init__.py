"""Global deduplication stages."""

from curation.stages.dedup import exact, near, paragraph  # noqa: F401  (registers the stages)
from curation.stages.dedup import semantic  # noqa: F401  (registers semantic_dedup_v1)
