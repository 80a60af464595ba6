"""Stand-in models: a tiny random GPT, and a scripted one for tests that must know exactly
what a model will write."""

from dataclasses import replace

import torch
from torch import nn

from buildllm.model import GPTConfig, GPTModel

TINY = GPTConfig(vocab_size=97, context_length=32, emb_dim=32, n_heads=4, n_layers=2)
READS_GPT2 = {"vocab_size": 50257, "context_length": 128, "n_heads": 2}  # TINY's changes


def tiny_gpt(seed: int = 0, **changes) -> GPTModel:
    """A random GPT of TINY's size (with `changes`), in eval mode: nonsense, but the same
    nonsense for the same seed. `tiny_gpt(**READS_GPT2)` reads GPT-2's tokens."""
    torch.manual_seed(seed)
    return GPTModel(replace(TINY, **changes)).eval()


class Scripted(nn.Module):
    """A stand-in GPT that writes the tokens of `script`, one per step, whatever the prompt.

    It speaks GPTModel's KV-cache protocol, so `generate`, `stream` and `instruct.respond` run
    it like any model, and a test chooses exactly what it "writes". `prompt_length` is the
    length of the first input it saw; `calls` counts its forward passes.
    """

    def __init__(self, script: list[int], vocab_size: int = 50257, context_length: int = 1024):
        super().__init__()
        self.cfg = GPTConfig(vocab_size=vocab_size, context_length=context_length, emb_dim=8,
                             n_heads=1, n_layers=1)
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the cache a device and dtype
        self.script, self.calls = script, 0

    def forward(self, ids, cache=None, **_):  # (a padding mask, if given, changes nothing here)
        start = 0 if cache is None else cache.length
        if start == 0:
            self.prompt_length = ids.shape[1]
        if cache is not None:
            cache.length += ids.shape[1]
        self.calls += 1
        logits = torch.zeros(ids.shape[0], ids.shape[1], self.cfg.vocab_size)
        logits[:, -1, self.script[start + ids.shape[1] - self.prompt_length]] = 1.0
        return logits
