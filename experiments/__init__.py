"""Experiment scripts of the small-scale reproduction (see docs/results.md)."""
