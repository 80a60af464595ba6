"""The drawn figures: each PNG is what its code draws, each notebook shows it in a form every
viewer displays, and each names what the code beside it names.

Supporting/figures holds the drawings' code, Supporting/images the PNGs, and a notebook shows
one with a code cell, `show_figure("m3_causal_mask")`, whose stored output is the PNG itself:
GitHub and JupyterLab show the stored output, and Colab (which resolves neither a relative
image path nor a cell attachment) shows it too and redraws it from the clone on a re-run.
"""

import base64
import os
from functools import cache
from pathlib import Path

import nbformat
import pytest
from draw_figures import SHOW_CALL, picture, readme_list, same_picture, where_shown
from figures import all_figures
from figures import figure as register
from figures.kit import Canvas
from markdown_section import section

from buildllm.figures import IMAGES, SCALE, show_figure

ROOT = Path(__file__).resolve().parents[1]

FIGURES = all_figures()
SHOWN = where_shown()  # read every notebook once: figure name → the notebooks that show it
NEARBY = 4  # cells on either side of a figure that must name what it shows


@cache
def figure_cells(path: Path):
    """(index, cell, name) for every code cell of the notebook that shows a figure."""
    cells = nbformat.read(path, as_version=4).cells
    return cells, [(i, c, n) for i, c in enumerate(cells) if c.cell_type == "code"
                   for n in SHOW_CALL.findall(c.source)]


@pytest.mark.parametrize("name", FIGURES)
def test_each_png_is_what_its_code_draws(name):
    committed = IMAGES / f"{name}.png"
    assert committed.is_file(), f"run: python Supporting/tools/draw_figures.py {name}"
    assert same_picture(committed.read_bytes(), FIGURES[name].png()), (
        f"{committed.name} is stale: python Supporting/tools/draw_figures.py {name}")


def test_every_png_in_images_has_its_code():
    assert {p.stem for p in IMAGES.glob("*.png")} == set(FIGURES)


@pytest.mark.parametrize("name", FIGURES)
def test_each_figure_reads_on_light_and_dark_pages_and_says_what_it_shows(name):
    pixels, text = picture((IMAGES / f"{name}.png").read_bytes())
    corners = pixels[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners == 255).all(), "an opaque white card, so a dark page cannot show through"
    alt = text["Description"]
    assert len(alt) >= 60 and alt.endswith("."), "alt text: a sentence or two a reader can use"
    assert text["Title"] == FIGURES[name].title


@pytest.mark.parametrize("meeting", range(1, 8))
def test_every_meeting_has_six_figures_shown_in_its_notebooks(meeting):
    mine = [n for n, f in FIGURES.items() if f.meeting == meeting and n in SHOWN]
    assert len(mine) >= 6, f"Meeting {meeting} shows {len(mine)} drawn figures: {mine}"


@pytest.mark.parametrize("name", FIGURES)
def test_a_notebook_stores_the_png_itself_with_its_alt_text(name):
    """The form GitHub, JupyterLab and Colab all display: a stored image/png output."""
    notebooks = SHOWN.get(name, [])
    assert notebooks, f"no notebook calls show_figure({name!r})"
    png, alt = (IMAGES / f"{name}.png").read_bytes(), FIGURES[name].alt
    for notebook in notebooks:
        _, cells = figure_cells(ROOT / notebook)
        for _, cell, shown in cells:
            if shown != name:
                continue
            images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
            assert len(images) == 1, f"{notebook}: the cell showing {name} has no stored image"
            assert base64.b64decode(images[0].data["image/png"]) == png, (
                f"{notebook} stores an old {name}: re-run the notebook")
            assert images[0].data["text/plain"] == alt
            assert images[0].metadata["image/png"]["width"] * SCALE == picture(png)[0].shape[1]


@pytest.mark.parametrize("name", FIGURES)
def test_a_figure_names_what_the_code_beside_it_names(name):
    """Each name or shape a figure promises (shows=...) appears in the code cells or printed
    outputs within NEARBY cells of the cell that shows it: the picture matches the code."""
    assert name in SHOWN, f"no notebook shows {name}"
    path = ROOT / SHOWN[name][0]
    cells, shown = figure_cells(path)
    index = next(i for i, _, n in shown if n == name)
    around = cells[max(0, index - NEARBY):index + NEARBY + 1]
    text = "\n".join(
        c.source + "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                           for o in c.get("outputs", []))
        for c in around if c.cell_type == "code")
    missing = [s for s in FIGURES[name].shows if s not in text]
    assert missing == [], f"{path.name}: the cells around {name} never write {missing}"


@pytest.mark.parametrize("meeting", range(8))
def test_each_meeting_readme_lists_its_figures(meeting):
    readme = (ROOT / f"Meeting-{meeting}" / "README.md").read_text(encoding="utf-8")
    expected = readme_list(meeting, FIGURES, SHOWN)
    assert section(readme, "figures") == expected, "run: python Supporting/tools/draw_figures.py"


def test_show_figure_works_from_any_folder_as_in_colab(tmp_path, monkeypatch):
    """Colab re-runs the cell from the clone's meeting folder; the figure is found from the
    package, never from the working folder."""
    monkeypatch.chdir(tmp_path)
    name = next(iter(FIGURES))
    shown = show_figure(name)
    png, metadata = shown._repr_png_()
    assert png == (IMAGES / f"{name}.png").read_bytes() and repr(shown) == FIGURES[name].alt
    assert metadata["width"] * SCALE == picture(png)[0].shape[1]


def test_an_unknown_figure_is_one_line_naming_the_known_ones():
    with pytest.raises(FileNotFoundError) as error:
        show_figure("m3_causal_masc")
    message = str(error.value)
    assert "\n" not in message and "m3_causal_masc" in message
    assert next(iter(FIGURES)) in message


def test_text_that_runs_off_the_card_is_refused():
    canvas = Canvas(100, 40)
    canvas.text(90, 20, "a label far too long for this card", ha="left")
    with pytest.raises(ValueError, match="runs off the 100x40 figure"):
        canvas.png("t", "alt")


def test_a_figure_that_does_not_draw_what_it_promises_is_refused(monkeypatch):
    monkeypatch.setattr("figures.FIGURES", dict(FIGURES))
    register("m9_test_only", "Test", alt="x", shows=("d_out",))(lambda: Canvas(50, 50))
    import figures

    with pytest.raises(ValueError, match=r"promises to show \['d_out'\]"):
        figures.FIGURES["m9_test_only"].png()
    with pytest.raises(ValueError, match="must look like m3_causal_mask and be unique"):
        register("m9_test_only", "Again", alt="x")


def test_check_mode_reports_a_stale_png_and_writes_nothing(tmp_path, monkeypatch, capsys):
    import draw_figures

    name = next(iter(FIGURES))
    stale = tmp_path / f"{name}.png"
    stale.write_bytes(Canvas(50, 50).png("old", "old"))
    before = stale.read_bytes()
    monkeypatch.setattr(draw_figures, "IMAGES", tmp_path)
    assert draw_figures.main(["--check", name]) == 1
    assert f"{name}.png" in capsys.readouterr().out and stale.read_bytes() == before
    assert draw_figures.main(["m0_nothing_like_it"]) == 2
    assert os.listdir(tmp_path) == [stale.name]


def test_meeting2s_gpt2_numbers_are_gpt2s(enc):
    """Meeting 2's figures write GPT-2's ranks and ids without loading its files; here they
    are checked against vocab.bpe and tiktoken's GPT-2 encoding."""
    from figures import meeting2

    from buildllm.data import fetch

    lines = Path(fetch("vocab.bpe")).read_text(encoding="utf-8").splitlines()[1:]
    rank = {tuple(line.split()): r for r, line in enumerate(lines) if line}
    assert {pair: rank.get(pair) for pair in meeting2.RANKS} == meeting2.RANKS
    pieces, ids = zip(*meeting2.DOC_IDS, strict=True)
    assert enc.encode(meeting2.DOC, allowed_special="all") == list(ids)
    assert "".join(pieces) == meeting2.DOC
