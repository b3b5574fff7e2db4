"""Input readers, atomic writers and the run manifest."""
