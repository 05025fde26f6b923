"""
multiport: one Twisted process, many listening ports, each with its own job.

Run it with ``twistd multiport``; see README.rst.  This module stays
import-light because twistd imports the package while it looks for plugins.
"""

__version__ = "0.1.0"
