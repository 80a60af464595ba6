"""The Colab badge and setup cell that open every notebook, written from one template.

The repository's URL lives in one place, pyproject.toml's [project.urls]; the badge and the
setup cell are made from it here, and tests/test_notebooks.py checks every notebook against
them. After changing either, rewrite all notebooks' first two cells (their outputs are
untouched: the setup cell prints nothing and does nothing outside Colab):

    python Supporting/tools/colab_setup.py
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]

# Colab keeps /content for as long as its machine lives: through "Restart session" and a
# second "Run all", but not after the machine is recycled. So the cell clones and installs
# only when the folder is missing, and always sets the import path and the working folder.
SETUP_CELL = """\
# Colab only: get the course and install its package, once per Colab machine. Safe to run
# again (after "Restart session", say). Does nothing elsewhere.
import sys

if "google.colab" in sys.modules:
    import os
    import subprocess
    COURSE = "/content/course"
    if not os.path.isdir(COURSE):
        subprocess.run(["git", "clone", "--depth=1", "{url}", COURSE], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", COURSE], check=True)
    if f"{{COURSE}}/Supporting" not in sys.path:
        sys.path.insert(0, f"{{COURSE}}/Supporting")
    os.chdir(f"{{COURSE}}/{meeting}")"""

BADGE = re.compile(r"https://colab\.research\.google\.com/github/[^)\s]+")


def repository_url() -> str:
    """The course repository's URL, as pyproject.toml gives it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    return project["urls"]["Repository"]


def setup_cell(meeting: str) -> str:
    """The first code cell of every notebook in the folder `meeting` (e.g. "Meeting-1")."""
    return SETUP_CELL.format(url=repository_url(), meeting=meeting)


def badge_url(notebook: Path) -> str:
    """The Colab link that opens `notebook`; the solutions' badge opens the exercises,
    because in Colab a learner should start unsolved."""
    if notebook.name == "solutions.ipynb":
        notebook = notebook.with_name("exercises.ipynb")
    repo = repository_url().removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{repo}/blob/main/" + (
        notebook.resolve().relative_to(ROOT).as_posix()
    )


def rewrite(path: Path) -> bool:
    """Give one notebook the current badge and setup cell; True if it changed."""
    nb = nbformat.read(path, as_version=4)
    title = nb.cells[0]
    setup = next(c for c in nb.cells if c.cell_type == "code")
    new_title = BADGE.sub(badge_url(path), title.source, count=1)
    new_setup = setup_cell(path.parent.name)
    if (title.source, setup.source) == (new_title, new_setup):
        return False
    title.source, setup.source = new_title, new_setup
    nbformat.write(nb, path)
    return True


if __name__ == "__main__":
    paths = [Path(p) for p in sys.argv[1:]] or sorted(ROOT.glob("Meeting-*/*.ipynb"))
    for path in paths:
        if rewrite(path):
            print(f"rewrote {path.resolve().relative_to(ROOT)}")
