"""
Print the install step and the test command of README.rst's Quick start.

The Quick start holds exactly two literal blocks of one command line each;
the second is "INSTALL && TEST".  Exit 1 if README does not say so.
"""

import re
import sys
from pathlib import Path


def literalBlocks(section: str) -> list[str]:
    blocks = []
    lines = section.splitlines()
    for i, line in enumerate(lines):
        if line.rstrip().endswith("::"):
            body = []
            for following in lines[i + 1 :]:
                if following.strip() and not following.startswith((" ", "\t")):
                    break
                if following.strip():
                    body.append(following.strip())
            blocks.append("\n".join(body))
    return blocks


def main() -> int:
    text = Path("README.rst").read_text()
    heading = r"^Quick start\n-+\n(.*?)(?=^\S[^\n]*\n[-=~]+\n)"
    match = re.search(heading, text, re.M | re.S)
    if match is None:
        print("README.rst has no 'Quick start' section", file=sys.stderr)
        return 1
    blocks = literalBlocks(match.group(1))
    if len(blocks) != 2 or any("\n" in b for b in blocks):
        print(f"Quick start must hold two one-line blocks: {blocks!r}", file=sys.stderr)
        return 1
    install, _, tests = blocks[1].partition(" && ")
    if not tests:
        print(f"the test block is not INSTALL && TEST: {blocks[1]!r}", file=sys.stderr)
        return 1
    print(install)
    print(tests)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
