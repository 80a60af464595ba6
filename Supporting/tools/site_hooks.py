"""mkdocs hook for the course site (build_site.py): every plot gets the alt text it carries.

A notebook's figure is a PNG inlined as `<img src="data:image/png;base64,...">`, and
nbconvert gives it no useful alt text. The course writes each figure's description into
the PNG itself, as a tEXt chunk named Description (matplotlib's
`savefig(..., metadata={"Description": ...})`); this hook copies it into the alt attribute,
so that a screen reader says what the figure shows.
"""

from __future__ import annotations

import base64
import html
import io
import re

from PIL import Image

PNG_IMG = re.compile(r'<img\b[^>]*\bsrc="data:image/png;base64,([A-Za-z0-9+/=\s]+)"[^>]*>')
ALT = re.compile(r'\salt="[^"]*"')


def png_description(data: str) -> str | None:
    """The Description text stored in a base64 PNG, or None if it has none."""
    try:
        with Image.open(io.BytesIO(base64.b64decode(data))) as image:
            return image.info.get("Description")
    except (ValueError, OSError):  # not a readable PNG: leave the tag as it is
        return None


def with_alt(tag: str, alt: str) -> str:
    """`tag` (one <img ...>) with its alt attribute set to `alt`."""
    attribute = f' alt="{html.escape(alt, quote=True)}"'
    if ALT.search(tag):
        return ALT.sub(lambda _: attribute, tag, count=1)
    return tag.replace("<img", "<img" + attribute, 1)


def add_alt_text(content: str) -> str:
    """Every inlined PNG in `content` (a page's HTML) with its Description as alt text."""
    def replace(match: re.Match) -> str:
        alt = png_description(match.group(1))
        return match.group(0) if alt is None else with_alt(match.group(0), alt)

    return PNG_IMG.sub(replace, content)


def on_page_content(html: str, page, config, files) -> str:  # noqa: ARG001 - mkdocs' signature
    return add_alt_text(html)
