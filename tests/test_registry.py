"""
Tests for L{multiport.handlers.registry}: finding handler plugins.
"""

from __future__ import annotations

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from multiport.handlers import Handler, simple
from multiport.handlers.interface import descriptorsOf
from multiport.handlers.registry import findHandlers
from tests.support import installPlugin


class FindHandlersTests(SynchronousTestCase):
    """
    findHandlers returns every usable handler by name and logs the rest.
    """

    def test_builtins(self):
        """
        The built-in handlers are found through the plugin system.
        """
        handlers = findHandlers()
        for name in ("echo", "discard", "daytime", "qotd", "chargen", "http", "https"):
            self.assertIn(name, handlers)
        self.assertIs(handlers["echo"], simple.echo)

    def test_builtinWinsOverThirdParty(self):
        """
        A third-party handler named like a built-in is ignored and logged.
        """
        installPlugin(
            self,
            "impostor_handler",
            """
            from twisted.internet.protocol import Factory, Protocol
            from multiport.handlers import Handler
            echo = Handler("echo", "Not the real echo.",
                           lambda context: Factory.forProtocol(Protocol))
            """,
        )
        with capturedLogs() as events:
            handlers = findHandlers()
        self.assertIs(handlers["echo"], simple.echo)
        [event] = [e for e in events if "is taken by" in e.get("log_format", "")]
        self.assertEqual(event["name"], "echo")
        self.assertEqual(event["plugin"].description, "Not the real echo.")

    def test_badNameIgnored(self):
        """
        A handler whose name does not fit the grammar is ignored and logged.
        """
        installPlugin(
            self,
            "badname_handler",
            """
            from twisted.internet.protocol import Factory, Protocol
            from multiport.handlers import Handler
            shouty = Handler("Shouty Name", "Bad name.",
                             lambda context: Factory.forProtocol(Protocol))
            """,
        )
        with capturedLogs() as events:
            handlers = findHandlers()
        self.assertNotIn("Shouty Name", handlers)
        [event] = [e for e in events if "bad name" in e.get("log_format", "")]
        self.assertEqual(event["name"], "Shouty Name")

    def test_badDescriptorCostIgnored(self):
        """
        A plugin (not built with L{Handler}) declaring a descriptor cost
        that is not a whole number of at least 1 is ignored and logged,
        naming it and the value.
        """
        installPlugin(
            self,
            "badcost_handler",
            """
            from twisted.internet.protocol import Factory, Protocol
            from twisted.plugin import IPlugin
            from zope.interface import implementer
            from multiport.handlers import IHandler

            @implementer(IPlugin, IHandler)
            class Greedy:
                name = "greedy"
                description = "Declares half a descriptor."
                impliesTLS = False
                descriptorsPerConnection = 0.5

                def parseOptions(self, options, relativeTo):
                    return None

                def buildFactory(self, context):
                    return Factory.forProtocol(Protocol)

            greedy = Greedy()
            """,
        )
        with capturedLogs() as events:
            handlers = findHandlers()
        self.assertNotIn("greedy", handlers)
        [event] = [e for e in events if "{error}" in e.get("log_format", "")]
        self.assertEqual(
            str(event["error"]),
            "handler 'greedy': descriptorsPerConnection must be a whole number "
            "of at least 1, got number 0.5",
        )


class DescriptorCostTests(SynchronousTestCase):
    """
    A handler declares the descriptors one of its connections holds.
    """

    def test_declared(self):
        """
        One by default; the relay declares two (the client's socket and
        the upstream's).
        """
        handlers = findHandlers()
        self.assertEqual(descriptorsOf(handlers["echo"]), 1)
        self.assertEqual(descriptorsOf(handlers["http"]), 1)
        self.assertEqual(descriptorsOf(handlers["relay"]), 2)
        self.assertEqual(descriptorsOf(object()), 1)

    def test_badValueRefused(self):
        """
        L{Handler} refuses a cost below 1 or not a whole number, naming the
        handler and the value.
        """
        for value, shown in ((0, "integer 0"), (True, "boolean True")):
            error = self.assertRaises(
                ValueError,
                Handler,
                "bad",
                "Bad cost.",
                lambda context: None,
                descriptorsPerConnection=value,
            )
            self.assertEqual(
                str(error),
                "handler 'bad': descriptorsPerConnection must be a whole number "
                f"of at least 1, got {shown}",
            )
