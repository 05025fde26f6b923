"""
multiport: one Twisted process, many listening ports, each with its own job.

Run it with ``twistd multiport``; see README.rst.  This module stays
import-light because twistd imports the package while it looks for plugins.
"""

__version__ = "0.1.0"

# StartupError names itself multiport.StartupError (see multiport.errors):
# the name must resolve, for tools that rebuild an exception from its
# qualified name (trial's workers report errors that way).
from multiport.errors import StartupError as StartupError  # noqa: E402

__all__ = ["StartupError", "__version__"]
