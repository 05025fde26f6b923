"""
The twistd subcommand: C{twistd multiport}.
"""

from twisted.application.service import ServiceMaker

multiport = ServiceMaker(
    "multiport",
    "multiport.daemon.tap",
    "Serve many ports from one process, each with its own handler.",
    "multiport",
)
