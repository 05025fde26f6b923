"""
The twistd subcommand: C{twistd multiport}.
"""

from twisted.application.service import ServiceMaker

# ServiceMaker is not annotated in Twisted.
multiport = ServiceMaker(  # type: ignore[no-untyped-call]
    "multiport",
    "multiport.daemon.tap",
    "Serve many ports from one process, each with its own handler.",
    "multiport",
)
