"""The course as a website (Supporting/tools/build_site.py), read in a real browser.

The site is built once for this file, served on a free port, and opened in headless
Chromium (the chat page test's browser, with the same requirements). Every page must load
without console errors and fetch nothing from another origin; every image must have a
size; every link within the site must land on a file it holds; the search box must find
"KV cache". One screenshot per meeting kit goes to $BUILDLLM_ARTIFACTS (default: a pytest
temporary folder), which CI keeps.
"""

import base64
import functools
import http.server
import io
import os
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import build_site
import pytest
from site_hooks import add_alt_text
from test_chat_page import browser  # noqa: F401 - the fixture: headless Chromium

REPO = build_site.repository_url()
PAGES = set(build_site.all_pages())

# -- link rewriting and the alt text hook, without a browser ----------------------------


@pytest.mark.parametrize("target, source, expected", [
    ("../README.md#two-commands", "Meeting-0/README.md", "../README.md#two-commands"),
    ("02_data_loader.ipynb", "Meeting-1/README.md", "02_data_loader.ipynb"),
    ("02_data_loader.ipynb#setup", "Meeting-1/01_text_to_tokens.ipynb",
     "02_data_loader.html#setup"),
    ("README.md", "Meeting-1/exercises.ipynb", "index.html"),
    ("../Meeting-2/", "Meeting-1/README.md", "../Meeting-2/README.md"),
    ("../Meeting-7/SCALING.md", "Meeting-7/01_capstone.ipynb", "SCALING.html"),
    ("../Supporting/tools/run_notebooks.py", "Meeting-0/README.md",
     f"{REPO}/blob/main/Supporting/tools/run_notebooks.py"),
    ("Supporting/buildllm", "README.md", f"{REPO}/tree/main/Supporting/buildllm"),
    ("../requirements.txt", "Meeting-0/01_environment_check.ipynb",
     f"{REPO}/blob/main/requirements.txt"),
    ("https://example.com/a.py", "README.md", "https://example.com/a.py"),
    ("#section", "README.md", "#section"),
    ("missing.py", "Meeting-1/README.md", "missing.py"),  # left for mkdocs to refuse
])
def test_links_point_at_pages_or_at_github(target, source, expected):
    images = set()
    assert build_site.site_link(target, source, PAGES, images) == expected
    assert images == set()


def test_an_image_is_copied_beside_its_page_and_keeps_its_link():
    images = set()
    text = "![loss](benchmark_pretrain.png) and [code](../Supporting/buildllm/serve.py)"
    rewritten = build_site.rewrite_links(text, "Meeting-5/README.md", PAGES, images)
    assert rewritten == ("![loss](benchmark_pretrain.png) and "
                         f"[code]({REPO}/blob/main/Supporting/buildllm/serve.py)")
    assert images == {"Meeting-5/benchmark_pretrain.png"}


def test_the_colab_badge_is_drawn_from_the_site_itself():
    badge = f"[![Open In Colab]({build_site.BADGE_IMAGE})](https://colab.research.google.com/x)"
    rewritten = build_site.rewrite_links(badge, "Meeting-3/01_self_attention.ipynb", PAGES, set())
    assert rewritten == "[![Open In Colab](../assets/colab-badge.svg)](https://colab.research.google.com/x)"


def png_base64(description: str | None) -> str:
    """A small matplotlib figure as base64 PNG, with `description` stored in it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [1, 0])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Description": description} if description else {})
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def test_a_plot_gets_the_description_stored_in_its_png_as_alt_text():
    from PIL import Image

    data = png_base64('A causal mask: "later" tokens are hidden & greyed')
    assert Image.open(io.BytesIO(base64.b64decode(data))).info["Description"].startswith("A causal")
    described = f'<img alt="No description has been provided" src="data:image/png;base64,{data}"/>'
    bare = f'<img src="data:image/png;base64,{data}">'
    page = add_alt_text(f"<p>{described}</p><p>{bare}</p>")
    alt = 'alt="A causal mask: &quot;later&quot; tokens are hidden &amp; greyed"'
    assert page.count(alt) == 2 and "No description" not in page


def test_a_plot_without_a_description_keeps_its_tag():
    tag = f'<img alt="None given" src="data:image/png;base64,{png_base64(None)}"/>'
    assert add_alt_text(tag) == tag


# -- bad input: one line, nothing touched ---------------------------------------------


def test_out_must_not_be_a_file(tmp_path, capsys):
    out = tmp_path / "site.txt"
    out.write_text("keep me")
    assert build_site.main(["--out", str(out)]) == 2
    assert capsys.readouterr().err == f"error: --out {out} is a file; give a folder for the site\n"
    assert out.read_text() == "keep me"


def test_out_must_not_be_a_folder_of_other_things(tmp_path, capsys):
    (tmp_path / "notes.md").write_text("keep me")
    assert build_site.main(["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {tmp_path} is a folder that holds something other")
    assert err.count("\n") == 1
    assert [p.name for p in tmp_path.iterdir()] == ["notes.md"]
    assert (tmp_path / "notes.md").read_text() == "keep me"


# -- the built site in Chromium -------------------------------------------------------


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # the test reports what fails; no log line per request
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site, built once, served on a free port: yields (folder, base URL)."""
    out = tmp_path_factory.mktemp("site")
    build_site.build(out)
    handler = functools.partial(QuietHandler, directory=str(out))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield out, f"http://127.0.0.1:{server.server_address[1]}/"
        server.shutdown()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    folder = os.environ.get("BUILDLLM_ARTIFACTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_for(out: Path, base: str, href: str) -> Path | None:
    """The file of the site that a same-origin `href` opens, or None if it opens none."""
    path = unquote(urlsplit(href).path).removeprefix(urlsplit(base).path)
    target = out / path
    if target.is_dir():
        target = target / "index.html"
    return target if target.is_file() else None


PAGE_REPORT = """
return {
  images: Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))
            .map(i => i.currentSrc.slice(0, 80) || i.outerHTML.slice(0, 80)),
  foreign: performance.getEntriesByType('resource').map(e => e.name)
            .filter(n => !n.startsWith(location.origin)),
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href)
            .filter(h => h.startsWith(location.origin)),
  text: document.body.innerText,
}"""


def test_every_page_loads_offline_with_its_images_and_links(browser, site):  # noqa: F811
    out, base = site
    # 404.html is served at whatever address was not found, so it links from the site's root
    pages = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.html")
                   if not p.relative_to(out).as_posix().startswith(("assets/", "404.html")))
    assert {"index.html", "Meeting-4/03_generation_kv_cache.html"} <= set(pages)
    problems, links = [], {}
    for page in pages:
        browser.get(base + page)
        report = browser.execute_script(PAGE_REPORT)
        errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        for what, found in (("console errors", errors), ("broken images", report["images"]),
                            ("fetched from elsewhere", report["foreign"])):
            if found:
                problems.append(f"{page}: {what}: {found}")
        if " 0%|" in report["text"]:
            problems.append(f"{page}: a progress bar shows 0%")
        links.update(dict.fromkeys(report["links"], page))
    missing = [f"{page} -> {href}" for href, page in links.items() if not file_for(out, base, href)]
    assert problems == [] and missing == []
    assert len(links) > 100, "the site should link its pages to each other"


def test_every_notebook_page_links_to_colab_and_its_source(site):
    out, _ = site
    for page in sorted(p for p in PAGES if p.endswith(".ipynb")):
        html = (out / build_site.page_url(page)).read_text("utf-8")
        assert f'href="{REPO}/blob/main/{page}"' in html, page
        assert 'href="https://colab.research.google.com/github/' in html, page


def test_search_finds_kv_cache(browser, site):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    out, base = site
    browser.get(base + "index.html")
    browser.find_element(By.CSS_SELECTOR, "label[for='__search']").click()
    browser.find_element(By.CSS_SELECTOR, "input.md-search__input").send_keys("KV cache")
    results = WebDriverWait(browser, 30).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, ".md-search-result__item a"))
    hrefs = [a.get_attribute("href") for a in results]
    assert any("Meeting-4/03_generation_kv_cache.html" in h for h in hrefs), hrefs
    assert all(file_for(out, base, h) for h in hrefs)


def test_a_screenshot_of_each_meeting(browser, site, artifacts):  # noqa: F811
    out, base = site
    browser.set_window_size(1280, 900)
    meetings = [m.name for m in build_site.meetings()]
    for meeting in meetings:
        browser.get(f"{base}{meeting}/index.html")
        assert browser.title.startswith(meeting.replace("-", " ")), browser.title
        assert browser.save_screenshot(str(artifacts / f"site-{meeting}.png"))
    saved = sorted(p.name for p in artifacts.glob("site-Meeting-*.png"))
    assert saved == sorted(f"site-{m}.png" for m in meetings)


def test_every_drawn_figure_is_on_its_notebooks_page_with_its_alt_text(site):
    """The figures of Supporting/figures reach the site with the words a screen reader says."""
    import html

    from draw_figures import where_shown
    from figures import all_figures

    out, _ = site
    figures = all_figures()
    for name, notebooks in where_shown().items():
        alt = f'alt="{html.escape(figures[name].alt, quote=True)}"'
        for notebook in notebooks:
            assert alt in (out / build_site.page_url(notebook)).read_text("utf-8"), name
