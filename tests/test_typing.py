"""
Tests that the handler plugin API is typed: mypy --strict with the
mypy-zope plugin, run on a third-party handler as its author would, checks
its use of L{multiport.handlers.HandlerContext}.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import multiport

#: The project's root, where mypy finds multiport as a third party would
#: find it installed.
ROOT = Path(multiport.__file__).resolve().parent.parent

#: A handler author's configuration: multiport's own modules are checked
#: but their errors not shown, as for an installed package.
CONFIG = """
[mypy]
strict = True
plugins = mypy_zope:plugin
python_version = 3.11

[mypy-multiport.*]
follow_imports = silent

[mypy-OpenSSL.*,service_identity.*,prometheus_client.*]
ignore_missing_imports = True
"""

#: Lines of a handler that uses its context as typed.
GOOD = """
from twisted.internet.interfaces import IConnector, IDelayedCall, IProtocolFactory
from twisted.internet.protocol import ClientFactory, Factory, Protocol

from multiport.handlers import HandlerContext
from multiport.handlers.interface import PortStatus


def build(context: HandlerContext) -> IProtocolFactory:
    started: float = context.clock.seconds()
    call: IDelayedCall = context.clock.callLater(1.0, print, started)
    call.cancel()
    connector: IConnector = context.reactor.connectTCP("127.0.0.1", 7, ClientFactory())
    connector.disconnect()
    ports: list[PortStatus] = (
        [] if context.daemon is None else context.daemon.portStatus()
    )
    print(ports)
    return Factory.forProtocol(Protocol)
"""

#: A handler with one mistake a line, each marked with the error code
#: mypy must report there.
BAD = """
from twisted.internet.protocol import ClientFactory, Protocol

from multiport.handlers import HandlerContext


def build(context: HandlerContext) -> None:
    context.reactor.connectTCP("127.0.0.1", "7", ClientFactory())  # arg-type
    label: str = context.clock.seconds()  # assignment
    context.daemon.portStatus()  # union-attr
    context.reactor.listenUNIX("/tmp/x", ClientFactory())  # attr-defined
"""


def mypyErrors(testCase: SynchronousTestCase, source: str) -> list[tuple[int, str]]:
    """
    The errors mypy reports in the handler module C{source}: (line, code)
    pairs.
    """
    folder = Path(testCase.mktemp()).resolve()
    folder.mkdir()
    module = folder / "handler.py"
    module.write_text(textwrap.dedent(source).lstrip())
    config = folder / "mypy.ini"
    config.write_text(CONFIG)
    environment = dict(os.environ, MYPYPATH=str(ROOT))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(config),
            "--cache-dir",
            str(folder / "cache"),
            str(module),
        ],
        cwd=folder,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    if result.returncode not in (0, 1):
        testCase.fail(f"mypy failed to run ({result.returncode}):\n{output}")
    # mypy names the module relative to its working folder.
    pattern = re.compile(r"^handler\.py:(\d+): error: .*\[([a-z-]+)\]$")
    errors = []
    for line in output.splitlines():
        match = pattern.match(line)
        if match is not None:
            errors.append((int(match.group(1)), match.group(2)))
    if result.returncode == 1 and not errors:
        testCase.fail(f"mypy failed outside the handler:\n{output}")
    return errors


class HandlerContextTypingTests(SynchronousTestCase):
    """
    A handler's use of its L{HandlerContext} is type-checked: the reactor,
    the clock and the daemon view have real types, not C{Any}.
    """

    def test_typedUseChecks(self) -> None:
        """
        A handler that uses the reactor, the clock and the daemon view as
        their types say passes mypy --strict.
        """
        self.assertEqual(mypyErrors(self, GOOD), [])

    def test_misuseIsReported(self) -> None:
        """
        A wrong argument to the reactor, the clock's time taken for a
        string, the daemon view used without its L{None} check and a
        reactor method multiport does not promise are each reported.
        """
        source = textwrap.dedent(BAD).lstrip()
        expected = [
            (number, line.rpartition("# ")[2])
            for number, line in enumerate(source.splitlines(), 1)
            if "  # " in line
        ]
        self.assertEqual(len(expected), 4)
        self.assertEqual(mypyErrors(self, source), expected)
