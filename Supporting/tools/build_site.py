"""Build the course as a static website: the READMEs and every notebook with its saved outputs.

    python Supporting/tools/build_site.py [--out DIR]     # default: site/ (gitignored)

Nothing is executed: each notebook shows the outputs committed with it. mkdocs refuses a
docs folder that holds its own config, so the pages are staged in a temporary folder first,
and on the way links are made to work on a website:

- a link to another page (README, notebook, SCALING.md) stays a link between pages;
- a link to an image is copied beside the page; any other file (a .py, a .csv) or folder
  becomes its URL on GitHub, whose address pyproject.toml names;
- progress bars show their saved text, which says where they ended (buildllm.progress),
  in place of the widget, which would need scripts from the network;
- the Colab badge is drawn locally, MathJax is copied from jupyter-server-mathjax, and the
  theme loads no web fonts: a page fetches nothing from the network when it is read.

The build is strict: a warning from mkdocs (a README linking to a missing file) stops it.

The whole configuration lives here (the navigation is made from the files); `site_hooks.py`
beside it gives every plot the alt text stored in its PNG.
"""

from __future__ import annotations

import argparse
import logging
import posixpath
import re
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from colab_setup import ROOT, repository_url  # noqa: E402

MARKDOWN_PAGES = ["README.md", "Meeting-7/SCALING.md", "Supporting/tools/README.md"]
IMAGES = (".png", ".svg", ".jpg", ".jpeg", ".gif")
LINK = re.compile(r"(!?\[[^\]]*\]\(\s*<?)([^)\s>]+)")  # [text](target or ![alt](target
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE_LINK = re.compile(r"\[!\[[^\]]*\]\([^)]*colab-badge\.svg\)\]\([^)]*\)")
COLAB_BADGE_SVG = """\
<svg xmlns="http://www.w3.org/2000/svg" width="117" height="20" role="img" \
aria-label="Open in Colab"><rect width="117" height="20" rx="3" fill="#444"/>\
<rect x="45" width="72" height="20" rx="3" fill="#f9ab00"/><g font-family="Verdana,sans-serif" \
font-size="11" fill="#fff"><text x="6" y="14">Open in</text><text x="52" y="14" \
fill="#222">Colab</text></g></svg>
"""
# jupyter-server-mathjax ships MathJax 2 with the STIX-Web fonts only: config/local/course.js
# makes them MathJax's web font (it would look for its TeX fonts and fail), and gives the
# blank font it measures with a source that is not about:blank, which Chromium refuses.
MATHJAX_CONFIG = "MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe,local/course"
MATHJAX_FONTS = """\
MathJax.Hub.Config({"HTML-CSS": {
  availableFonts: ["STIX-Web"], preferredFont: "STIX-Web", webFont: "STIX-Web", imageFont: null,
  styles: {"@font-face": {"font-family": "MathJax_Blank", src: "local('MathJax_Blank')"}}}});
MathJax.Ajax.loadComplete("[MathJax]/config/local/course.js");
"""


def meeting_pages(meeting: Path) -> list[str]:
    """One meeting's pages in reading order: the kit, numbered notebooks, then the rest."""
    notebooks = sorted(meeting.glob("[0-9]*.ipynb"))
    extras = [meeting / name for name in ("SCALING.md", "exercises.ipynb", "solutions.ipynb")]
    pages = [meeting / "README.md", *notebooks, *(p for p in extras if p.exists())]
    return [p.relative_to(ROOT).as_posix() for p in pages]


def meetings() -> list[Path]:
    """Meeting-0, Meeting-1, ... in number order (Meeting-10 would come after Meeting-9)."""
    return sorted(ROOT.glob("Meeting-[0-9]*/"), key=lambda p: int(p.name.split("-")[1]))


def all_pages() -> list[str]:
    """Every page of the site, in the navigation's order."""
    pages = [p for m in meetings() for p in meeting_pages(m)]
    return ["README.md", *pages, *(p for p in MARKDOWN_PAGES if p not in pages)]


def heading(page: str) -> str:
    """The page's first line of markdown without its '# ' (its title)."""
    path = ROOT / page
    if path.suffix == ".ipynb":
        text = nbformat.read(path, as_version=4).cells[0].source
    else:
        text = path.read_text("utf-8")
    return text.lstrip().splitlines()[0].lstrip("# ").strip()


def navigation() -> list:
    """Home, Meeting 0 ... 7 in order (each opening on its kit), then the maintainer tools."""
    nav = [{"Home": "README.md"}]
    for meeting in meetings():
        kit, *rest = meeting_pages(meeting)
        entries = [kit]
        for page in rest:
            title = "Solutions" if page.endswith("solutions.ipynb") else heading(page)
            entries.append({title.split(" · ", 1)[-1]: page})
        nav.append({meeting.name.replace("-", " "): entries})
    nav.append({"Maintainer tools": "Supporting/tools/README.md"})
    return nav


def page_url(page: str) -> str:
    """Where mkdocs puts `page` (use_directory_urls is off): README.md is the folder's index."""
    stem = "index" if page.endswith("README.md") else posixpath.splitext(page)[0]
    return posixpath.join(posixpath.dirname(page), posixpath.basename(stem)) + ".html"


def site_link(target: str, source: str, pages: set[str], images: set[str]) -> str:
    """Where a link in the page `source` should point on the site.

    Pages keep their relative link (notebook pages get the .html mkdocs gives them, since
    mkdocs only rewrites links in markdown pages); images are collected to be copied; any
    other file or folder in the repository becomes its URL on GitHub. External links,
    anchors and links to nothing are left alone (mkdocs then refuses a broken one)."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
        return target
    file_part, hash_, anchor = target.partition("#")
    path = posixpath.normpath(posixpath.join(posixpath.dirname(source), file_part))
    if not (ROOT / path).exists():
        return target
    if (ROOT / path).is_dir() and f"{path}/README.md" in pages:
        path = f"{path}/README.md"
    here = posixpath.dirname(source) or "."
    if path in pages:
        if source.endswith(".ipynb"):
            return posixpath.relpath(page_url(path), here) + hash_ + anchor
        return posixpath.relpath(path, here) + hash_ + anchor
    if path.lower().endswith(IMAGES) and (ROOT / path).is_file():
        images.add(path)
        return target
    kind = "tree" if (ROOT / path).is_dir() else "blob"
    return f"{repository_url()}/{kind}/main/{path}{hash_}{anchor}"


def rewrite_links(text: str, source: str, pages: set[str], images: set[str]) -> str:
    """`text` (markdown) with every link made to work on the site; the Colab badge's image
    is the local copy."""
    text = LINK.sub(lambda m: m.group(1) + site_link(m.group(2), source, pages, images), text)
    badge = posixpath.relpath("assets/colab-badge.svg", posixpath.dirname(source) or ".")
    return text.replace(BADGE_IMAGE, badge)


def stage_notebook(page: str, docs: Path, pages: set[str], images: set[str]) -> None:
    """Copy a notebook for the site: links rewritten, a link to its source beside the Colab
    badge, and each progress bar's widget dropped so that its saved final text shows."""
    nb = nbformat.read(ROOT / page, as_version=4)
    source = f"[View the source on GitHub]({repository_url()}/blob/main/{page})"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            cell.source = rewrite_links(cell.source, page, pages, images)
            if i == 0:
                cell.source = BADGE_LINK.sub(lambda m: f"{m.group(0)} {source}", cell.source, 1)
        for output in cell.get("outputs", []):
            output.get("data", {}).pop("application/vnd.jupyter.widget-view+json", None)
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, docs / page)


def stage(docs: Path) -> list[str]:
    """Write every page, image and asset of the site under `docs`; returns the pages."""
    pages = all_pages()
    page_set, images = set(pages), set()
    for page in pages:
        (docs / page).parent.mkdir(parents=True, exist_ok=True)
        if page.endswith(".ipynb"):
            stage_notebook(page, docs, page_set, images)
        else:
            text = (ROOT / page).read_text("utf-8")
            (docs / page).write_text(rewrite_links(text, page, page_set, images), "utf-8")
    for image in images:
        (docs / image).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / image, docs / image)
    (docs / "assets").mkdir(exist_ok=True)
    (docs / "assets" / "colab-badge.svg").write_text(COLAB_BADGE_SVG, "utf-8")
    import jupyter_server_mathjax

    mathjax = Path(jupyter_server_mathjax.__file__).parent / "static"
    shutil.copytree(mathjax, docs / "assets" / "mathjax")
    (docs / "assets" / "mathjax" / "config" / "local").mkdir(exist_ok=True)
    (docs / "assets" / "mathjax" / "config" / "local" / "course.js").write_text(MATHJAX_FONTS)
    return pages


def config(docs: Path, out: Path) -> dict:
    """mkdocs' configuration: material with light and dark palettes and no web fonts,
    offline search, notebooks rendered as saved, one level deep (hence MathJax's path)."""
    owner, name = repository_url().removeprefix("https://github.com/").split("/")
    toggle = [("default", "brightness-7", "Switch to dark mode"),
              ("slate", "brightness-4", "Switch to light mode")]
    return {
        "site_name": "LLMs From Scratch",
        "site_url": f"https://{owner}.github.io/{name}/",
        "docs_dir": str(docs), "site_dir": str(out), "use_directory_urls": False, "strict": True,
        "theme": {"name": "material", "font": False,
                  "features": ["navigation.indexes", "search.highlight"],
                  "palette": [{"scheme": scheme, "toggle": {"icon": f"material/{icon}",
                                                            "name": label}}
                              for scheme, icon, label in toggle]},
        "extra": {"social": [{"icon": "fontawesome/brands/github", "link": repository_url()}]},
        "markdown_extensions": ["tables", "fenced_code", "admonition",
                                {"toc": {"permalink": True}}],
        "plugins": ["search", {"mkdocs-jupyter": {
            "include": ["*.ipynb"], "execute": False, "cache": False, "ignore_h1_titles": True,
            "custom_mathjax_url": f"../assets/mathjax/{MATHJAX_CONFIG}"}}],
        "hooks": [str(Path(__file__).resolve().with_name("site_hooks.py"))],
        "validation": {"links": {"not_found": "warn", "anchors": "info"}},
        "nav": navigation(),
    }


def check_out(out: Path) -> str | None:
    """Why `out` cannot take the site (mkdocs empties it first), or None if it can."""
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file; give a folder for the site"
    if out.is_dir() and any(out.iterdir()) and not (out / "search" / "search_index.json").exists():
        return (f"--out {out} is a folder that holds something other than a site built here; "
                "give a new or empty folder (the site replaces what is in it)")
    return None


def build(out: Path) -> None:
    """Stage the pages and build the site into `out`."""
    from mkdocs.commands.build import build as mkdocs_build
    from mkdocs.config import load_config

    with tempfile.TemporaryDirectory() as staging:
        docs = Path(staging) / "docs"
        stage(docs)
        config_file = Path(staging) / "mkdocs.yml"
        config_file.write_text(yaml.safe_dump(config(docs, out.resolve())), "utf-8")
        mkdocs_build(load_config(str(config_file)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "site",
                        help="folder for the site (default: site/ in the repository)")
    out = parser.parse_args(argv).out
    if problem := check_out(out):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(format="%(levelname)s - %(message)s", level=logging.WARNING)
    # nbconvert counts the plots that have no alt text yet; site_hooks.py then gives them theirs
    logging.getLogger().handlers[0].addFilter(
        lambda record: not record.getMessage().startswith("Alternative text is missing"))
    from mkdocs.exceptions import Abort

    try:
        build(out)
    except Abort as abort:  # strict: a warning above (a broken link, say) stops the build
        print(f"error: the site was not built: {abort}", file=sys.stderr)
        return 1
    print(f"The site is in {out}: open {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
