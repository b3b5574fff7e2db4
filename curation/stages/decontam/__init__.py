"""Benchmark decontamination: drop, mark or cut documents that share word n-grams with eval sets."""

from curation.stages.decontam import stage  # noqa: F401  (imported to register decontaminate_v1)
