"""Read and rewrite one marked section of a Markdown file: the lines between
`<!-- NAME:start -->` and `<!-- NAME:end -->`.

The tools that write a table into a page (results_board.py, run_notebooks.py,
scaling_estimates.py) all go through here, so the markers mean the same thing everywhere and
a page with a lost or doubled marker is an error that says so, never a silent miss.
"""

from pathlib import Path


def _split(text: str, name: str, where: str) -> tuple[str, str, str]:
    """(what comes before the section, the section, what comes after): the markers stay outside."""
    start, end = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
    found = text.count(start), text.count(end)
    if found != (1, 1) or text.index(start) > text.index(end):
        raise ValueError(f"{where} needs one line {start.strip()} and, below it, one line {end}"
                         f" (it has {found[0]} and {found[1]}): they mark where the {name} "
                         "section goes")
    head, rest = text.split(start)
    body, tail = rest.split(end)
    return head + start, body, end + tail


def section(text: str, name: str, where: str = "the page") -> str:
    """The text between NAME's markers.

    >>> section("# A\\n<!-- t:start -->\\nold\\n<!-- t:end -->\\n", "t")
    'old\\n'
    """
    return _split(text, name, where)[1]


def replace_section(text: str, name: str, body: str, where: str = "the page") -> str:
    """`text` with the lines between NAME's markers replaced by `body` (which ends in a newline).

    >>> replace_section("# A\\n<!-- t:start -->\\nold\\n<!-- t:end -->\\n", "t", "new\\n")
    '# A\\n<!-- t:start -->\\nnew\\n<!-- t:end -->\\n'
    """
    head, _, tail = _split(text, name, where)
    return head + body + tail


def update_section(path: Path, name: str, body: str, write: bool = True) -> bool:
    """Put `body` between NAME's markers in the file at `path`, and say whether that changed it.

    With write=False it only says whether it would (a --check mode). A file whose section
    already holds `body` is not written at all. Raises ValueError, and leaves the file as it
    was, when the markers are missing, doubled or in the wrong order.
    """
    text = path.read_text(encoding="utf-8")
    updated = replace_section(text, name, body, path.name)
    if write and updated != text:
        path.write_text(updated, encoding="utf-8")
    return updated != text
