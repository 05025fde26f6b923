"""
Plain-text tables for people (the SIGUSR2 dump, C{multiport-ctl list}).
"""

from __future__ import annotations

from collections.abc import Sequence


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
