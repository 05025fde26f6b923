"""
The TOML configuration file: C{[defaults]} and C{[[port]]} tables, read into
the same L{PortRequest}s as the command line.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path

from attrs import frozen

from multiport.config.files import FileError, readRegularFile
from multiport.config.model import (
    MAX_BACKLOG,
    PartialDefaults,
    PortRequest,
    TLSConfig,
    parseInterface,
)
from multiport.errors import ConfigError, typeName
from multiport.ports.policies import KEYS as POLICY_KEYS
from multiport.ports.policies import parsePolicy

#: The largest configuration file read: far above any real one (ten
#: thousand ports take about 1 MiB), and a bound on what a mistaken path
#: can make the daemon read.
MAX_CONFIG_FILE = 16 << 20

_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")
_TOP = {"defaults", "port"}
_DEFAULTS = {"interface", "backlog", "tls", "log_connections", *POLICY_KEYS}
_PORT = {
    "port",
    "interface",
    "handler",
    "tls",
    "backlog",
    "options",
    "log_connections",
    *POLICY_KEYS,
}
_TLS = {
    "cert",
    "key",
    "min_version",
    "ciphers",
    "alpn",
    "handshake_timeout",
    "sni",
    "cert_dir",
    "client_ca",
    "client_auth",
}

_ARTICLES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    dict: "a table",
    list: "an array",
}


@frozen
class FileConfig:
    """
    What a configuration file says.
    """

    defaults: PartialDefaults
    ports: tuple[PortRequest, ...]


def _expect(value: object, kind: type, where: str) -> None:
    if type(value) is not kind:
        raise ConfigError(
            where,
            f"expected {_ARTICLES[kind]}, got {typeName(value)} {value!r}",
        )


def _unknown(table: Mapping[str, object], known: set[str], where: str) -> None:
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = (
                f"did you mean {close[0]!r}?"
                if close
                else f"known: {', '.join(sorted(known))}"
            )
            raise ConfigError(
                f"{where}.{key}" if where else key, f"unknown key ({hint})"
            )


def _tlsTable(value: object, where: str, base: Path) -> TLSConfig:
    _expect(value, dict, where)
    assert isinstance(value, dict)
    _unknown(value, _TLS, where)
    if "key" in value and "cert" not in value:
        raise ConfigError(f"{where}.key", "needs cert in the same table")
    paths = {}
    for key in ("cert", "key"):
        if key in value:
            _expect(value[key], str, f"{where}.{key}")
            paths[key] = base / value[key]
    minVersion = None
    if "min_version" in value:
        minVersion = value["min_version"]
        if minVersion not in ("1.2", "1.3"):
            raise ConfigError(
                f"{where}.min_version",
                f'expected "1.2" or "1.3", got {typeName(minVersion)} {minVersion!r}',
            )
    ciphers = None
    if "ciphers" in value:
        _expect(value["ciphers"], str, f"{where}.ciphers")
        ciphers = value["ciphers"]
    alpn = None
    if "alpn" in value:
        _expect(value["alpn"], list, f"{where}.alpn")
        for index, name in enumerate(value["alpn"]):
            if type(name) is not str or not name or not name.isascii():
                raise ConfigError(
                    f"{where}.alpn[{index}]", f"expected a protocol name, got {name!r}"
                )
        alpn = tuple(value["alpn"])
    timeout = None
    if "handshake_timeout" in value:
        timeout = value["handshake_timeout"]
        if type(timeout) not in (int, float) or not timeout > 0:
            raise ConfigError(
                f"{where}.handshake_timeout",
                f"expected a number of seconds above 0, got {typeName(timeout)} "
                f"{timeout!r}",
            )
        timeout = float(timeout)
    sni = None
    if "sni" in value:
        _expect(value["sni"], dict, f"{where}.sni")
        entries = []
        for name, entry in value["sni"].items():
            here = f"{where}.sni.{name}"
            if not name or name.lower() != name or " " in name:
                raise ConfigError(here, "server names are lowercase DNS names")
            _expect(entry, dict, here)
            _unknown(entry, {"cert", "key"}, here)
            if "cert" not in entry:
                raise ConfigError(here, "missing key 'cert'")
            _expect(entry["cert"], str, f"{here}.cert")
            keyPath = None
            if "key" in entry:
                _expect(entry["key"], str, f"{here}.key")
                keyPath = base / entry["key"]
            entries.append((name, base / entry["cert"], keyPath))
        sni = tuple(entries)
    certDir = None
    if "cert_dir" in value:
        _expect(value["cert_dir"], str, f"{where}.cert_dir")
        certDir = base / value["cert_dir"]
    clientCA = None
    if "client_ca" in value:
        _expect(value["client_ca"], str, f"{where}.client_ca")
        clientCA = base / value["client_ca"]
    clientAuth = None
    if "client_auth" in value:
        clientAuth = value["client_auth"]
        if clientAuth not in ("optional", "required"):
            raise ConfigError(
                f"{where}.client_auth",
                f'expected "optional" or "required", got {clientAuth!r}',
            )
    return TLSConfig(
        cert=paths.get("cert"),
        key=paths.get("key"),
        minVersion=minVersion,
        ciphers=ciphers,
        alpn=alpn,
        handshakeTimeout=timeout,
        sni=sni,
        certDir=certDir,
        clientCA=clientCA,
        clientAuth=clientAuth,
    )


def _flag(table: Mapping[str, object], key: str, where: str) -> bool | None:
    if key not in table:
        return None
    _expect(table[key], bool, f"{where}.{key}")
    return bool(table[key])


def _backlog(value: object, where: str) -> int:
    _expect(value, int, where)
    assert isinstance(value, int)
    if not 1 <= value <= MAX_BACKLOG:
        raise ConfigError(where, f"backlog {value} must be from 1 to {MAX_BACKLOG}")
    return value


def _defaults(table: object, base: Path, prefix: str) -> PartialDefaults:
    where = f"{prefix}defaults"
    _expect(table, dict, where)
    assert isinstance(table, dict)
    _unknown(table, _DEFAULTS, where)
    return PartialDefaults(
        interface=parseInterface(table["interface"], f"{where}.interface")
        if "interface" in table
        else None,
        backlog=_backlog(table["backlog"], f"{where}.backlog")
        if "backlog" in table
        else None,
        tls=_tlsTable(table["tls"], f"{where}.tls", base) if "tls" in table else None,
        logConnections=_flag(table, "log_connections", where),
        policy=parsePolicy(table, where),
    )


def _port(table: object, where: str, base: Path) -> PortRequest:
    _expect(table, dict, where)
    assert isinstance(table, dict)
    _unknown(table, _PORT, where)
    if "port" not in table:
        raise ConfigError(where, "missing key 'port'")
    _expect(table["port"], int, f"{where}.port")
    port = table["port"]
    if not 0 <= port <= 65535:
        raise ConfigError(f"{where}.port", f"port {port} out of range 0-65535")
    handler = None
    if "handler" in table:
        _expect(table["handler"], str, f"{where}.handler")
        handler = table["handler"]
    tls: bool | TLSConfig | None = None
    if "tls" in table:
        value = table["tls"]
        if isinstance(value, bool):
            tls = value
        elif isinstance(value, dict):
            tls = _tlsTable(value, f"{where}.tls", base)
        else:
            raise ConfigError(
                f"{where}.tls",
                f"expected true, false or a table, got {typeName(value)} {value!r}",
            )
    options: dict[str, object] = {}
    if "options" in table:
        _expect(table["options"], dict, f"{where}.options")
        options = table["options"]
    return PortRequest(
        where=where,
        port=port,
        host=parseInterface(table["interface"], f"{where}.interface")
        if "interface" in table
        else None,
        handler=handler,
        tls=tls,
        backlog=_backlog(table["backlog"], f"{where}.backlog")
        if "backlog" in table
        else None,
        logConnections=_flag(table, "log_connections", where),
        policy=parsePolicy(table, where),
        options=options,
        optionsBase=base,
    )


def portRequest(table: object, where: str, base: Path) -> PortRequest:
    """
    One port from a C{[[port]]}-shaped table (the admin API's bodies).

    @raise ConfigError: naming C{where} and the bad key.
    """
    return _port(table, where, base)


def parseConfig(data: Mapping[str, object], base: Path, name: str = "") -> FileConfig:
    """
    Read a parsed TOML document.

    @param base: The folder relative paths resolve against.
    @param name: The file's name, to prefix error locations with.
    """
    prefix = f"{name}: " if name else ""
    for key in data:
        if key not in _TOP:
            raise ConfigError(
                f"{prefix}{key}", f"unknown key (known: {', '.join(sorted(_TOP))})"
            )
    defaults = (
        _defaults(data["defaults"], base, prefix)
        if "defaults" in data
        else PartialDefaults()
    )
    ports = data.get("port", [])
    if type(ports) is not list:
        raise ConfigError(f"{prefix}port", "expected an array of tables ([[port]])")
    return FileConfig(
        defaults=defaults,
        ports=tuple(
            _port(table, f"{prefix}port[{i}]", base) for i, table in enumerate(ports, 1)
        ),
    )


def readConfigFile(path: Path) -> FileConfig:
    """
    Read and check a TOML configuration file.

    @raise ConfigError: naming the file and, for syntax errors, the line and
        column; for other errors, the path of the bad key.
    """
    try:
        text = readRegularFile(path, MAX_CONFIG_FILE, "the configuration file")
    except FileError as e:
        raise ConfigError(str(path), f"cannot read: {e.reason}") from None
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(str(path), f"not UTF-8 text: {e}") from e
    except RecursionError:
        raise ConfigError(str(path), "TOML nested too deeply to read") from None
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        position = _POSITION.search(message)
        if position is None:
            raise ConfigError(str(path), f"TOML syntax error: {message}") from e
        line, column = position.groups()
        raise ConfigError(
            f"{path}:{line}:{column}",
            f"TOML syntax error: {message[: position.start()].strip()}",
        ) from e
    return parseConfig(data, path.resolve().parent, str(path))
