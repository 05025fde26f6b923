"""
Tests for L{multiport.handlers.registry}: finding handler plugins.
"""

from __future__ import annotations

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from multiport.handlers import simple
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
