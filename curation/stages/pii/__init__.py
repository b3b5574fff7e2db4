"""PII and secrets redaction (``pii_v1``): typed placeholders and per-type count columns."""

from curation.stages.pii import stage  # noqa: F401  (registers pii_v1)
