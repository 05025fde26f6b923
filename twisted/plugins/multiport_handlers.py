"""
multiport's built-in handlers, found through twisted.plugin exactly like a
third party's: twisted.plugin finds the handler objects this one import
statement puts in the module's namespace (see L{multiport.handlers.builtins}
for why importing it is cheap).
"""

from multiport.handlers.builtins import (  # noqa: F401 (found by twisted.plugin)
    chargen,
    daytime,
    discard,
    echo,
    haproxyAgent,
    http,
    https,
    qotd,
    relay,
    status,
    websocket,
)
