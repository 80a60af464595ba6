"""See where a tokenizer cuts a text: each token on its own background colour.

Works with any tokenizer that has tiktoken's `encode(text, allowed_special=...)` and
`decode_single_token_bytes(id)`: tiktoken's encodings and our `BPETokenizer` both do.
"""

from __future__ import annotations

import html

__all__ = ["show_tokens"]

COLOURS = ["#fde2a7", "#b9e3f9", "#c8f0c0", "#f6c6de"]


def show_tokens(text: str, tokenizer):
    """Return `text` as HTML with alternating colours per token; hover a span for its ids.

    A character whose bytes are split over several tokens (an emoji, say) is shown once,
    in one span holding all of those tokens' ids, so every span is readable text.
    """
    from IPython.display import HTML

    ids = tokenizer.encode(text, allowed_special="all")
    spans, pending, group = [], b"", []
    for i in ids:
        pending += tokenizer.decode_single_token_bytes(i)
        group.append(i)
        try:
            piece = pending.decode("utf-8")
        except UnicodeDecodeError:
            continue  # part of a character: wait for the token that completes it
        colour = COLOURS[len(spans) % len(COLOURS)]
        shown = html.escape(piece).replace("\n", "↵<br>")
        spans.append(f'<span title="{group}" style="background:{colour}">{shown}</span>')
        pending, group = b"", []
    if group:  # the text ended inside a character (only possible for odd tokenizers)
        shown = html.escape(pending.decode("utf-8", errors="replace"))
        spans.append(f'<span title="{group}">{shown}</span>')
    style = "white-space:pre-wrap;font-family:monospace;line-height:1.8"
    return HTML(f'<div style="{style}">{"".join(spans)}</div>'
                f"<small>{len(text)} characters, {len(ids)} tokens</small>")
