"""Benchmarks: each one checks correctness before it reports a number."""
