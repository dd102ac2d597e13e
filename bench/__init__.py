"""Benchmarks: `python -m bench.ratelimit` measures the quota service against its Redis floor."""
