"""Benchmarks against the seed's pipeline on full-size random-weight models; see benchmarks/RESULTS.md."""
