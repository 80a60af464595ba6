"""Generate each meeting's exercises.ipynb from its solutions.ipynb.

solutions.ipynb is the only notebook anyone edits. In it, each exercise's answer sits
between marker lines inside a function body:

    def build_vocab(tokens):
        # BEGIN SOLUTION
        return {t: i for i, t in enumerate(sorted(set(tokens)))}
        # END SOLUTION

and becomes `raise NotImplementedError(...)` in exercises.ipynb. Markdown between
<!-- BEGIN SOLUTION --> and <!-- END SOLUTION --> is dropped. The exercises notebook is
then executed, so GitHub shows what a learner sees before solving anything.

    python Supporting/tools/make_exercises.py               # regenerate and execute all
    python Supporting/tools/make_exercises.py Meeting-1     # just one meeting
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]
STUB = 'raise NotImplementedError("Your code here")'
_CODE_BLOCK = re.compile(r"^([ \t]*)# BEGIN SOLUTION\n.*?^[ \t]*# END SOLUTION\n?", re.M | re.S)
_MARKDOWN_BLOCK = re.compile(r"<!-- BEGIN SOLUTION -->.*?<!-- END SOLUTION -->\n?", re.S)


def strip_code(source: str) -> str:
    """Replace each marked solution block with a stub at the block's indentation.

    >>> strip_code("def f():\\n    # BEGIN SOLUTION\\n    return 1\\n    # END SOLUTION\\n")
    'def f():\\n    raise NotImplementedError("Your code here")\\n'
    """
    for match in _CODE_BLOCK.finditer(source):
        if not match.group(1):
            # At top level the stub would fail in its own cell, and every later cell
            # would then fail with a NameError: the check cell could not say "not done yet".
            raise ValueError(f"a solution block must sit inside a function body:\n{match.group(0)}")
    stripped = _CODE_BLOCK.sub(lambda m: f"{m.group(1)}{STUB}\n", source)
    if "SOLUTION" in stripped:
        raise ValueError(f"unbalanced or misplaced solution marker in:\n{source}")
    # The block's own newline is always written back; drop it where the cell had none.
    return stripped if source.endswith("\n") else stripped.rstrip("\n")


def exercises_from(solutions: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The exercises notebook for a solutions notebook: stubs in, answers and outputs out."""
    nb = nbformat.v4.new_notebook(metadata=solutions.metadata)
    for cell in solutions.cells:
        if cell.cell_type == "code":
            nb.cells.append(nbformat.v4.new_code_cell(strip_code(cell.source)))
        elif cell.cell_type == "markdown":
            text = _MARKDOWN_BLOCK.sub("", cell.source)
            if text.strip():
                nb.cells.append(nbformat.v4.new_markdown_cell(text))
        else:
            nb.cells.append(nbformat.v4.new_raw_cell(cell.source))
    return nb


def execute(nb: nbformat.NotebookNode, folder: Path) -> None:
    """Run every cell in `folder`, keeping going past errors (the stubs are meant to fail)."""
    from nbclient import NotebookClient

    NotebookClient(
        nb, timeout=600, allow_errors=True, resources={"metadata": {"path": str(folder)}}
    ).execute()


def main(meetings: list[str]) -> None:
    folders = [ROOT / m for m in meetings] or sorted(ROOT.glob("Meeting-*"))
    for folder in folders:
        solutions = folder / "solutions.ipynb"
        if not solutions.exists():
            continue
        nb = exercises_from(nbformat.read(solutions, as_version=4))
        execute(nb, folder)
        nbformat.write(nb, folder / "exercises.ipynb")
        print(f"wrote {(folder / 'exercises.ipynb').relative_to(ROOT)}")


if __name__ == "__main__":
    main(sys.argv[1:])
