"""
Tests for L{multiport.handlers.registry}: finding handler plugins.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

import twisted.plugins
from multiport.handlers import simple
from multiport.handlers.registry import findHandlers


class PluginFolderMixin:
    """
    Put a plugin module into a temporary twisted/plugins folder on sys.path.
    """

    def addPlugin(self, name: str, source: str) -> None:
        folder = Path(self.mktemp())
        plugins = folder / "twisted" / "plugins"
        plugins.mkdir(parents=True)
        (plugins / f"{name}.py").write_text(textwrap.dedent(source))
        self.patch(sys, "path", [str(folder), *sys.path])
        self.patch(
            twisted.plugins, "__path__", [*twisted.plugins.__path__, str(plugins)]
        )
        self.addCleanup(sys.modules.pop, f"twisted.plugins.{name}", None)


class FindHandlersTests(PluginFolderMixin, SynchronousTestCase):
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
        self.addPlugin(
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
        self.addPlugin(
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
