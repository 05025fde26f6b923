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
from typing import TypeVar, cast

from attrs import frozen

from multiport.acme.config import (
    AcmeConfig,
    checkDirectoryCA,
    parseAcmeNames,
    parseAcmeTable,
)
from multiport.config.cluster import parseClusterTable
from multiport.config.files import FileError, readRegularFile
from multiport.config.model import (
    MAX_BACKLOG,
    PROTOCOLS,
    PartialDefaults,
    PortRequest,
    TLSConfig,
    parseInterface,
)
from multiport.errors import ConfigError, typeName
from multiport.ports.policies import KEYS as POLICY_KEYS
from multiport.ports.policies import parsePolicy

_T = TypeVar("_T")

#: The largest configuration file read: far above any real one (ten
#: thousand ports take about 1 MiB), and a bound on what a mistaken path
#: can make the daemon read.
MAX_CONFIG_FILE = 16 << 20

_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")
_TOP = {"defaults", "port", "acme", "cluster"}
_DEFAULTS = {"interface", "backlog", "tls", "log_connections", *POLICY_KEYS}
_PORT = {
    "port",
    "interface",
    "handler",
    "protocol",
    "tls",
    "backlog",
    "options",
    "log_connections",
    "name",
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
    "acme",
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
    acme: AcmeConfig | None = None
    #: The C{[cluster]} table's peers.
    peers: tuple[str, ...] = ()


def _expect(value: object, kind: type[_T], where: str) -> _T:
    """
    C{value}, checked to be exactly of C{kind} (a boolean is no integer).
    """
    if type(value) is not kind:
        raise ConfigError(
            where,
            f"expected {_ARTICLES[kind]}, got {typeName(value)} {value!r}",
        )
    return value


def _table(value: object, where: str) -> dict[str, object]:
    """
    C{value}, checked to be a table (whose keys, in TOML as in JSON, are
    strings).
    """
    return cast("dict[str, object]", _expect(value, dict, where))


def _array(value: object, where: str) -> list[object]:
    """
    C{value}, checked to be an array.
    """
    return cast("list[object]", _expect(value, list, where))


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
    table = _table(value, where)
    _unknown(table, _TLS, where)
    if "key" in table and "cert" not in table:
        raise ConfigError(f"{where}.key", "needs cert in the same table")
    acme = None
    if "acme" in table:
        if "cert" in table:
            raise ConfigError(f"{where}.acme", "cannot be combined with cert")
        acme = parseAcmeNames(table["acme"], f"{where}.acme")
    paths: dict[str, Path] = {}
    for key in ("cert", "key"):
        if key in table:
            paths[key] = base / _expect(table[key], str, f"{where}.{key}")
    minVersion = None
    if "min_version" in table:
        version = table["min_version"]
        if not isinstance(version, str) or version not in ("1.2", "1.3"):
            raise ConfigError(
                f"{where}.min_version",
                f'expected "1.2" or "1.3", got {typeName(version)} {version!r}',
            )
        minVersion = version
    ciphers = None
    if "ciphers" in table:
        ciphers = _expect(table["ciphers"], str, f"{where}.ciphers")
    alpn = None
    if "alpn" in table:
        protocols: list[str] = []
        for index, name in enumerate(_array(table["alpn"], f"{where}.alpn")):
            if type(name) is not str or not name or not name.isascii():
                raise ConfigError(
                    f"{where}.alpn[{index}]", f"expected a protocol name, got {name!r}"
                )
            protocols.append(name)
        alpn = tuple(protocols)
    timeout = None
    if "handshake_timeout" in table:
        seconds = table["handshake_timeout"]
        if (type(seconds) is not int and type(seconds) is not float) or not seconds > 0:
            raise ConfigError(
                f"{where}.handshake_timeout",
                f"expected a number of seconds above 0, got {typeName(seconds)} "
                f"{seconds!r}",
            )
        timeout = float(seconds)
    sni = None
    if "sni" in table:
        entries: list[tuple[str, Path, Path | None]] = []
        for name, entry in _table(table["sni"], f"{where}.sni").items():
            here = f"{where}.sni.{name}"
            if not name or name.lower() != name or " " in name:
                raise ConfigError(here, "server names are lowercase DNS names")
            entryTable = _table(entry, here)
            _unknown(entryTable, {"cert", "key"}, here)
            if "cert" not in entryTable:
                raise ConfigError(here, "missing key 'cert'")
            cert = _expect(entryTable["cert"], str, f"{here}.cert")
            keyPath = None
            if "key" in entryTable:
                keyPath = base / _expect(entryTable["key"], str, f"{here}.key")
            entries.append((name, base / cert, keyPath))
        sni = tuple(entries)
    certDir = None
    if "cert_dir" in table:
        certDir = base / _expect(table["cert_dir"], str, f"{where}.cert_dir")
    clientCA = None
    if "client_ca" in table:
        clientCA = base / _expect(table["client_ca"], str, f"{where}.client_ca")
    clientAuth = None
    if "client_auth" in table:
        auth = table["client_auth"]
        if not isinstance(auth, str) or auth not in ("optional", "required"):
            raise ConfigError(
                f"{where}.client_auth",
                f'expected "optional" or "required", got {auth!r}',
            )
        clientAuth = auth
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
        acme=acme,
    )


def _flag(table: Mapping[str, object], key: str, where: str) -> bool | None:
    if key not in table:
        return None
    return _expect(table[key], bool, f"{where}.{key}")


def _backlog(value: object, where: str) -> int:
    backlog = _expect(value, int, where)
    if not 1 <= backlog <= MAX_BACKLOG:
        raise ConfigError(where, f"backlog {backlog} must be from 1 to {MAX_BACKLOG}")
    return backlog


def _defaults(value: object, base: Path, prefix: str) -> PartialDefaults:
    where = f"{prefix}defaults"
    table = _table(value, where)
    _unknown(table, _DEFAULTS, where)
    given = table.get("tls")
    if isinstance(given, dict) and "acme" in given:
        raise ConfigError(
            f"{where}.tls.acme", "names are ordered per port: set it in a [[port]]"
        )
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


def _port(value: object, where: str, base: Path) -> PortRequest:
    table = _table(value, where)
    _unknown(table, _PORT, where)
    if "port" not in table:
        raise ConfigError(where, "missing key 'port'")
    port = _expect(table["port"], int, f"{where}.port")
    if not 0 <= port <= 65535:
        raise ConfigError(f"{where}.port", f"port {port} out of range 0-65535")
    handler = None
    if "handler" in table:
        handler = _expect(table["handler"], str, f"{where}.handler")
    tls: bool | TLSConfig | None = None
    if "tls" in table:
        given = table["tls"]
        if isinstance(given, bool):
            tls = given
        elif isinstance(given, dict):
            tls = _tlsTable(given, f"{where}.tls", base)
        else:
            raise ConfigError(
                f"{where}.tls",
                f"expected true, false or a table, got {typeName(given)} {given!r}",
            )
    options: dict[str, object] = {}
    if "options" in table:
        options = _table(table["options"], f"{where}.options")
    protocol = _protocol(table, where)
    return PortRequest(
        protocol=protocol,
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
        socketName=_socketName(table["name"], f"{where}.name")
        if "name" in table
        else None,
    )


def _protocol(table: Mapping[str, object], where: str) -> str:
    value = _expect(table.get("protocol", "tcp"), str, f"{where}.protocol")
    if value not in PROTOCOLS:
        raise ConfigError(
            f"{where}.protocol", f"unknown protocol {value!r}; 'tcp' or 'udp'"
        )
    return value


def _socketName(value: object, where: str) -> str:
    # systemd's rule for FileDescriptorName=: up to 255 printable ASCII
    # characters, no colon (LISTEN_FDNAMES is colon-separated).
    name = _expect(value, str, where)
    if not 0 < len(name) <= 255 or not all(" " < c <= "~" and c != ":" for c in name):
        raise ConfigError(
            where,
            f"{name!r} is not a socket name: 1 to 255 printable ASCII characters, "
            "no spaces or colons (systemd's FileDescriptorName=)",
        )
    return name


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
        acme=parseAcmeTable(data["acme"], f"{prefix}acme", base)
        if "acme" in data
        else None,
        peers=parseClusterTable(data["cluster"], f"{prefix}cluster")
        if "cluster" in data
        else (),
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
    config = parseConfig(data, path.resolve().parent, str(path))
    if config.acme is not None:
        checkDirectoryCA(config.acme, f"{path}: acme.directory_ca")
    return config
