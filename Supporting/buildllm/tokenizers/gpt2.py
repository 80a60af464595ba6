"""GPT-2's own tokenizer, read from OpenAI's two files into a `BPETokenizer` (Meeting 2).

`encoder.json` maps each token, spelled in GPT-2's printable byte alphabet, to its id;
`vocab.bpe` lists the 50,000 merges in the order they were learned, one "left right" per
line after a "#version" header. Undo the spelling and they are exactly the plain data a
`BPETokenizer` is made of, so our encoder gives the same ids as tiktoken's "gpt2".
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .bpe import BPETokenizer
from .protocol import ENDOFTEXT

__all__ = ["gpt2_tokenizer", "load_gpt2_files"]


def load_gpt2_files(encoder_json: str | os.PathLike, vocab_bpe: str | os.PathLike) -> BPETokenizer:
    """Build GPT-2's tokenizer from its encoder.json and vocab.bpe, checking both."""
    try:
        vocab = json.loads(Path(encoder_json).read_text("utf-8"))
    except (ValueError, RecursionError) as err:  # RecursionError: nested thousands deep
        raise ValueError(f"{encoder_json} is not valid JSON: {err}") from None
    if not isinstance(vocab, dict):
        raise ValueError(f"{encoder_json} must map each token to its id")
    lines = Path(vocab_bpe).read_text("utf-8").split("\n")
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    merges = [line for line in lines if line]  # the file ends with a newline
    try:
        return BPETokenizer.from_printable(vocab, merges, [ENDOFTEXT])
    except ValueError as err:
        raise ValueError(f"{encoder_json} and {vocab_bpe} do not make a tokenizer: {err}") from None


def gpt2_tokenizer() -> BPETokenizer:
    """GPT-2's tokenizer from the course's verified copies of its files (works offline).

    >>> gpt2_tokenizer().encode("Hello, world")
    [15496, 11, 995]
    """
    from ..data import fetch

    return load_gpt2_files(fetch("encoder.json"), fetch("vocab.bpe"))
