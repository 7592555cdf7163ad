"""Helpers shared by the tests (and the benchmarks): golden data, synthetic clips, tiny models."""
