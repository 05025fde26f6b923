"""
Baseline servers the benchmarks measure multiport against.
"""
