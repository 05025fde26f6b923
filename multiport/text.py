"""
Plain text for people: tables (the SIGUSR2 dump, C{multiport-ctl list})
and counts in log lines.
"""

from __future__ import annotations

from collections.abc import Sequence


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """
    C{count} and C{noun}, in the plural unless C{count} is 1: C{"1 port"},
    C{"2 ports"}.

    @param nouns: The plural, when it is not C{noun + "s"}.
    """
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {nouns if nouns is not None else noun + 's'}"


def alignTable(rows: Sequence[Sequence[str]], left: int) -> str:
    """
    C{rows} (the first is the heading) in aligned columns: the first
    C{left} columns flush left, the others (figures) flush right.
    """
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if index < left else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    )
