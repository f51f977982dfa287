"""Benchmark harness of rewardmiles: `python -m bench.run` (see bench/README.md)."""
