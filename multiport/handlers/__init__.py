"""
Handlers: the job each port does.

This is the public surface for handler plugins; see README.rst, "Writing a
handler plugin".
"""

from multiport.handlers.interface import (
    Handler,
    HandlerContext,
    IDatagramHandler,
    IHandler,
    OptionError,
    optionOf,
    rejectUnknown,
)
from multiport.handlers.registry import findHandlers
from multiport.ports.counters import HandlerCounters

__all__ = [
    "Handler",
    "HandlerContext",
    "HandlerCounters",
    "IDatagramHandler",
    "IHandler",
    "OptionError",
    "findHandlers",
    "optionOf",
    "rejectUnknown",
]
