"""Draw the course's figures into Supporting/images and list them in each meeting's README.

The figures are code (Supporting/figures/meetingN.py); the PNGs are what that code draws. After
changing a figure, redraw it and re-run the notebook that shows it, so the notebook's stored
output is the new picture:

    python Supporting/tools/draw_figures.py                  # every figure, and the README lists
    python Supporting/tools/draw_figures.py m3_causal_mask   # only these
    python Supporting/tools/draw_figures.py --check          # exit 1 if a PNG or list is stale

A PNG counts as current when its pixels and its text (title, alt text) equal a fresh drawing:
the pixels, not the bytes, because zlib builds may compress the same image differently.
"""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import nbformat
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "Supporting"))

from figures import Figure, all_figures  # noqa: E402
from markdown_section import update_section  # noqa: E402

from buildllm.figures import IMAGES  # noqa: E402
from buildllm.utils import write_atomically  # noqa: E402

SHOW_CALL = re.compile(r"""show_figure\(["'](m\d_[a-z0-9_]+)["']\)""")


def picture(png: bytes) -> tuple[np.ndarray, dict]:
    """What a PNG shows: its pixels as RGB, and its text chunks."""
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB")), dict(image.text)


def same_picture(a: bytes, b: bytes) -> bool:
    (pixels_a, text_a), (pixels_b, text_b) = picture(a), picture(b)
    return text_a == text_b and pixels_a.shape == pixels_b.shape and (pixels_a == pixels_b).all()


def where_shown() -> dict[str, list[str]]:
    """Figure name → the notebooks (Meeting-N/name.ipynb) whose code cells show it, with the
    names in reading order: the first notebook's figures first, each in the order of its cells."""
    shown: dict[str, list[str]] = {}
    for path in sorted(ROOT.glob("Meeting-*/*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            for name in SHOW_CALL.findall(cell.source) if cell.cell_type == "code" else []:
                shown.setdefault(name, []).append(path.relative_to(ROOT).as_posix())
    return shown


def readme_list(meeting: int, figures: dict[str, Figure], shown: dict[str, list[str]]) -> str:
    """The figures section of Meeting-N/README.md: each figure, the notebook that shows it."""
    mine = [f for f in figures.values() if f.meeting == meeting]
    if not mine:
        return "This meeting has no drawn figures.\n"
    rows = ["| Figure | Shown in | What it shows |", "|---|---|---|"]
    reading = list(shown)  # notebooks in order, and cells in order within each
    order = sorted(mine, key=lambda f: (reading.index(f.name) if f.name in shown else
                                        len(reading), f.name))
    for f in order:
        notebooks = ", ".join(f"[{p.split('/')[1]}]({p.split('/')[1]})"
                              for p in shown.get(f.name, [])) or "(not shown yet)"
        cells = f.title.replace("|", r"\|"), f.alt.replace("|", r"\|")  # | ends a cell
        rows.append(f"| [{cells[0]}](../Supporting/images/{f.name}.png) | {notebooks} | "
                    f"{cells[1]} |")
    return "\n".join(rows) + "\n"


def main(args: list[str]) -> int:
    check = "--check" in args
    names = [a for a in args if a != "--check"]
    figures = all_figures()
    unknown = sorted(set(names) - set(figures))
    if unknown:
        print(f"no figure named {', '.join(unknown)}: the figures are {', '.join(figures)}")
        return 2
    stale = []
    for figure in (figures[n] for n in names) if names else figures.values():
        path = IMAGES / f"{figure.name}.png"
        png = figure.png()
        if path.is_file() and same_picture(path.read_bytes(), png):
            continue
        stale.append(path.name)
        if not check:
            write_atomically(path, lambda tmp, png=png: tmp.write_bytes(png))
    shown = where_shown()
    for readme in sorted(ROOT.glob("Meeting-*/README.md")):
        meeting = int(readme.parent.name.removeprefix("Meeting-"))
        if update_section(readme, "figures", readme_list(meeting, figures, shown), not check):
            stale.append(readme.relative_to(ROOT).as_posix())
    verb = "stale" if check else "redrawn"
    print(f"{len(stale)} {verb}: {', '.join(stale)}" if stale else "every figure is current")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
