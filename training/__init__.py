"""training: mixture-aware loading of curation shards and the training loop (issue 6; not yet built)."""
