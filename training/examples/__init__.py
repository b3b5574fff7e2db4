"""Runnable examples of training on curated runs with other frameworks (see docs/training_with_other_frameworks.md)."""
