"""training: a mixture-aware loader over curation shards, a small GPT and its training loop, the CMR law."""
