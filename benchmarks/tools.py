"""
The outside tools the benchmarks use, how to get the missing ones, and the C
load generator, compiled on first use.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOADGEN_SOURCE = HERE / "loadgen.c"
BUILD = HERE / "build"

#: nginx's stream module, which Debian ships apart from nginx-light: what
#: nginx needs to proxy UDP.
NGINX_STREAM = Path("/usr/lib/nginx/modules/ngx_stream_module.so")

#: How to install each tool on Debian (the machines this project runs on).
INSTALL = {
    "gcc": "apt-get install gcc",
    "taskset": "apt-get install util-linux",
    "wrk": "apt-get install wrk",
    "h2load": "apt-get install nghttp2-client",
    "nginx": "apt-get install nginx-light",
    "nginx-stream": "apt-get install libnginx-mod-stream",
    "haproxy": "apt-get install haproxy",
    "socat": "apt-get install socat",
    "strace": "apt-get install strace",
    "py-spy": "python -m pip install '.[bench]'  (or: pip install py-spy)",
    "uvloop": "python -m pip install '.[bench]'  (or: pip install uvloop)",
    "matplotlib": "python -m pip install '.[bench]'  (or: pip install matplotlib)",
}

_PYTHON_MODULES = {"uvloop", "matplotlib"}
#: Servers Debian installs in /usr/sbin, often not on a user's PATH.
_SBIN = ("nginx", "haproxy")


def have(tool: str) -> bool:
    """
    Whether C{tool} (a command, a Python module, or nginx's stream module)
    is available.
    """
    if tool in _PYTHON_MODULES:
        return importlib.util.find_spec(tool) is not None
    if tool == "nginx-stream":
        return NGINX_STREAM.exists()
    return (
        shutil.which(tool) is not None
        or (tool in _SBIN and (Path("/usr/sbin") / tool).exists())
        or _beside(tool).exists()
    )


def _beside(tool: str) -> Path:
    """
    Where pip installs the command C{tool} (py-spy): beside this Python,
    which need not be on C{PATH} (a virtualenv not activated).
    """
    return Path(sys.executable).parent / tool


def command(tool: str) -> str:
    """
    The path of command C{tool}.
    """
    found = shutil.which(tool)
    if found is None and tool in _SBIN:
        candidate = Path("/usr/sbin") / tool
        if candidate.exists():
            return str(candidate)
    if found is None and _beside(tool).exists():
        return str(_beside(tool))
    if found is None:
        raise LookupError(f"{tool} is missing: {INSTALL.get(tool, tool)}")
    return found


def missing(tools: Iterable[str]) -> list[str]:
    """
    The C{tools} that are not there.
    """
    return [tool for tool in tools if not have(tool)]


def installHint(tools: Iterable[str]) -> str:
    """
    One line per missing tool saying how to install it.
    """
    return "\n".join(f"  {tool}: {INSTALL.get(tool, '?')}" for tool in tools)


def compiled(source: Path, name: str) -> Path:
    """
    The binary C{name} built from the C file C{source}, compiled with the
    machine's gcc when missing or older than its source.
    """
    binary = BUILD / name
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    BUILD.mkdir(exist_ok=True)
    # Built under a name of its own, then renamed: two test processes
    # building at once each run a whole binary, never one half written.
    building = binary.with_name(f"{name}.{os.getpid()}")
    subprocess.run(
        [command("gcc"), "-O2", "-Wall", "-o", str(building), str(source)],
        check=True,
    )
    os.replace(building, binary)
    return binary


def loadgen() -> Path:
    """
    The load generator binary (L{compiled} from C{loadgen.c}).
    """
    return compiled(LOADGEN_SOURCE, "loadgen")
