"""Every drawn figure of the course, by name: the code that draws it and what it says in words.

Each meeting's figures live in `meetingN.py`, one function per figure, registered with the
@figure decorator:

    @figure("m3_causal_mask", "The causal mask", alt="A 6 by 6 grid ...", shows=("mask",))
    def causal_mask() -> Canvas: ...

`shows` lists the names and numbers the figure writes that the notebook cell beside it must
also print or use (a variable name, a shape): tests/test_figures.py checks both sides, so a
figure cannot drift from the code it pictures. `python Supporting/tools/draw_figures.py`
redraws them all into Supporting/images, where buildllm.figures.show_figure finds them.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from figures.kit import Canvas

NAME = re.compile(r"m(\d)_[a-z0-9_]+")
FIGURES: dict[str, Figure] = {}


@dataclass(frozen=True)
class Figure:
    name: str
    title: str
    alt: str
    shows: tuple[str, ...]
    draw: Callable[[], Canvas]

    @property
    def meeting(self) -> int:
        return int(self.name[1])

    def png(self) -> bytes:
        """Draw the figure; refuse one that does not write every name it promises to show."""
        canvas = self.draw()
        missing = [s for s in self.shows if not any(s in text for text in canvas.texts)]
        if missing:
            raise ValueError(f"figure {self.name} promises to show {missing} but never writes "
                             "them: draw them, or take them out of its shows=(...)")
        return canvas.png(self.title, self.alt)


def figure(name: str, title: str, *, alt: str, shows: tuple[str, ...] = ()) -> Callable:
    """Register the decorated function as the drawing of figure `name` (m<meeting>_<what>)."""
    if not NAME.fullmatch(name) or name in FIGURES:
        raise ValueError(f"figure name {name!r} must look like m3_causal_mask and be unique")

    def register(draw: Callable[[], Canvas]) -> Callable[[], Canvas]:
        FIGURES[name] = Figure(name, title, alt, tuple(shows), draw)
        return draw

    return register


def all_figures() -> dict[str, Figure]:
    """Every registered figure, in meeting order: importing meetingN.py registers its own."""
    for path in sorted(Path(__file__).parent.glob("meeting*.py")):
        importlib.import_module(f"figures.{path.stem}")
    return dict(sorted(FIGURES.items()))
