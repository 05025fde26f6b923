"""
Tests for L{multiport.config.tomlfile}: the TOML configuration file.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from multiport.config.model import ConfigError, PartialDefaults, TLSConfig
from multiport.config.tomlfile import FileConfig, parseConfig, readConfigFile
from multiport.handlers.web import http
from multiport.ports.policies import Policy

BASE = Path("/etc/multiport")

EXAMPLE = """\
# A configuration using every key.
[defaults]
interface = "127.0.0.1"
backlog = 64
tls = { cert = "certs/site.pem", key = "certs/site.key" }

[[port]]
port = 8080

[[port]]
port = 7000
interface = "[::1]"
handler = "echo"
backlog = 5
tls = true

[[port]]
port = 8443
handler = "https"
tls = { cert = "/abs/other.pem" }
options = { root = "www", listing = true }

[[port]]
port = 17
handler = "qotd"
tls = false

[port.options]
quote = "Hello."
"""


class ParseConfigTests(SynchronousTestCase):
    """
    Tests for L{parseConfig}, reading an already parsed TOML document.
    """

    def assertConfigError(
        self, data: dict[str, object], where: str, message: str
    ) -> ConfigError:
        """
        Reading C{data} as C{f.toml} raises a L{ConfigError} at C{where} with
        C{message}.
        """
        error = self.assertRaises(ConfigError, parseConfig, data, BASE, "f.toml")
        self.assertEqual(error.where, where)
        self.assertEqual(error.message, message)
        return error

    def test_empty(self):
        """
        An empty document sets no defaults and no ports.
        """
        self.assertEqual(
            parseConfig({}, BASE), FileConfig(defaults=PartialDefaults(), ports=())
        )

    def test_portNumbersFromOne(self):
        """
        Each C{[[port]]} table's C{where} numbers it from 1 after the file name.
        """
        config = parseConfig({"port": [{"port": 80}, {"port": 81}]}, BASE, "f.toml")
        self.assertEqual(
            [p.where for p in config.ports], ["f.toml: port[1]", "f.toml: port[2]"]
        )

    def test_noName(self):
        """
        Without a file name, C{where} is the bare key path.
        """
        config = parseConfig({"port": [{"port": 80}]}, BASE)
        self.assertEqual(config.ports[0].where, "port[1]")

    def test_noNameError(self):
        """
        Without a file name, an error names the bare key path.
        """
        error = self.assertRaises(
            ConfigError, parseConfig, {"port": [{"port": "80"}]}, BASE
        )
        self.assertEqual(
            str(error), "port[1].port: expected an integer, got string '80'"
        )

    def test_portKeysUnsaid(self):
        """
        A table with only C{port} leaves every other value to the defaults.
        """
        (request,) = parseConfig({"port": [{"port": 80}]}, BASE).ports
        self.assertEqual(
            (request.port, request.host, request.handler, request.tls, request.backlog),
            (80, None, None, None, None),
        )
        self.assertEqual(dict(request.options), {})
        self.assertEqual(request.optionsBase, BASE)

    def test_interfaceBracketsRemoved(self):
        """
        A bracketed IPv6 C{interface} is kept without its brackets.
        """
        (request,) = parseConfig(
            {"port": [{"port": 80, "interface": "[::1]"}]}, BASE
        ).ports
        self.assertEqual(request.host, "::1")

    def test_tlsTrue(self):
        """
        C{tls = true} asks for TLS with the default certificate.
        """
        (request,) = parseConfig({"port": [{"port": 80, "tls": True}]}, BASE).ports
        self.assertIs(request.tls, True)

    def test_tlsFalse(self):
        """
        C{tls = false} asks for a plain port.
        """
        (request,) = parseConfig({"port": [{"port": 80, "tls": False}]}, BASE).ports
        self.assertIs(request.tls, False)

    def test_tlsTable(self):
        """
        A C{tls} table names the certificate and key, relative to the base.
        """
        (request,) = parseConfig(
            {"port": [{"port": 443, "tls": {"cert": "a.pem", "key": "/k/a.key"}}]},
            BASE,
        ).ports
        self.assertEqual(
            request.tls,
            TLSConfig(cert=Path("/etc/multiport/a.pem"), key=Path("/k/a.key")),
        )

    def test_tlsTableCertOnly(self):
        """
        A C{tls} table without C{key} leaves the key to the certificate file.
        """
        (request,) = parseConfig(
            {"port": [{"port": 443, "tls": {"cert": "both.pem"}}]}, BASE
        ).ports
        self.assertEqual(request.tls, TLSConfig(cert=BASE / "both.pem", key=None))

    def test_options(self):
        """
        The C{options} table is passed on as read, nested tables included.
        """
        options = {"root": "www", "extra": {"depth": 2}}
        (request,) = parseConfig(
            {"port": [{"port": 80, "options": options}]}, BASE
        ).ports
        self.assertEqual(dict(request.options), options)

    def test_defaults(self):
        """
        The C{[defaults]} table sets the interface, backlog and certificate.
        """
        config = parseConfig(
            {
                "defaults": {
                    "interface": "[2001:db8::1]",
                    "backlog": 9,
                    "tls": {"cert": "c.pem"},
                }
            },
            BASE,
        )
        self.assertEqual(
            config.defaults,
            PartialDefaults(
                interface="2001:db8::1",
                backlog=9,
                tls=TLSConfig(cert=BASE / "c.pem"),
            ),
        )

    def test_unknownTopLevelKey(self):
        """
        An unknown top-level key is named, with the known ones.
        """
        self.assertConfigError(
            {"prots": []},
            "f.toml: prots",
            "unknown key (known: acme, cluster, defaults, port)",
        )

    def test_unknownPortKey(self):
        """
        An unknown key in a port table is named by its path, counting from 1.
        """
        self.assertConfigError(
            {"port": [{"port": 80}, {"port": 81, "optons": {}}]},
            "f.toml: port[2].optons",
            "unknown key (did you mean 'options'?)",
        )

    def test_unknownDefaultsKey(self):
        """
        An unknown key in C{[defaults]} is named by its path.
        """
        self.assertConfigError(
            {"defaults": {"interfase": "::1"}},
            "f.toml: defaults.interfase",
            "unknown key (did you mean 'interface'?)",
        )

    def test_drainTimeout(self):
        """
        drain_timeout is a policy key of both C{[defaults]} and C{[[port]]}
        tables.
        """
        config = parseConfig(
            {
                "defaults": {"drain_timeout": 5},
                "port": [{"port": 80, "drain_timeout": 0}],
            },
            BASE,
        )
        self.assertEqual(config.defaults.policy, Policy(drainTimeout=5.0))
        self.assertEqual(config.ports[0].policy, Policy(drainTimeout=0.0))

    def test_badDrainTimeout(self):
        """
        A negative drain_timeout is named by its path in the file.
        """
        self.assertConfigError(
            {"port": [{"port": 80}, {"port": 81, "drain_timeout": -1}]},
            "f.toml: port[2].drain_timeout",
            "expected a number of seconds, 0 or more, got integer -1",
        )
        self.assertConfigError(
            {"defaults": {"drain_timeout": "30s"}},
            "f.toml: defaults.drain_timeout",
            "expected a number of seconds, 0 or more, got string '30s'",
        )

    def test_drainTimeoutInUnknownKeyMessages(self):
        """
        Unknown-key messages know drain_timeout: as a suggestion, and in the
        list of known keys.
        """
        self.assertConfigError(
            {"port": [{"port": 80, "drain_timout": 5}]},
            "f.toml: port[1].drain_timout",
            "unknown key (did you mean 'drain_timeout'?)",
        )
        self.assertConfigError(
            {"defaults": {"drain_timeouts": 5}},
            "f.toml: defaults.drain_timeouts",
            "unknown key (did you mean 'drain_timeout'?)",
        )
        self.assertConfigError(
            {"defaults": {"zzzzzzzzzz": 1}},
            "f.toml: defaults.zzzzzzzzzz",
            "unknown key (known: allow, backlog, deny, drain_timeout, "
            "header_timeout, idle_timeout, interface, log_connections, "
            "max_connections, max_connections_per_ip, max_datagram_size, "
            "max_duration, proxy_protocol, proxy_protocol_from, rate, rate_per_ip, "
            "tls)",
        )
        error = self.assertRaises(
            ConfigError, parseConfig, {"port": [{"port": 80, "zzzzzzzzzz": 1}]}, BASE
        )
        self.assertIn(" drain_timeout,", error.message)

    def test_unknownTLSKey(self):
        """
        An unknown key in a C{tls} table is named by its path.
        """
        self.assertConfigError(
            {"port": [{"port": 443, "tls": {"cert": "c.pem", "pem": "k.pem"}}]},
            "f.toml: port[1].tls.pem",
            "unknown key (known: acme, alpn, cert, cert_dir, ciphers, client_auth, "
            "client_ca, handshake_timeout, key, min_version, sni)",
        )

    def test_portNotInteger(self):
        """
        A string port is rejected, naming the key, expected type and value.
        """
        self.assertConfigError(
            {"port": [{"port": "80"}]},
            "f.toml: port[1].port",
            "expected an integer, got string '80'",
        )

    def test_portBoolean(self):
        """
        A boolean port is not an integer, although Python says it is.
        """
        self.assertConfigError(
            {"port": [{"port": True}]},
            "f.toml: port[1].port",
            "expected an integer, got boolean True",
        )

    def test_portFloat(self):
        """
        A float port is rejected even when it is whole.
        """
        self.assertConfigError(
            {"port": [{"port": 80.0}]},
            "f.toml: port[1].port",
            "expected an integer, got number 80.0",
        )

    def test_portOutOfRange(self):
        """
        A port above 65535 is rejected, naming it.
        """
        self.assertConfigError(
            {"port": [{"port": 70000}]},
            "f.toml: port[1].port",
            "port 70000 out of range 0-65535",
        )

    def test_negativePort(self):
        """
        A negative port is rejected, naming it.
        """
        self.assertConfigError(
            {"port": [{"port": -1}]},
            "f.toml: port[1].port",
            "port -1 out of range 0-65535",
        )

    def test_handlerNotString(self):
        """
        A handler that is not a string is rejected, naming the expected type.
        """
        self.assertConfigError(
            {"port": [{"port": 80, "handler": 5}]},
            "f.toml: port[1].handler",
            "expected a string, got integer 5",
        )

    def test_backlogNotInteger(self):
        """
        A backlog that is not an integer is rejected, naming the value.
        """
        self.assertConfigError(
            {"port": [{"port": 80, "backlog": "big"}]},
            "f.toml: port[1].backlog",
            "expected an integer, got string 'big'",
        )

    def test_backlogZero(self):
        """
        A backlog below 1 is rejected, naming it.
        """
        self.assertConfigError(
            {"port": [{"port": 80, "backlog": 0}]},
            "f.toml: port[1].backlog",
            "backlog 0 must be from 1 to 65535",
        )

    def test_defaultsBacklogNotInteger(self):
        """
        A C{[defaults]} backlog that is not an integer is rejected.
        """
        self.assertConfigError(
            {"defaults": {"backlog": [1]}},
            "f.toml: defaults.backlog",
            "expected an integer, got array [1]",
        )

    def test_optionsNotTable(self):
        """
        C{options} that is not a table is rejected, naming the value.
        """
        self.assertConfigError(
            {"port": [{"port": 80, "options": [1]}]},
            "f.toml: port[1].options",
            "expected a table, got array [1]",
        )

    def test_defaultsNotTable(self):
        """
        A C{defaults} that is not a table is rejected.
        """
        self.assertConfigError(
            {"defaults": 5}, "f.toml: defaults", "expected a table, got integer 5"
        )

    def test_portTableNotTable(self):
        """
        A C{port} array item that is not a table is rejected.
        """
        self.assertConfigError(
            {"port": [{"port": 80}, "81"]},
            "f.toml: port[2]",
            "expected a table, got string '81'",
        )

    def test_portNotArray(self):
        """
        A single C{[port]} table instead of C{[[port]]} is rejected.
        """
        self.assertConfigError(
            {"port": {"port": 80}},
            "f.toml: port",
            "expected an array of tables ([[port]])",
        )

    def test_missingPort(self):
        """
        A port table without C{port} is rejected, naming the table.
        """
        self.assertConfigError(
            {"port": [{"port": 80}, {"handler": "echo"}]},
            "f.toml: port[2]",
            "missing key 'port'",
        )

    def test_tlsBad(self):
        """
        A C{tls} that is neither a boolean nor a table is rejected.
        """
        self.assertConfigError(
            {"port": [{"port": 443, "tls": "yes"}]},
            "f.toml: port[1].tls",
            "expected true, false or a table, got string 'yes'",
        )

    def test_tlsTableWithoutCert(self):
        """
        A C{key} without a C{cert} in the same table is rejected.
        """
        self.assertConfigError(
            {"port": [{"port": 443, "tls": {"key": "k.pem"}}]},
            "f.toml: port[1].tls.key",
            "needs cert in the same table",
        )

    def test_tlsCertNotString(self):
        """
        A C{cert} that is not a string is rejected, naming its path.
        """
        self.assertConfigError(
            {"port": [{"port": 443, "tls": {"cert": 7}}]},
            "f.toml: port[1].tls.cert",
            "expected a string, got integer 7",
        )

    def test_tlsKeyNotString(self):
        """
        A C{key} that is not a string is rejected, naming its path.
        """
        self.assertConfigError(
            {"defaults": {"tls": {"cert": "c.pem", "key": False}}},
            "f.toml: defaults.tls.key",
            "expected a string, got boolean False",
        )

    def test_defaultsTLSBoolean(self):
        """
        C{[defaults]} takes only a C{tls} table: a boolean is rejected.
        """
        self.assertConfigError(
            {"defaults": {"tls": True}},
            "f.toml: defaults.tls",
            "expected a table, got boolean True",
        )

    def test_badIPv6Interface(self):
        """
        An interface with a colon that is not an IPv6 address is rejected.
        """
        self.assertConfigError(
            {"port": [{"port": 80, "interface": "::zz"}]},
            "f.toml: port[1].interface",
            "'::zz' is not an IPv6 address",
        )

    def test_interfaceWithSpace(self):
        """
        An interface holding whitespace is rejected.
        """
        self.assertConfigError(
            {"defaults": {"interface": "my host"}},
            "f.toml: defaults.interface",
            "bad interface 'my host'",
        )

    def test_interfaceNotString(self):
        """
        An interface that is not a string is rejected, naming the value.
        """
        error = self.assertRaises(
            ConfigError,
            parseConfig,
            {"port": [{"port": 80, "interface": 5}]},
            BASE,
            "f.toml",
        )
        self.assertEqual(error.where, "f.toml: port[1].interface")
        self.assertIn("expected a string", error.message)
        self.assertIn("5", error.message)


class ReadConfigFileTests(SynchronousTestCase):
    """
    Tests for L{readConfigFile}, reading a TOML file from disk.
    """

    def writeFile(self, content: bytes | str, name: str = "multiport.toml") -> Path:
        """
        Write C{content} to C{name} in a new folder; its path.
        """
        folder = Path(self.mktemp())
        folder.mkdir()
        path = folder / name
        if isinstance(content, str):
            content = content.encode("utf-8")
        path.write_bytes(content)
        return path

    def test_example(self):
        """
        A file using every key reads into its defaults and ports, relative
        certificate paths resolved against the file's folder.
        """
        path = self.writeFile(EXAMPLE)
        folder = path.resolve().parent
        config = readConfigFile(path)
        self.assertEqual(
            config.defaults,
            PartialDefaults(
                interface="127.0.0.1",
                backlog=64,
                tls=TLSConfig(
                    cert=folder / "certs" / "site.pem",
                    key=folder / "certs" / "site.key",
                ),
            ),
        )
        self.assertEqual(
            [
                (r.where, r.port, r.host, r.handler, r.tls, r.backlog)
                for r in config.ports
            ],
            [
                (f"{path}: port[1]", 8080, None, None, None, None),
                (f"{path}: port[2]", 7000, "::1", "echo", True, 5),
                (
                    f"{path}: port[3]",
                    8443,
                    None,
                    "https",
                    TLSConfig(cert=Path("/abs/other.pem")),
                    None,
                ),
                (f"{path}: port[4]", 17, None, "qotd", False, None),
            ],
        )
        self.assertEqual(
            [dict(r.options) for r in config.ports],
            [{}, {}, {"root": "www", "listing": True}, {"quote": "Hello."}],
        )

    def test_optionsBaseIsFileFolder(self):
        """
        Handler options of every port resolve against the file's folder.
        """
        path = self.writeFile(EXAMPLE)
        config = readConfigFile(path)
        self.assertEqual({r.optionsBase for r in config.ports}, {path.resolve().parent})

    def test_optionsRootResolvesAgainstFileFolder(self):
        """
        A relative C{root} option names a folder beside the file, whatever the
        working directory.
        """
        path = self.writeFile(EXAMPLE)
        www = path.parent / "www"
        www.mkdir()
        request = readConfigFile(path).ports[2]
        options = http.parseOptions(request.options, request.optionsBase)
        self.assertEqual(options.root, www.resolve())

    def test_optionsBaseIsAbsolute(self):
        """
        A file named by a relative path still gives an absolute options base.
        """
        path = self.writeFile(EXAMPLE)
        self.assertFalse(path.is_absolute())
        (first, *_) = readConfigFile(path).ports
        self.assertTrue(first.optionsBase.is_absolute())

    def test_errorNamesFile(self):
        """
        An error in the file's content names the file and the key's path.
        """
        path = self.writeFile(
            "[[port]]\nport = 80\n\n[[port]]\nport = 81\noptons = {}\n"
        )
        error = self.assertRaises(ConfigError, readConfigFile, path)
        self.assertEqual(error.where, f"{path}: port[2].optons")
        self.assertEqual(
            str(error),
            f"{path}: port[2].optons: unknown key (did you mean 'options'?)",
        )

    def test_syntaxErrorPosition(self):
        """
        A TOML syntax error names the file, line and column.
        """
        path = self.writeFile("[[port]]\nport = \n")
        error = self.assertRaises(ConfigError, readConfigFile, path)
        self.assertEqual(error.where, f"{path}:2:8")
        self.assertEqual(error.message, "TOML syntax error: Invalid value")

    def test_syntaxErrorAtEnd(self):
        """
        A syntax error at the end of the document names the file and the
        parser's own description.
        """
        path = self.writeFile('[[port]]\nport = 80\nhandler = "echo')
        error = self.assertRaises(ConfigError, readConfigFile, path)
        self.assertEqual(error.where, str(path))
        self.assertEqual(
            error.message, "TOML syntax error: Unterminated string (at end of document)"
        )

    def test_duplicateKey(self):
        """
        A key set twice is a syntax error with its position.
        """
        path = self.writeFile("[defaults]\nbacklog = 1\nbacklog = 2\n")
        error = self.assertRaises(ConfigError, readConfigFile, path)
        line, column = error.where.rsplit(":", 2)[1:]
        self.assertEqual(error.where, f"{path}:{line}:{column}")
        self.assertEqual(line, "3")
        self.assertEqual(error.message, "TOML syntax error: Cannot overwrite a value")

    def test_missingFile(self):
        """
        A file that does not exist cannot be read, and the error names it.
        """
        path = Path(self.mktemp())
        error = self.assertRaises(ConfigError, readConfigFile, path)
        self.assertEqual(error.where, str(path))
        self.assertEqual(error.message, "cannot read: No such file or directory")

    def test_folder(self):
        """
        A folder cannot be read as a file, and the error names it.
        """
        path = Path(self.mktemp())
        path.mkdir()
        error = self.assertRaises(ConfigError, readConfigFile, path)
        self.assertEqual(error.where, str(path))
        self.assertEqual(error.message, "cannot read: Is a directory")

    def test_unreadableFile(self):
        """
        A file without read permission cannot be read, and the error names it.
        """
        path = self.writeFile("[[port]]\nport = 80\n")
        path.chmod(0)
        self.addCleanup(path.chmod, 0o600)
        if os.access(path, os.R_OK):
            # Root reads whatever the mode: a folder is unreadable as a file
            # for everyone.
            path = path.parent
            reason = "Is a directory"
        else:
            reason = "Permission denied"
        error = self.assertRaises(ConfigError, readConfigFile, path)
        self.assertEqual(error.where, str(path))
        self.assertEqual(error.message, f"cannot read: {reason}")

    def test_notUTF8(self):
        """
        A file that is not UTF-8 is rejected, naming the file and the bad byte.
        """
        path = self.writeFile(b'[[port]]\nport = 80\nhandler = "\xe9cho"\n')
        error = self.assertRaises(ConfigError, readConfigFile, path)
        self.assertEqual(error.where, str(path))
        self.assertTrue(error.message.startswith("not UTF-8 text: "), error.message)
        self.assertIn("0xe9", error.message)
        self.assertIn("position 30", error.message)

    def test_utf8Text(self):
        """
        Non-ASCII UTF-8 text is read as text.
        """
        path = self.writeFile(
            '[[port]]\nport = 17\nhandler = "qotd"\noptions = { quote = "caf\u00e9" }\n'
        )
        (request,) = readConfigFile(path).ports
        self.assertEqual(dict(request.options), {"quote": "caf\u00e9"})
