"""
Tests for the plugin modules in C{twisted/plugins/} and
L{multiport.handlers.lazy}: discovery stays cheap, and a lazy plugin is the
handler it stands for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from twisted.plugin import IPlugin
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from multiport.handlers import web
from multiport.handlers.interface import IHandler
from multiport.handlers.lazy import LazyHandler

ROOT = Path(__file__).resolve().parent.parent

#: Modules a command that serves no port must not load.
HEAVY = (
    "twisted.web",
    "OpenSSL",
    "twisted.internet.ssl",
    "multiport.handlers.web",
    "wsproto",
)


def modulesAfter(code: str) -> list[str]:
    """
    Run C{code} in a new Python and return the names of the modules it
    imported, sorted.
    """
    script = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    output = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    names: list[str] = json.loads(output.splitlines()[-1])
    return names


def heavy(modules: list[str]) -> list[str]:
    """
    The modules of C{modules} that are (in) one of L{HEAVY}.
    """
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


class DiscoveryTests(SynchronousTestCase):
    """
    Finding plugins imports no handler's implementation.
    """

    def test_handlerDiscoveryIsLight(self) -> None:
        """
        C{getPlugins(IHandler)} finds every built-in handler without
        importing twisted.web or OpenSSL.
        """
        modules = modulesAfter(
            "from twisted.plugin import getPlugins\n"
            "from multiport.handlers.interface import IHandler\n"
            "names = sorted(p.name for p in getPlugins(IHandler))\n"
            "assert names == ['agent-check', 'chargen', 'daytime', 'discard', 'echo',"
            " 'http', 'https', 'qotd', 'relay', 'status',"
            " 'websocket'], names\n"
        )
        self.assertEqual(heavy(modules), [])

    def test_twistdHelpIsLight(self) -> None:
        """
        Our plugin modules, imported as twistd imports them when it rebuilds
        its plugin cache, and twistd's list of subcommands (what
        C{twistd --help} shows) load neither twisted.web nor OpenSSL.
        """
        modules = modulesAfter(
            "import twisted.plugins.multiport_handlers\n"
            "import twisted.plugins.multiport_plugin\n"
            "import twisted.plugins.multiport_reactor\n"
            "from twisted.scripts.twistd import ServerOptions\n"
            "names = [c[0] for c in ServerOptions().subCommands]\n"
            "assert 'multiport' in names, names\n"
        )
        self.assertIn("twisted.plugins.multiport_handlers", modules)
        self.assertEqual(heavy(modules), [])

    def test_oneStatementEach(self) -> None:
        """
        Each of our plugin modules is its docstring, its imports and at most
        one statement (the plugin object): what twistd imports to list its
        plugins holds no logic of its own.
        """
        import ast

        folder = Path(__file__).parent.parent / "twisted" / "plugins"
        modules = sorted(folder.glob("multiport_*.py"))
        self.assertEqual(
            [m.name for m in modules],
            ["multiport_handlers.py", "multiport_plugin.py", "multiport_reactor.py"],
        )
        for module in modules:
            body = ast.parse(module.read_text()).body
            if ast.get_docstring(ast.Module(body=body, type_ignores=[])):
                body = body[1:]
            imports = (ast.Import, ast.ImportFrom)
            others = [s for s in body if not isinstance(s, imports)]
            self.assertLessEqual(
                len(others), 1, f"{module.name}: {[ast.dump(s) for s in others]}"
            )

    def test_nothingImportsCtl(self) -> None:
        """
        Importing every module of the daemon leaves the multiport-ctl tool
        out: it is no part of the runtime import path.
        """
        daemonModules = sorted(
            ".".join(path.relative_to(ROOT).with_suffix("").parts)
            for path in (ROOT / "multiport").rglob("*.py")
            if "ctl" not in path.relative_to(ROOT / "multiport").parts
            and path.name != "__main__.py"
        )
        self.assertIn("multiport.daemon.tap", daemonModules)
        modules = modulesAfter(
            "import importlib\n"
            + "".join(f"importlib.import_module({m!r})\n" for m in daemonModules)
        )
        self.assertIn("multiport.daemon.tap", modules)
        self.assertEqual([m for m in modules if m.startswith("multiport.ctl")], [])


class LazyHandlerTests(SynchronousTestCase):
    """
    A L{LazyHandler} is the handler it stands for.
    """

    def lazyBuiltins(self) -> list[LazyHandler]:
        from multiport.handlers.builtins import BUILTINS

        lazy = [h for h in BUILTINS if isinstance(h, LazyHandler)]
        self.assertEqual(
            sorted(h.name for h in lazy), ["http", "https", "relay", "websocket"]
        )
        return lazy

    def test_provides(self) -> None:
        """
        Every lazy built-in provides L{IPlugin} and L{IHandler}.
        """
        for handler in self.lazyBuiltins():
            self.assertTrue(verifyObject(IPlugin, handler))
            self.assertTrue(verifyObject(IHandler, handler))

    def test_sameAttributes(self) -> None:
        """
        What a lazy built-in says before loading (name, description, TLS,
        descriptors per connection) is what its implementation says.
        """
        for handler in self.lazyBuiltins():
            real = handler.load()
            self.assertIsNot(real, handler)
            for attribute in (
                "name",
                "description",
                "impliesTLS",
                "descriptorsPerConnection",
                "servedByMainProcess",
            ):
                self.assertEqual(
                    getattr(handler, attribute),
                    getattr(real, attribute),
                    f"{handler.name}.{attribute}",
                )
            self.assertEqual(repr(handler), repr(real))

    def test_delegates(self) -> None:
        """
        Options, default policy and factory come from the implementation.
        """
        lazy = LazyHandler("http", "d", "multiport.handlers.web:http")
        self.assertIs(lazy.load(), web.http)
        self.assertIs(lazy.defaultPolicy, web.HTTP_POLICY)
        options = {"listing": True, "server_header": False}
        self.assertEqual(
            lazy.parseOptions(options, ROOT), web.http.parseOptions(options, ROOT)
        )

    def test_noDefaultPolicy(self) -> None:
        """
        An implementation without a default policy gives an empty one.
        """
        from multiport.ports.policies import Policy

        lazy = LazyHandler("relay", "d", "multiport.handlers.relay:relay")
        self.assertEqual(lazy.defaultPolicy, Policy())
