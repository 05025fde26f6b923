"""
Print the oldest Twisted release setup.cfg admits: the ">=" bound of its
twisted requirement, so that CI pins the same version the package claims.

Exit 1 if setup.cfg has no twisted requirement with a ">=" bound.
"""

import configparser
import re
import sys

REQUIREMENT = re.compile(r"^twisted(\[[^\]]*\])?\s*(?P<specifiers>.*)$", re.I)
LOWER = re.compile(r"^>=\s*(?P<version>[0-9][0-9.]*)$")


def main() -> int:
    config = configparser.ConfigParser()
    config.read("setup.cfg")
    requirements = config.get("options", "install_requires", fallback="")
    for line in requirements.splitlines():
        match = REQUIREMENT.match(line.strip())
        if match is None:
            continue
        for specifier in match.group("specifiers").split(","):
            lower = LOWER.match(specifier.strip())
            if lower is not None:
                print(lower.group("version"))
                return 0
        bound = line.strip()
        print(f"setup.cfg: twisted has no '>=' bound: {bound!r}", file=sys.stderr)
        return 1
    print("setup.cfg: no twisted in [options] install_requires", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
