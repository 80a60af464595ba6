"""Retrieval-augmented generation (Meeting 7, bonus): find the passage, then put it in the prompt.

A small model knows little, and nothing that was not in its training text. Retrieval hands it
the knowledge at answer time instead: split documents into passages, turn each into a vector,
find the passages whose vectors point the same way as the question's (cosine similarity), and
paste the best ones into the prompt as the "### Input:" of the Alpaca layout (buildllm.instruct).

    passages = split_passages(text, max_words=60)
    index = VectorIndex(passages, TfidfEmbedder(passages))   # or GPTEmbedder(model, enc)
    hits = index.search("Who gave Jack the sketch?", k=2)     # [Hit(id, score, text), ...]
    entry = rag_entry("Who gave Jack the sketch?", hits, enc, context_length=256)
    respond(model, enc, entry)                                # buildllm.instruct

Two embedders, to compare: TF-IDF counts shared words, weighting rare ones up (Sparck Jones,
1972); GPTEmbedder averages a GPT's last hidden states. The search is one matrix product of
unit vectors, written out in `cosine_top_k`; tests/test_retrieval.py checks it against
PyTorch's cosine_similarity and against FAISS (Johnson et al., 2017).
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .inference import pad_ids
from .instruct import prompt_ids
from .metrics import words
from .utils import eval_mode

__all__ = ["GPTEmbedder", "Hit", "TfidfEmbedder", "VectorIndex", "cosine_top_k", "faiss_top_k",
           "hidden_states", "rag_entry", "split_passages", "words"]

Embedder = Callable[[Sequence[str]], torch.Tensor]  # n texts in, (n, dim) vectors out


# -- passages ------------------------------------------------------------------------

def split_passages(text: str, max_words: int = 60) -> list[str]:
    """Cut `text` into passages of at most `max_words` words, along paragraphs and sentences.

    Consecutive paragraphs (separated by blank lines) are packed into one passage while it
    stays within `max_words`. A longer paragraph is cut between sentences, and packed the same
    way; only a single sentence longer than `max_words` is cut between words, into equal parts.
    Retrieval returns whole passages, so their size is a trade: short ones are precise, long
    ones keep more context around the answer, and fewer of them fit in a prompt.

    >>> split_passages("One two three.\\n\\nFour five.\\n\\nSix seven. Eight nine.", max_words=5)
    ['One two three.\\n\\nFour five.', 'Six seven. Eight nine.']
    """  # noqa: E501
    if max_words < 1:
        raise ValueError(f"max_words must be at least 1, got {max_words}")
    pieces = []
    for paragraph in re.split(r"\n\s*\n", text.strip()):
        if len(paragraph.split()) <= max_words:
            pieces.append(" ".join(paragraph.split()))
            continue
        sentences = []
        for sentence in re.split(r"(?<=[.!?])\s+", paragraph):
            tokens = sentence.split()
            parts = -(-len(tokens) // max_words)  # ceil: as few parts as fit, of equal size
            sentences += [" ".join(tokens[i * len(tokens) // parts:(i + 1) * len(tokens) // parts])
                          for i in range(parts)]
        pieces += _pack(sentences, max_words, " ")
    return _pack(pieces, max_words, "\n\n")


def _pack(pieces: list[str], max_words: int, sep: str) -> list[str]:
    """Join consecutive pieces with `sep` into groups of at most `max_words` words, in order."""
    groups: list[list[str]] = []
    length = 0
    for piece in pieces:
        n = len(piece.split())
        if n == 0:
            continue
        if groups and length + n <= max_words:
            groups[-1].append(piece)
            length += n
        else:
            groups.append([piece])
            length = n
    return [sep.join(group) for group in groups]


# -- embedder 1: TF-IDF -------------------------------------------------------------------

class TfidfEmbedder:
    """Term frequency × inverse document frequency, one dimension per word of the collection.

    A text's vector counts each vocabulary word in it (`buildllm.metrics.words`), weighted by
    idf = ln((1 + N) / (1 + df)) + 1, where N is the number of passages and df the number that
    contain the word: a word in every passage ("the") weighs about 1, a name found in one passage
    weighs most. (These are scikit-learn's TfidfVectorizer defaults, smooth_idf and no sublinear
    tf.) Words that are not in the collection are ignored, so a question is compared only on the
    words it shares with the passages. The vectors are dense: fine for thousands of passages,
    while a large collection would store them sparse.

    >>> embed = TfidfEmbedder(["the cat sat", "the dog ran"])
    >>> embed(["a cat"]).shape
    torch.Size([1, 5])
    """

    def __init__(self, corpus: Sequence[str]):
        if isinstance(corpus, str) or len(corpus) == 0:
            raise ValueError("TfidfEmbedder needs a non-empty list of passages to learn its "
                             "vocabulary from")
        df = Counter(w for text in corpus for w in set(words(text)))
        if not df:
            raise ValueError("the passages contain no words: nothing to build a vocabulary from")
        self.vocab = {w: i for i, w in enumerate(sorted(df))}
        n = len(corpus)
        self.idf = torch.tensor([math.log((1 + n) / (1 + df[w])) + 1 for w in self.vocab])

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """(len(texts), vocabulary size): each text's word counts times the words' idf."""
        if isinstance(texts, str):
            raise ValueError("pass a list of texts, e.g. embed([query]), not a single string")
        counts = torch.zeros(len(texts), len(self.vocab))
        for row, text in enumerate(texts):
            for w, c in Counter(words(text)).items():
                if w in self.vocab:
                    counts[row, self.vocab[w]] = c
        return counts * self.idf


# -- embedder 2: a GPT's hidden states -----------------------------------------------------

@torch.no_grad()
def hidden_states(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """A GPTModel's final-LayerNorm outputs (batch, tokens, emb_dim): the vectors its output
    layer turns into logits, whose 50,257 per token (most of a small GPT's work) are skipped."""
    return model(ids, hidden=True)


class GPTEmbedder:
    """A text's vector: the mean of a GPT's final hidden states over the text's tokens.

    Texts are encoded with `enc` and batched by right-padding. Causal attention makes that
    exact: a token only attends to tokens before it, so the padding after a text changes none
    of its hidden states, and the mean is taken over the real tokens only.

    A GPT is trained to predict the next token, not to place similar texts close together, so
    expect these vectors to retrieve worse than TF-IDF on a small model; sentence-embedding
    models (e.g. Reimers and Gurevych, 2019) are transformers trained for exactly this.

    Hidden states share a large common direction, so the cosine of any two texts is close to 1.
    After `fit(passages)`, the passages' mean vector is subtracted from every vector, which
    removes that direction and spreads the cosines out (ranks by similarity change too).
    """

    def __init__(self, model: nn.Module, enc, batch_size: int = 16):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model, self.enc, self.batch_size = model, enc, batch_size
        self.offset: torch.Tensor | None = None  # set by fit: subtracted from every vector

    def fit(self, corpus: Sequence[str]) -> GPTEmbedder:
        """Center on `corpus`: from now on, its mean vector is subtracted from every vector."""
        self.offset = None
        self.offset = self(corpus).mean(dim=0)
        return self

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """(len(texts), emb_dim): mean-pooled hidden states, on the CPU, float32."""
        if isinstance(texts, str):
            raise ValueError("pass a list of texts, e.g. embed([query]), not a single string")
        limit = self.model.cfg.context_length
        encoded = [self.enc.encode(t) for t in texts]
        if empty := [i for i, ids in enumerate(encoded) if not ids]:
            raise ValueError(f"texts {empty} have no tokens; a text needs at least one")
        if long := sum(len(ids) > limit for ids in encoded):
            warnings.warn(f"{long} text(s) are longer than the context ({limit} tokens); only "
                          "their first tokens are embedded: split them into shorter passages",
                          stacklevel=2)
        encoded = [ids[:limit] for ids in encoded]
        with eval_mode(self.model):  # no dropout
            out = [self._mean_states(encoded[start:start + self.batch_size])
                   for start in range(0, len(encoded), self.batch_size)]
        vectors = torch.cat(out) if out else torch.zeros(0, self.model.cfg.emb_dim)
        return vectors if self.offset is None else vectors - self.offset

    def _mean_states(self, batch: list[list[int]]) -> torch.Tensor:
        """(len(batch), emb_dim): each sequence's hidden states averaged over its own tokens."""
        ids, real = pad_ids(batch)  # on the right; the pad id does not matter
        mask = real[..., None].float()  # (B, T, 1)
        device = next(self.model.parameters()).device
        states = hidden_states(self.model, ids.to(device)).float().cpu()  # (B, T, emb_dim)
        return (states * mask).sum(dim=1) / mask.sum(dim=1)


# -- the index ------------------------------------------------------------------------------

def _check_top_k(queries: torch.Tensor, keys: torch.Tensor, k: int) -> None:
    if queries.ndim != 2 or keys.ndim != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(f"queries and keys must be (n, d) with the same d, got "
                         f"{tuple(queries.shape)} and {tuple(keys.shape)}")
    if not 1 <= k <= keys.shape[0]:
        raise ValueError(f"k must be between 1 and the number of keys ({keys.shape[0]}), got {k}")


def cosine_top_k(queries: torch.Tensor, keys: torch.Tensor, k: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The `k` keys most similar to each query by cosine: (scores, ids), each (queries, k).

    cos(q, x) = q·x / (|q| |x|), so after scaling every vector to length 1 all the cosines are
    one matrix product, (queries, d) @ (d, keys), and topk picks the best of each row, best
    first. A zero vector has no direction; it gets cosine 0 with everything.

    >>> scores, ids = cosine_top_k(torch.tensor([[1.0, 0.0]]), torch.eye(2), k=1)
    >>> ids.tolist(), scores.tolist()
    ([[0]], [[1.0]])
    """
    _check_top_k(queries, keys, k)
    similarity = F.normalize(queries, dim=1) @ F.normalize(keys, dim=1).T  # (queries, keys)
    return similarity.topk(k, dim=1)


_FAISS_SEARCH = """
import sys
import faiss
import numpy as np
folder, k = sys.argv[1], int(sys.argv[2])
keys = np.load(folder + "/keys.npy")
index = faiss.IndexFlatIP(keys.shape[1])  # exact search by inner product, no approximation
index.add(keys)
scores, ids = index.search(np.load(folder + "/queries.npy"), k)
np.save(folder + "/scores.npy", scores)
np.save(folder + "/ids.npy", ids)
"""


def faiss_top_k(queries: torch.Tensor, keys: torch.Tensor, k: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """`cosine_top_k` done by FAISS (Johnson et al., 2017): IndexFlatIP on unit vectors.

    FAISS is the library behind many vector databases; its flat index is the exact search
    written in C++, and on unit vectors the inner product it ranks by is the cosine, so it must
    give the same ids as ours. It runs in a child Python process that loads only numpy and
    faiss: the faiss-cpu and torch wheels each bring their own OpenMP runtime, and on macOS a
    process that loads both can abort ("OMP: Error #15") or crash in the search.
    Needs `pip install faiss-cpu`; returns (scores, ids) as float32 and int64 tensors.
    """
    _check_top_k(queries, keys, k)
    with tempfile.TemporaryDirectory() as folder:
        for name, x in (("queries", queries), ("keys", keys)):
            unit = F.normalize(x.detach().float().cpu(), dim=1)
            np.save(Path(folder) / f"{name}.npy", unit.numpy())
        done = subprocess.run([sys.executable, "-c", _FAISS_SEARCH, folder, str(k)],
                              capture_output=True, text=True)
        if done.returncode:
            if "No module named 'faiss'" in done.stderr:
                raise ModuleNotFoundError("faiss is not installed: pip install faiss-cpu")
            raise RuntimeError(f"the FAISS search failed:\n{done.stderr[-2000:]}")
        return (torch.from_numpy(np.load(Path(folder) / "scores.npy")),
                torch.from_numpy(np.load(Path(folder) / "ids.npy")))


@dataclass(frozen=True)
class Hit:
    """One search result: the passage's position in the collection, its cosine, its text."""

    id: int
    score: float
    text: str


class VectorIndex:
    """Passages and their unit vectors; `search` finds the closest to a query.

    `embed` turns a list of texts into a (texts, dim) tensor: a TfidfEmbedder, a GPTEmbedder,
    or any function of that shape. The passages are embedded once, here.

    >>> index = VectorIndex(["the cat sat", "the dog ran"], TfidfEmbedder(["the cat sat", "the dog ran"]))
    >>> index.search("where did the dog go?", k=1)[0].id
    1
    """  # noqa: E501

    def __init__(self, passages: Sequence[str], embed: Embedder):
        if isinstance(passages, str) or len(passages) == 0:
            raise ValueError("the collection is empty: give VectorIndex a list of passages "
                             "(split_passages cuts a document into them)")
        if blank := [i for i, p in enumerate(passages) if not isinstance(p, str) or not p.strip()]:
            raise ValueError(f"passages {blank[:10]} are empty or not strings")
        self.passages, self.embed = list(passages), embed
        vectors = embed(self.passages)
        if vectors.ndim != 2 or vectors.shape[0] != len(self.passages):
            raise ValueError(f"embed returned shape {tuple(vectors.shape)} for "
                             f"{len(self.passages)} passages; it must be (passages, dim)")
        self.vectors = F.normalize(vectors.float(), dim=1)  # (passages, dim), unit length

    def __len__(self) -> int:
        return len(self.passages)

    def _query_vectors(self, queries: Sequence[str]) -> torch.Tensor:
        if isinstance(queries, str):
            raise ValueError("pass a list of queries here, or use search(query) for one")
        for q in queries:
            if not isinstance(q, str) or not q.strip():
                raise ValueError(f"a query must be a non-empty string, got {q!r}")
        vectors = self.embed(list(queries)).float()
        if zero := [q for q, v in zip(queries, vectors, strict=True) if not v.any()]:
            raise ValueError(f"the vector of {zero[0]!r} is all zeros, so every passage would "
                             "score 0 (with TF-IDF: none of its words occur in the collection); "
                             "rephrase it with words the documents use")
        return vectors

    def scores(self, queries: Sequence[str]) -> torch.Tensor:
        """The cosine of every query with every passage: (queries, passages)."""
        return F.normalize(self._query_vectors(queries), dim=1) @ self.vectors.T

    def search_many(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
        """`search` for each query, embedding them all in one call."""
        if not 1 <= k <= len(self):
            raise ValueError(f"k must be between 1 and the number of passages ({len(self)}), "
                             f"got {k}")
        scores, ids = cosine_top_k(self._query_vectors(queries), self.vectors, k)
        return [[Hit(i, s, self.passages[i]) for s, i in zip(*row, strict=True)]
                for row in zip(scores.tolist(), ids.tolist(), strict=True)]

    def search(self, query: str, k: int = 3) -> list[Hit]:
        """The `k` passages most similar to `query`, best first, with their cosines."""
        if not isinstance(query, str):
            raise ValueError(f"search takes one query string, got {type(query).__name__}; "
                             "use search_many for several")
        return self.search_many([query], k)[0]


# -- the prompt -----------------------------------------------------------------------------

def rag_entry(question: str, passages: Sequence[str | Hit], enc, context_length: int,
              max_new_tokens: int = 64) -> dict:
    """An instruction entry: `question`, with `passages` as its input, fitted to the context.

    The question becomes the "### Instruction:" and the passages, best first and separated by
    blank lines, the "### Input:" of buildllm.instruct's Alpaca layout, so `respond(model, enc,
    entry)` answers it. Prompt and answer must fit in `context_length` tokens together: passages
    are added while the prompt stays within context_length - max_new_tokens; the first that does
    not fit is cut, word by word, to what does (marked with " ..."), and the rest are left out.

    >>> rag_entry("Who?", ["Jack painted.", "Stroud died."], enc, 256)["input"]
    'Jack painted.\\n\\nStroud died.'
    """
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"the question must be a non-empty string, got {question!r}")
    if not 0 < max_new_tokens < context_length:
        raise ValueError(f"max_new_tokens must be between 1 and context_length - 1 "
                         f"({context_length - 1}), got {max_new_tokens}")
    budget = context_length - max_new_tokens
    texts = [p.text if isinstance(p, Hit) else p for p in passages]
    texts = [t for t in texts if t.strip()]

    def entry(parts: list[str]) -> dict:
        return {"instruction": question, "input": "\n\n".join(parts)}

    def fits(parts: list[str]) -> bool:
        return len(prompt_ids(entry(parts), enc)) <= budget

    if (n := len(prompt_ids(entry([]), enc))) > budget:
        raise ValueError(f"the question alone makes a {n}-token prompt, more than the "
                         f"{budget} tokens left for it ({context_length} context - "
                         f"{max_new_tokens} new tokens); shorten it or lower max_new_tokens")
    kept: list[str] = []
    for text in texts:
        if fits(kept + [text]):
            kept.append(text)
            continue
        tokens = text.split()
        lo, hi = 0, len(tokens)  # the most words that fit: lo fits, hi + 1 does not
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits(kept + [" ".join(tokens[:mid]) + " ..."]):
                lo = mid
            else:
                hi = mid - 1
        if lo:
            kept.append(" ".join(tokens[:lo]) + " ...")
        break
    return entry(kept)
