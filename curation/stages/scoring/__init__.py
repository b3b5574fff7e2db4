"""Scoring stages: LM losses, PreSelect predictive strength, fastText scores, selection."""

from curation.stages.scoring import (  # noqa: F401  (registers)
    cross_entropy_diff, fasttext_score, lm_loss, predictive, random_score, select, skill_tag)
