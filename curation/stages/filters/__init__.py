"""Heuristic and language filters; each module registers one stage."""

from curation.stages.filters import (  # noqa: F401  (imported to register the stages)
    c4_quality,
    fineweb_quality,
    gopher_quality,
    gopher_repetition,
    language,
    text_length,
    url,
)
