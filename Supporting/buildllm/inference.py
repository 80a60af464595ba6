"""Leaner, faster inference (Meeting 7): int8 weights, and prompts of many lengths in one batch.

Weight-only int8 quantization. Each row of a weight matrix (one output feature) is stored as
127 signed steps of its own size, `scale = max|row| / 127`, so a weight costs 1 byte instead
of 4, plus one float per row. The activations stay in floating point: each forward turns the
int8 numbers back into floats, so the arithmetic is the float model's with slightly rounded
weights. `quantize_int8` does it to every linear layer of a model, `model_bytes` measures what
that saves.

    >>> model = quantize_int8(course_model())       # in place: copy.deepcopy first to keep both
    >>> model_bytes(model) / 1e6                    # about 1/4 of the float32 model's

Batched generation. Decoding one token reads every weight of the model for a few multiply-adds
each, so asking for the next token of 8 prompts costs little more than for one. Prompts of
different lengths are padded on the left, so that every row's next token lands in the same
column, and an attention mask keeps the padding out of sight (`GPTModel.forward`'s
`attention_mask`).

    >>> generate_batch(model, [enc.encode("ROMEO:"), enc.encode("To be, or not")], 20)
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

import torch
import torch.nn.functional as F
from torch import nn

from .generation import generate

__all__ = ["Int8Embedding", "Int8Linear", "dequantize_rows", "generate_batch", "left_pad",
           "model_bytes", "pad_ids", "quantize_int8", "quantize_rows"]


# -- int8 weights ------------------------------------------------------------------------

def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmax int8 quantization with one scale per row: (int8 weight, scale per row).

    scale = max|row| / 127, and each weight becomes round(w / scale), an integer in
    [-127, 127]. Rounding moves each weight by at most scale / 2. The scale keeps the weight's
    float dtype; the int8 tensor keeps its memory layout (GPTModel stores block weights
    transposed, see `model._stored_transposed`).

    >>> q, scale = quantize_rows(torch.tensor([[0.5, -1.0, 0.25]]))
    >>> q, scale * 127
    (tensor([[  64, -127,   32]], dtype=torch.int8), tensor([1.]))
    """
    if weight.ndim != 2 or not weight.is_floating_point():
        raise ValueError(f"expected a 2-D float weight (rows, columns), got shape "
                         f"{tuple(weight.shape)} and dtype {weight.dtype}")
    w = weight.detach()
    # A row of zeros would get scale 0 and 0/0 = NaN; any positive scale stores it exactly.
    scale = (w.abs().amax(dim=1).float() / 127).clamp(min=1e-30).to(w.dtype)
    q = torch.round(w.float() / scale.float()[:, None]).clamp(-127, 127)
    stored = torch.empty_strided(w.shape, w.stride(), dtype=torch.int8, device=w.device)
    return stored.copy_(q), scale


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The float weight that int8 `q` and its row scales stand for: q · scale, row by row."""
    return q.to(scale.dtype) * scale[:, None]


class _Int8Rows(nn.Module):
    """An int8 matrix and one float scale per row: what Int8Linear and Int8Embedding hold."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, shape: str):
        super().__init__()
        if weight.dtype != torch.int8 or scale.shape != weight.shape[:1]:
            raise ValueError(f"expected an int8 {shape} and one scale per row, got "
                             f"{weight.dtype} {tuple(weight.shape)} and {tuple(scale.shape)}")
        self.register_buffer("weight", weight)
        self.register_buffer("scale", scale)


class Int8Linear(_Int8Rows):
    """A linear layer whose weight is stored in int8, with one float scale per output row.

    The forward uses x·(q·s)ᵀ = (x·qᵀ)·s: convert q to floats, multiply, then scale each
    output feature. That is the dequantized weight's result with out multiplications instead
    of out·in. In plain PyTorch the conversion writes a float copy of the weight at every
    call, so this saves memory, not time; a fused kernel (bitsandbytes, torchao, a GPU) reads
    the int8 numbers and converts them on the way into the multiply.

    >>> layer = Int8Linear.from_linear(nn.Linear(64, 32))
    >>> layer.weight.dtype, layer.scale.shape
    (torch.int8, torch.Size([32]))
    """

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor,
                 bias: torch.Tensor | None = None):
        super().__init__(weight, scale, "(out, in) weight")
        self.out_features, self.in_features = weight.shape
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(),
                                                           requires_grad=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        """Quantize `linear`'s weight row by row (see `quantize_rows`); the bias stays float."""
        return cls(*quantize_rows(linear.weight), linear.bias)

    def dequantized(self) -> torch.Tensor:
        """The float (out, in) weight this layer computes with."""
        return dequantize_rows(self.weight, self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight.to(x.dtype)) * self.scale.to(x.dtype)  # (…, out)
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None}"


class Int8Embedding(_Int8Rows):
    """An embedding table stored in int8 with one scale per row (per token).

    Made by `quantize_int8` for an embedding that shares its matrix with an output layer
    (GPT-2's tied embeddings). The output layer's rows are the vocabulary's tokens, so its
    scales are exactly per-token scales, and this module reads the very same int8 tensor and
    scales: the tie survives, stored once. A lookup dequantizes only the rows it picks.
    """

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor):
        super().__init__(weight, scale, "(tokens, dim) table")
        self.num_embeddings, self.embedding_dim = weight.shape

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(ids, self.weight)  # (…, dim) int8
        return rows.to(self.scale.dtype) * self.scale[ids].unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


@torch.no_grad()
def quantize_int8(model: nn.Module) -> nn.Module:
    """Replace every nn.Linear in `model` by an Int8Linear; changes `model` in place, returns it.

    That includes GPTModel's output layer. With tied embeddings (GPTModel's default) the
    output layer and the token embedding are one matrix, the largest in a small model, so the
    embedding becomes an `Int8Embedding` over the same int8 tensor and scales: one int8 copy
    serves both, as one float copy did. An embedding that is not tied to a linear layer stays
    in float, like the position embedding, the LayerNorms and the biases: lookups and
    elementwise work, a small share of the weights.

    >>> small = quantize_int8(copy.deepcopy(model))
    """
    from .lora import LoRALinear

    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError("this model has LoRA layers: merge them with "
                         "buildllm.lora.merge_lora(model) before quantizing")
    modules = list(model.named_modules())
    quantized = {}  # each nn.Linear's weight -> its Int8Linear (a tensor hashes by identity)
    for name, m in modules:
        if isinstance(m, nn.Linear):
            quantized[m.weight] = Int8Linear.from_linear(m)
            model.set_submodule(name, quantized[m.weight])
    for name, m in modules:
        if isinstance(m, nn.Embedding) and (tied := quantized.get(m.weight)) is not None:
            model.set_submodule(name, Int8Embedding(tied.weight, tied.scale))
    return model


def model_bytes(model: nn.Module) -> int:
    """Bytes of memory held by `model`'s parameters and buffers, each storage counted once,
    so shared weights (tied embeddings, an int8 matrix used by two modules) count once.

    >>> model_bytes(nn.Linear(10, 10))                   # 110 float32 numbers
    440
    """
    storages = {(t.device, t.untyped_storage().data_ptr()): t.untyped_storage().nbytes()
                for t in [*model.parameters(), *model.buffers()]}
    return sum(storages.values())


# -- batched generation ------------------------------------------------------------------

def _check_prompts(prompts: Sequence[Sequence[int]], vocab_size: int) -> None:
    if isinstance(prompts, torch.Tensor) or not isinstance(prompts, Sequence) or not prompts:
        raise ValueError("prompts must be a non-empty list of token-id lists, e.g. "
                         "[enc.encode('ROMEO:'), enc.encode('JULIET:')]")
    for i, prompt in enumerate(prompts):
        if isinstance(prompt, (str, int)) or not isinstance(prompt, Sequence):
            raise ValueError(f"prompt {i} is {type(prompt).__name__}, not a list of token ids")
        if len(prompt) == 0:
            raise ValueError(f"prompt {i} is empty: every prompt needs at least one token")
        if bad := [t for t in prompt if isinstance(t, bool) or not isinstance(t, Integral)
                   or not 0 <= t < vocab_size]:
            raise ValueError(f"prompt {i} holds {bad[0]!r}, not a token id in [0, {vocab_size})")


def pad_ids(seqs: Sequence[Sequence[int]], pad_id: int = 0, device=None, *, left: bool = False,
            width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id lists padded with `pad_id` on the right, or the `left`, to `width` (default: the
    longest): (ids, mask, True at real tokens), both (batch, width)."""
    width = max(len(s) for s in seqs) if width is None else width
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros(len(seqs), width, dtype=torch.bool, device=device)
    for row, seq in enumerate(seqs):
        real = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[row, real] = torch.tensor([int(t) for t in seq], dtype=torch.long)
        mask[row, real] = True
    return ids, mask


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int = 0,
             device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """`pad_ids` on the left, so that every row's next token lands in the same column.

    >>> left_pad([[5, 6, 7], [8]], pad_id=0)
    (tensor([[5, 6, 7],
            [0, 0, 8]]), tensor([[ True,  True,  True],
            [False, False,  True]]))
    """
    return pad_ids(prompts, pad_id, device, left=True)


def generate_batch(model: nn.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int, *,
                   eos_id: int | None = None, pad_id: int = 0, temperature: float = 0.0,
                   top_k: int | None = None, top_p: float | None = None,
                   seed: int | Sequence[int] | None = None) -> list[list[int]]:
    """The new tokens for each prompt (lists of ids of any lengths), generated in one batch.

    Prompts are padded on the left with `pad_id` (any id: padding is masked, never seen) and
    decoded together by `generate` with the padding mask. Each result is what `generate`
    gives for that prompt alone: the greedy tokens exactly (up to float rounding deciding a
    near tie), and with a temperature above 0 and a `seed`, the same sampled tokens too, since
    each row draws from its own generator seeded with `seed` (or `seed[i]`, one per prompt);
    without a seed, from torch's global generator. A result stops after `eos_id`, which it
    then includes. The longest prompt plus `max_new_tokens` must fit in the context.

    >>> generate_batch(model, [[464, 3290], [40]], 5)          # two lists of 5 new ids
    """
    context, vocab = model.cfg.context_length, model.cfg.vocab_size
    _check_prompts(prompts, vocab)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
            or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
    longest = max(len(p) for p in prompts)
    if longest + max_new_tokens > context:
        raise ValueError(f"the longest prompt ({longest} tokens) + {max_new_tokens} new tokens "
                         f"exceed the context length {context}; shorten it or ask for fewer")
    if not 0 <= pad_id < vocab:
        raise ValueError(f"pad_id must be a token id in [0, {vocab}), got {pad_id}")
    if isinstance(seed, int):
        seed = [seed] * len(prompts)  # one generator per row, so its batch changes nothing
    if seed is not None and len(seed) != len(prompts):
        raise ValueError(f"{len(seed)} seeds for {len(prompts)} prompts: give one per prompt")
    ids, mask = left_pad(prompts, pad_id, next(model.parameters()).device)
    out = generate(model, ids, max_new_tokens, eos_id=eos_id, temperature=temperature,
                   top_k=top_k, top_p=top_p, seed=seed, attention_mask=mask)
    results = out[:, ids.shape[1]:].tolist()
    if eos_id is not None:
        results = [row[: row.index(eos_id) + 1] if eos_id in row else row for row in results]
    return results
