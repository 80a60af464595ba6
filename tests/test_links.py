"""Every relative link and image in the READMEs and notebooks points at a real file.

External links are collected and printed (run pytest -s to see them) but not fetched:
CI has no network, and a flaky website should not fail the course's tests.
"""

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")


def tracked(pattern: str) -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", pattern],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [ROOT / p for p in out.split()]


def documents() -> list[Path]:
    return tracked("*.md") + tracked("*.ipynb")


def markdown_of(path: Path) -> str:
    if path.suffix == ".ipynb":
        nb = nbformat.read(path, as_version=4)
        return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    return path.read_text(encoding="utf-8")


def targets(text: str) -> list[str]:
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # links inside code blocks are examples
    return LINK.findall(text) + HTML.findall(text)


def test_the_course_has_documents_to_check():
    names = {p.relative_to(ROOT).as_posix() for p in documents()}
    assert {"README.md", "Meeting-0/README.md", "Meeting-1/README.md"} <= names


@pytest.mark.parametrize("path", documents(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(path):
    broken = []
    for target in targets(markdown_of(path)):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            if target.startswith(("http://", "https://")):
                print(f"external (not fetched): {target}")
            continue
        file_part = unquote(target.split("#")[0].split("?")[0])
        if not (path.parent / file_part).exists():
            broken.append(target)
    assert broken == [], f"{path.relative_to(ROOT)} links to missing files: {broken}"
