"""
A built-in handler's plugin object that imports its implementation on first
use.

Plugin discovery (C{twistd --help}, L{twisted.plugin.getPlugins}) imports
every module in C{twisted/plugins/}: a plugin that imports its handler there
loads twisted.web or OpenSSL for a command that never serves a port.  A
L{LazyHandler} carries what the daemon reads of every handler before it
builds one (its name, description, whether it implies TLS, the descriptors a
connection holds) and imports the module that implements it when a port
first needs the rest (its options, its default policy, its factory).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import DatagramProtocol
from twisted.plugin import IPlugin
from zope.interface import implementer

from multiport.handlers.interface import (
    HandlerContext,
    IDatagramHandler,
    IHandler,
    parseOptionsFor,
)
from multiport.ports.policies import Policy


@implementer(IPlugin, IHandler, IDatagramHandler)
class LazyHandler:
    """
    A handler plugin standing in for C{implementation}, a handler object
    named C{"module:attribute"}, until a port needs it.

    The attributes given here must be the implementation's own
    (tests/test_plugins.py checks every built-in).
    """

    #: The lazy built-ins (http, https, relay) all run in the workers.
    servedByMainProcess = False

    def __init__(
        self,
        name: str,
        description: str,
        implementation: str,
        impliesTLS: bool = False,
        descriptorsPerConnection: int = 1,
        protocols: tuple[str, ...] = ("tcp",),
    ) -> None:
        self.name = name
        self.description = description
        self.implementation = implementation
        self.impliesTLS = impliesTLS
        self.descriptorsPerConnection = descriptorsPerConnection
        self.protocols = protocols
        self._loaded: IHandler | None = None

    def load(self) -> IHandler:
        """
        The handler this stands for, its module imported on the first call.
        """
        loaded = self._loaded
        if loaded is None:
            moduleName, _, attribute = self.implementation.partition(":")
            module = importlib.import_module(moduleName)
            loaded = self._loaded = IHandler(getattr(module, attribute))
        return loaded

    @property
    def defaultPolicy(self) -> Policy:
        """
        The implementation's default policy (none: every setting unset).
        """
        policy: Policy = getattr(self.load(), "defaultPolicy", Policy())
        return policy

    def parseOptions(self, options: Mapping[str, object], relativeTo: Path) -> object:
        """
        The implementation's parse of a port's options.
        """
        return self.load().parseOptions(options, relativeTo)

    def parseDatagramOptions(
        self, options: Mapping[str, object], relativeTo: Path
    ) -> object:
        """
        The implementation's parse of a UDP port's options (its
        C{parseDatagramOptions}, else its C{parseOptions}).
        """
        return parseOptionsFor(self.load(), "udp", options, relativeTo)

    def buildFactory(self, context: HandlerContext) -> IProtocolFactory:
        """
        The implementation's factory for one port.
        """
        factory: IProtocolFactory = self.load().buildFactory(context)
        return factory

    def buildDatagramProtocol(self, context: HandlerContext) -> DatagramProtocol:
        """
        The implementation's datagram protocol (for a handler serving UDP).
        """
        return IDatagramHandler(self.load()).buildDatagramProtocol(context)

    def __repr__(self) -> str:
        # The log names a plugin by its repr (a name taken twice): the
        # implementation's, as before plugins were lazy.
        return repr(self.load())
