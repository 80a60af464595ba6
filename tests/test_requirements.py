"""requirements.txt, the learner's install, holds every package a notebook needs, and only that.

Every module a notebook imports, and every module the course package imports, must come
from a distribution that requirements.txt installs, directly or as a dependency of one it
names. What only the tests, benchmarks and parity checks need lives in requirements-dev.txt.
"""

import ast
import json
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(source: str) -> set[str]:
    """Top-level names of the absolute imports in `source` (IPython magics skipped)."""
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    names = set()
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def third_party(names: set[str]) -> set[str]:
    """Leave out the standard library, the course package, and `google.colab`, which only
    Colab has (the Drive cells import it there)."""
    course_or_colab = ("buildllm", "google")
    return {n for n in names if n not in sys.stdlib_module_names and n not in course_or_colab}


def what_notebooks_import() -> dict[str, str]:
    """module -> the first notebook or course module that imports it."""
    found = {}
    for path in sorted(ROOT.glob("Meeting-*/*.ipynb")) + sorted(
        (ROOT / "Supporting" / "buildllm").rglob("*.py")
    ):
        if path.suffix == ".ipynb":
            cells = json.loads(path.read_text("utf-8"))["cells"]
            source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        else:
            source = path.read_text("utf-8")
        for module in third_party(imported_modules(source)):
            found.setdefault(module, path.relative_to(ROOT).as_posix())
    return found


def named_in(requirements: Path) -> set[str]:
    """The distributions a requirements file names (not those of files it includes)."""
    names = set()
    for line in requirements.read_text("utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.add(canonicalize_name(Requirement(line).name))
    return names


def installed_by(names: set[str]) -> set[str]:
    """`names` and everything they depend on, as installed here (extras left out)."""
    seen, todo = set(), list(names | {"buildllm"})  # -e . installs the course package
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for spec in metadata.requires(name) or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return seen


LEARNER = installed_by(named_in(ROOT / "requirements.txt"))


@pytest.mark.parametrize("module, where", sorted(what_notebooks_import().items()))
def test_the_learners_install_provides_every_imported_module(module, where):
    dists = {canonicalize_name(d) for d in metadata.packages_distributions().get(module, [])}
    assert dists, f"{module} (imported by {where}) comes from no installed distribution"
    assert dists & LEARNER, f"{module}, imported by {where}, is not installed by requirements.txt"


def test_test_only_packages_stay_out_of_the_learners_install():
    dev_only = named_in(ROOT / "requirements-dev.txt")
    assert {"pytest", "transformers", "peft", "faiss-cpu", "selenium", "ruff"} <= dev_only
    assert dev_only & LEARNER == set(), "a package of requirements-dev.txt is in the learner's"


def test_the_dev_file_adds_to_the_learners_file():
    lines = (ROOT / "requirements-dev.txt").read_text("utf-8").splitlines()
    assert "-r requirements.txt" in lines
