"""The course's drawn figures, shown in a notebook with one line: show_figure("m3_causal_mask").

The pictures are PNG files in Supporting/images, drawn from code in Supporting/figures by
`python Supporting/tools/draw_figures.py`. A notebook shows one from a code cell rather than
as a Markdown image because the cell's output is stored in the notebook itself: Colab resolves
neither a relative image path nor a cell attachment, and GitHub's viewer does not reliably draw
SVG, but every viewer shows a stored PNG. Each PNG carries its alt text (its "Description"),
which the output keeps beside the image as plain text.
"""

from __future__ import annotations

import struct
from pathlib import Path

from PIL import Image

IMAGES = Path(__file__).resolve().parents[1] / "images"
SCALE = 2  # figures are drawn at twice the size they are shown (Supporting/figures/kit.py)


class ShownFigure:
    """A figure as Jupyter displays it: the PNG, shown at 1/SCALE size, and its alt text."""

    def __init__(self, path: Path) -> None:
        self.png = path.read_bytes()
        with Image.open(path) as image:
            self.alt = image.text["Description"]
        self.width = struct.unpack(">I", self.png[16:20])[0] // SCALE  # from the PNG's header

    def _repr_png_(self) -> tuple[bytes, dict]:
        return self.png, {"width": self.width}

    def __repr__(self) -> str:
        return self.alt


def show_figure(name: str) -> ShownFigure:
    """The course figure `name`, for a notebook cell to display."""
    path = IMAGES / f"{name}.png"
    if not path.is_file():
        known = sorted(p.stem for p in IMAGES.glob("*.png"))
        raise FileNotFoundError(f"no figure {name!r} in {IMAGES}: the course's figures are "
                                f"{', '.join(known) or 'missing'} (git pull for new ones)")
    return ShownFigure(path)
