"""
multiport's benchmark suite: ``python -m benchmarks`` (see docs/benchmarks.rst).

It measures multiport against the servers a user would otherwise pick, on the
same machine in the same run, alternating, and reports ratios.
"""
