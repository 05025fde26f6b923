"""
C{multiport-ctl}: the command-line client of the daemon's admin API.

It shows (once, or refreshed every second) the ports of a running daemon,
adds, changes and removes them, and asks the daemon to reload its
configuration file, over HTTP to the status port (everything under
C{/api/}).  Calls carry the admin token: the one given with
C{--admin-token-file} or C{$MULTIPORT_ADMIN_TOKEN}, else the one the daemon
keeps in its state directory.  A blocking command: the standard library's
C{urllib}, no reactor.
"""

from multiport.ctl.arguments import jsonValue, parseStatus, parseURL
from multiport.ctl.main import DEFAULT_STATUS, main, makeParser
from multiport.ctl.table import watchTable

__all__ = [
    "DEFAULT_STATUS",
    "jsonValue",
    "main",
    "makeParser",
    "parseStatus",
    "parseURL",
    "watchTable",
]
