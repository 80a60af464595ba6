"""The Colab setup cell, run as Colab runs it: twice in one kernel, then in a fresh one.

Colab keeps /content through "Restart session" and a second "Run all", so the cell meets a
folder it cloned before. It must then clone nothing, and still set the import path and the
working folder. Here google.colab is a fake module, GitHub is a local repository that git
reaches through `url.<base>.insteadOf`, /content/course is a temporary folder, and pip makes
a dry run: it checks that the clone installs, and leaves this environment as it was.
"""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from colab_setup import repository_url, setup_cell

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def github(tmp_path):
    """A local repository with the course's package, standing in for GitHub."""
    source = tmp_path / "github"
    for folder in ("buildllm", "images"):  # the package, and the figures it shows
        shutil.copytree(ROOT / "Supporting" / folder, source / "Supporting" / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", source)
    for meeting in sorted(ROOT.glob("Meeting-*")):
        (source / meeting.name).mkdir()
        shutil.copy(meeting / "README.md", source / meeting.name)
    git = ["git", "-C", str(source), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(source)], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "course"], check=True)
    return source


def run_cell_in_new_process(meetings: list[str], course: Path, env: dict,
                            then: str = "") -> list[str]:
    """Run each meeting's setup cell in one new Python process, as Colab's kernel would;
    after each, print the working folder and where buildllm is imported from, then run the
    code `then` (a notebook's next cell)."""
    cells = [setup_cell(m).replace('"/content/course"', repr(str(course))) for m in meetings]
    script = textwrap.dedent("""
        import importlib, os, sys, types
        sys.modules["google.colab"] = types.ModuleType("google.colab")  # as in Colab
        for cell in CELLS:
            exec(cell, {})
            sys.modules.pop("buildllm", None)
            buildllm = importlib.import_module("buildllm")
            print(os.getcwd(), buildllm.__file__, sys.path.count(CELLS_PATH), flush=True)
    """).replace("CELLS_PATH", repr(f"{course}/Supporting")).replace("CELLS", repr(cells))
    script += textwrap.dedent(then)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, cwd=course.parent.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


def colab_env(github: Path, tmp_path: Path) -> dict:
    """git reaches the local stand-in for GitHub; pip only checks that the clone installs."""
    return {**os.environ, "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": f"url.{github.as_uri()}.insteadOf",
            "GIT_CONFIG_VALUE_0": repository_url(),
            # pip resolves and builds the clone, and installs nothing (with the build isolated,
            # the dry run would skip installing setuptools for the build too)
            "PIP_DRY_RUN": "1", "PIP_NO_BUILD_ISOLATION": "0",
            "PIP_LOG": str(tmp_path / "pip.log")}  # -q hides what pip did; its log keeps it


def test_the_cell_names_the_folder_it_clones_to_once():
    assert setup_cell("Meeting-1").count('"/content/course"') == 1


def test_setup_cell_survives_a_second_run_and_a_restarted_session(github, tmp_path):
    course = tmp_path / "content" / "course"
    env = colab_env(github, tmp_path)

    # First session: "Run all", then "Run all" again in the same kernel.
    first = run_cell_in_new_process(["Meeting-1", "Meeting-1"], course, env)
    package = f"{course}/Supporting/buildllm/__init__.py"
    assert first == [f"{course}/Meeting-1 {package} 1"] * 2  # one path entry, not two
    assert (course / ".git").is_dir()
    assert "Would install buildllm-" in (tmp_path / "pip.log").read_text()
    (tmp_path / "pip.log").unlink()

    # "Restart session": a fresh kernel meets the folder. Were it to clone again, git would
    # stop with "already exists"; with GitHub unreachable, it would fail too.
    env["GIT_CONFIG_KEY_0"] = f"url.{(tmp_path / 'nowhere').as_uri()}.insteadOf"
    again = run_cell_in_new_process(["Meeting-5", "Meeting-7"], course, env)
    assert again == [f"{course}/Meeting-5 {package} 1", f"{course}/Meeting-7 {package} 1"]
    assert not (tmp_path / "pip.log").exists()  # installed once per machine, not per session


def test_a_figure_cell_run_again_in_colab_shows_the_clones_png(github, tmp_path):
    """Colab shows a figure's stored output at once; run again, the cell reads the PNG from
    the clone, since Colab resolves no path relative to the notebook."""
    course = tmp_path / "content" / "course"
    name = min(p.stem for p in (ROOT / "Supporting" / "images").glob("*.png"))
    shown = run_cell_in_new_process(["Meeting-3"], course, colab_env(github, tmp_path), f"""
        from buildllm.figures import IMAGES, show_figure
        png, metadata = show_figure({name!r})._repr_png_()
        print(IMAGES, len(png), metadata["width"] > 0)
    """)
    png = course / "Supporting" / "images" / f"{name}.png"
    assert shown[1] == f"{png.parent} {png.stat().st_size} True"
    assert png.read_bytes() == (ROOT / "Supporting" / "images" / f"{name}.png").read_bytes()


def test_outside_colab_the_cell_does_nothing(tmp_path):
    before = os.getcwd(), list(sys.path)
    exec(setup_cell("Meeting-1").replace('"/content/course"', repr(str(tmp_path / "c"))), {})
    assert (os.getcwd(), sys.path) == before
    assert not (tmp_path / "c").exists()
