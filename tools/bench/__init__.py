"""Benchmarks: speed ratios measured side by side, and the quality lab's table (docs/benchmarks.md)."""
