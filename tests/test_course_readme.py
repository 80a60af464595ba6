"""The course README: how to get the course, and a package table that names every module."""

import re
from pathlib import Path

from colab_setup import repository_url

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PACKAGE = ROOT / "Supporting" / "buildllm"


def test_the_clone_command_names_the_repository_of_pyproject():
    assert f"git clone {repository_url()}.git\n" in README


def test_the_readme_gives_the_cpu_torch_line_before_the_install_that_needs_it():
    pinned = re.search(r"^torch==\S+", (ROOT / "requirements.txt").read_text(), re.M).group()
    cpu_torch = README.index(f"pip install {pinned} --index-url https://download.pytorch.org/whl/cpu")
    assert README.index("git clone") < cpu_torch < README.index("pip install -r requirements.txt")
    assert "pip install -r requirements.txt && jupyter lab" in README
    assert "pip install -r requirements-dev.txt && pytest" in README


def package_modules() -> set[str]:
    """Every module of buildllm by its dotted name ("tokenizers.bpe"), leaving out the private
    ones (no reader starts there) and check's per-meeting modules (eight of one kind, which the
    table's `check` row names together)."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]  # a package is named by its folder
        private = any(part.startswith("_") for part in parts)
        per_meeting_check = parts[:1] == ("check",) and len(parts) > 1
        if parts and not private and not per_meeting_check:
            names.add(".".join(parts))
    return names


def test_the_package_table_names_every_module_of_buildllm():
    table = README[README.index("## The course package `buildllm`"):]
    listed = set(re.findall(r"^\| `([\w.]+)` \|", table, re.M))
    assert {"model", "tokenizers", "tokenizers.bpe", "check"} <= package_modules()
    missing = package_modules() - listed
    assert not missing, f"README.md's package table lacks {sorted(missing)}: add a line for each"
