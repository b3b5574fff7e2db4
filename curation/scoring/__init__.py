"""Scorer training (fastText) shared by the CLI and the scoring stages."""
