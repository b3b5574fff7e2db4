"""Small builders shared by the tests and the benchmarks (no pytest here: benchmarks import it too)."""
