"""Benchmarks side by side with what users would use instead: `python -m bench`.

See bench/RESULTS.md for the figures and README.md's "Benchmarks" section.
"""
