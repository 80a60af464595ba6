"""The drawing kit every course figure is made with: boxes, arrows, grids and text on a white card.

A figure is laid out in units of one screen pixel at the size it is shown, with y growing
downward as on a web page, so its code reads like its layout: `box(20, 40, 120, 36, "wte")`
is 20 px from the left edge and 40 px from the top. It is rendered at SCALE times that size, for
sharp lines on high-density screens, and quantized to a small palette, which keeps a line
drawing's PNG a few tens of kilobytes. The card is opaque white with dark ink, so the figure
reads the same on a light page and a dark one.

Nothing here uses pyplot: a figure is a plain matplotlib Figure on its own Agg canvas, so
drawing one never touches the backend a notebook or a test has chosen.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle
from PIL import Image, PngImagePlugin

SCALE = 2  # pixels per layout unit; buildllm.figures shows a figure at 1/SCALE of its pixels
PAPER, INK, MUTED = "#ffffff", "#1f2937", "#6b7280"
# (fill, edge) pairs, light enough for dark ink inside and dark enough to tell apart.
COLORS = {
    "blue": ("#dbeafe", "#1d4ed8"),
    "green": ("#dcfce7", "#15803d"),
    "orange": ("#ffedd5", "#c2410c"),
    "purple": ("#ede9fe", "#6d28d9"),
    "red": ("#fee2e2", "#b91c1c"),
    "yellow": ("#fef9c3", "#a16207"),
    "grey": ("#f3f4f6", "#4b5563"),
    "white": (PAPER, "#9ca3af"),
}
PALETTE_SIZE = 128


class Canvas:
    """One figure: draw on it with the methods below, then call png()."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.fig = Figure(figsize=(width / 100, height / 100), dpi=100 * SCALE)
        FigureCanvasAgg(self.fig)
        self.fig.patch.set_facecolor(PAPER)
        self.ax = self.fig.add_axes((0, 0, 1, 1))
        self.ax.set_xlim(0, width)
        self.ax.set_ylim(height, 0)
        self.ax.axis("off")
        self.texts: list[str] = []  # everything written, so a test can find the names it shows

    def text(self, x: float, y: float, s: str, *, size: float = 11, color: str = INK,
             mono: bool = False, ha: str = "center", va: str = "center",
             weight: str = "normal", rotation: float = 0) -> None:
        """Write `s` at (x, y); monospace for code: variable names, shapes, ids."""
        self.texts.append(s)
        self.ax.text(x, y, s, fontsize=size, color=color, ha=ha, va=va, weight=weight,
                     rotation=rotation, family="DejaVu Sans Mono" if mono else "DejaVu Sans")

    def box(self, x: float, y: float, w: float, h: float, label: str = "", *,
            color: str = "blue", mono: bool = False, size: float = 11, dashed: bool = False,
            radius: float = 6, weight: str = "normal") -> None:
        """A rounded box with its top-left corner at (x, y) and `label` centred in it."""
        fill, edge = COLORS[color]
        self.ax.add_patch(FancyBboxPatch(
            (x, y), w, h, boxstyle=f"round,pad=0,rounding_size={radius}", facecolor=fill,
            edgecolor=edge, linewidth=1.4, linestyle="--" if dashed else "-"))
        if label:
            self.text(x + w / 2, y + h / 2, label, size=size, mono=mono, weight=weight)

    def arrow(self, start: tuple[float, float], end: tuple[float, float], *,
              color: str = INK, label: str = "", size: float = 10, bend: float = 0,
              dashed: bool = False) -> None:
        """An arrow from `start` to `end`, with `label` beside its middle; `bend` curves it."""
        self.ax.add_patch(FancyArrowPatch(
            start, end, arrowstyle="-|>", mutation_scale=12, color=color, linewidth=1.4,
            connectionstyle=f"arc3,rad={bend}", linestyle="--" if dashed else "-",
            shrinkA=2, shrinkB=2))
        if label:
            self.text((start[0] + end[0]) / 2 + 6, (start[1] + end[1]) / 2, label,
                      size=size, color=MUTED, ha="left")

    def line(self, points: list[tuple[float, float]], *, color: str = INK,
             width: float = 1.4, dashed: bool = False) -> None:
        """A polyline through `points`: a bracket, a path, an axis."""
        xs, ys = zip(*points, strict=True)
        self.ax.plot(xs, ys, color=color, linewidth=width, linestyle="--" if dashed else "-",
                     solid_capstyle="round")

    def grid(self, x: float, y: float, values: list[list[str]], *, cell: float = 28,
             fills: list[list[str]] | None = None, size: float = 9, mono: bool = True) -> None:
        """A table of cells with top-left corner (x, y): a matrix, a mask, a batch of ids.

        `values` gives each cell's text (rows of strings); `fills` each cell's colour name
        ("white" when omitted), so a mask or a selection stands out.
        """
        for i, row in enumerate(values):
            for j, value in enumerate(row):
                fill, edge = COLORS[fills[i][j] if fills else "white"]
                self.ax.add_patch(Rectangle((x + j * cell, y + i * cell), cell, cell,
                                            facecolor=fill, edgecolor=edge, linewidth=0.8))
                if value:
                    self.text(x + (j + 0.5) * cell, y + (i + 0.5) * cell, value, size=size,
                              mono=mono)

    def _check_fits(self) -> None:
        """Refuse a figure whose text runs off the card: matplotlib would silently cut it."""
        renderer = self.fig.canvas.get_renderer()
        card = self.fig.bbox
        cut = [t.get_text() for t in self.ax.texts
               if not card.contains(*t.get_window_extent(renderer).p0)
               or not card.contains(*t.get_window_extent(renderer).p1)]
        if cut:
            raise ValueError(f"text runs off the {self.width}x{self.height} figure: {cut}; "
                             "make the Canvas bigger or move the text")

    def png(self, title: str, alt: str) -> bytes:
        """The finished figure as PNG bytes carrying its title and alt text ("Description")."""
        self.fig.canvas.draw()
        self._check_fits()
        rgb = np.asarray(self.fig.canvas.buffer_rgba())[..., :3]
        image = Image.fromarray(rgb).quantize(PALETTE_SIZE, method=Image.Quantize.MEDIANCUT)
        info = PngImagePlugin.PngInfo()
        info.add_itxt("Title", title)
        info.add_itxt("Description", alt)
        out = io.BytesIO()
        image.save(out, format="png", optimize=True, pnginfo=info)
        return out.getvalue()

    def key(self, x: float, y: float, color: str, label: str, *, dashed: bool = False) -> None:
        """One entry of a legend: a small swatch of `color` at (x, y) and its label beside it."""
        self.box(x, y, 18, 18, color=color, radius=2, dashed=dashed)
        self.text(x + 26, y + 9, label, ha="left", size=10)
