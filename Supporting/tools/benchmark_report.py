"""What every benchmark prints: the machine it ran on, then its results as a Markdown table,
ready to paste into a meeting's README."""

import os
import platform


def machine() -> str:
    """The processor and its number of cores, the first words of every benchmark's report."""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def markdown_table(header: list[str], rows: list[list[str]],
                   separators: list[str] | None = None) -> str:
    """A Markdown table; `separators` ("---:" right-aligns a column) default to "---".

    >>> print(markdown_table(["measurement", "result"], [["speed", "2×"]]))
    | measurement | result |
    |---|---|
    | speed | 2× |
    """
    lines = ["| " + " | ".join(cells) + " |" for cells in [header, *rows]]
    lines.insert(1, "|" + "|".join(separators or ["---"] * len(header)) + "|")
    return "\n".join(lines)
