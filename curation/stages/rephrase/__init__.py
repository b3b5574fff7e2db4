"""LLM rephrasing stage."""

from curation.stages.rephrase import stage  # noqa: F401  (registers rephrase_v1)
