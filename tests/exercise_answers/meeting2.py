"""Answers to the Meeting 2 exercises, right and wrong, for tests/test_exercise_checks.py.

Each wrong answer is a mistake learners make, named after it.
"""

import heapq
import re
from collections import Counter, defaultdict
from itertools import pairwise

import regex
import torch

from buildllm import check
from buildllm.tokenizers import GPT2_SPLIT_PATTERN

# -- Exercise 2.1: pair counts --------------------------------------------------------------


def pair_counts_with_zip(ids):
    counts = {}
    for pair in pairwise(ids):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def pair_counts_with_counter(ids):
    return Counter((ids[i], ids[i + 1]) for i in range(len(ids) - 1))


def pair_counts_skipping_counted(ids):
    """Jumps past a counted pair, as if pairs could not overlap."""
    counts, i = {}, 0
    while i < len(ids) - 1:
        pair = (ids[i], ids[i + 1])
        counts[pair] = counts.get(pair, 0) + 1
        i += 2 if ids[i] == ids[i + 1] else 1
    return counts


WRONG_PAIR_COUNTS = {
    "a set of the pairs": lambda ids: set(pairwise(ids)),
    "every pair counted once": lambda ids: dict.fromkeys(pairwise(ids), 1),
    "a run of equal ids counted without overlaps": pair_counts_skipping_counted,
    "wraps around from the last id to the first": lambda ids: Counter(
        zip(ids, ids[1:] + ids[:1], strict=True)
    ),
    "misses the last pair": lambda ids: Counter(zip(ids[:-2], ids[1:-1], strict=True)),
    "pairs the wrong way round": lambda ids: Counter((b, a) for a, b in pairwise(ids)),
    "runs past the end": lambda ids: Counter((ids[i], ids[i + 1]) for i in range(len(ids))),
}


# -- Exercise 2.2: one merge ----------------------------------------------------------------


def merge_with_while(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i < len(ids) - 1 and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_with_skip_flag(ids, pair, new_id):
    out, skip = [], False
    for a, b in zip(ids, [*ids[1:], None], strict=True):
        if skip:
            skip = False
        elif (a, b) == pair:
            out.append(new_id)
            skip = True
        else:
            out.append(a)
    return out


def merge_in_place(ids, pair, new_id):
    i = 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            ids[i : i + 2] = [new_id]
        i += 1
    return ids


def merge_overlapping(ids, pair, new_id):
    """Replaces each position that starts the pair, so overlapping occurrences both count."""
    return [new_id if (a, b) == pair else a for a, b in pairwise(ids)] + ids[-1:]


def merge_dropping_the_last_id(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_right_to_left(ids, pair, new_id):
    return merge_with_while(ids[::-1], pair[::-1], new_id)[::-1]


def merge_first_only(ids, pair, new_id):
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == pair:
            return [*ids[:i], new_id, *ids[i + 2 :]]
    return list(ids)


def merge_by_string_replace(ids, pair, new_id):
    text = " ".join(map(str, ids)).replace(f"{pair[0]} {pair[1]}", str(new_id))
    return [int(s) for s in text.split()]


def merge_either_order(ids, pair, new_id):
    out = merge_with_while(ids, pair, new_id)
    return merge_with_while(out, pair[::-1], new_id)


WRONG_MERGE = {
    "changes the input list": merge_in_place,
    "overlapping occurrences both merged": merge_overlapping,
    "drops the last id": merge_dropping_the_last_id,
    "scans right to left": merge_right_to_left,
    "only the first occurrence": merge_first_only,
    "replaces in a string of the ids": merge_by_string_replace,
    "merges the reversed pair too": merge_either_order,
    "returns a tuple": lambda ids, pair, new_id: tuple(merge_with_while(ids, pair, new_id)),
}


# -- Exercise 2.3: training -----------------------------------------------------------------


def train_on_pieces(text, vocab_size, split=None, to_ids=None, choose=None, merge=merge_with_while):
    """The plain trainer on the list of all pre-tokens, with switches for the usual mistakes."""
    pieces = regex.findall(GPT2_SPLIT_PATTERN, text) if split is None else split(text)
    words = [list(piece.encode("utf-8")) if to_ids is None else to_ids(piece) for piece in pieces]
    vocab = {i: bytes([i]) for i in range(256)}
    merges = []
    for new_id in range(256, vocab_size):
        counts = {}
        for word in words:
            for pair in pairwise(word):
                counts[pair] = counts.get(pair, 0) + 1
        if choose is None:
            a, b = max(counts, key=lambda p: (counts[p], vocab[p[0]], vocab[p[1]]))
        else:
            a, b = choose(counts, vocab)
        words = [merge(word, (a, b), new_id) for word in words]
        vocab[new_id] = vocab[a] + vocab[b]
        merges.append((vocab[a], vocab[b]))
    return vocab, merges


def train_on_word_counts(text, vocab_size):
    words = Counter(tuple(w.encode()) for w in regex.findall(GPT2_SPLIT_PATTERN, text))
    vocab = {i: bytes([i]) for i in range(256)}
    merges = []
    for new_id in range(256, vocab_size):
        counts = Counter()
        for word, n in words.items():
            for pair in pairwise(word):
                counts[pair] += n
        best = max(counts.values())
        a, b = max((vocab[a], vocab[b], (a, b)) for (a, b), c in counts.items() if c == best)[2]
        new_words = Counter()
        for word, n in words.items():
            new_words[tuple(merge_with_while(list(word), (a, b), new_id))] += n
        words = new_words
        vocab[new_id] = vocab[a] + vocab[b]
        merges.append((vocab[a], vocab[b]))
    return vocab, merges


def train_with_merges_as_a_dict(text, vocab_size):
    vocab, merges = train_on_pieces(text, vocab_size)
    return vocab, {pair: 256 + rank for rank, pair in enumerate(merges)}


def train_with_end_of_text(text, vocab_size):
    vocab, merges = train_on_pieces(text, vocab_size)
    vocab[len(vocab)] = b"<|endoftext|>"
    return vocab, merges


def train_returning_id_pairs(text, vocab_size):
    vocab, merges = train_on_pieces(text, vocab_size)
    ids = {token: i for i, token in vocab.items()}
    return vocab, [(ids[a], ids[b]) for a, b in merges]


WRONG_TRAIN = {
    "no pre-tokenization": lambda t, n: train_on_pieces(t, n, split=lambda text: [text]),
    "splits on whitespace": lambda t, n: train_on_pieces(t, n, split=str.split),
    "tie broken by ids, not bytes": lambda t, n: train_on_pieces(
        t, n, choose=lambda c, v: max(c, key=lambda p: (c[p], p))
    ),
    "tie broken by the first pair found": lambda t, n: train_on_pieces(
        t, n, choose=lambda c, v: max(c, key=c.get)
    ),
    "tie broken by the smallest bytes": lambda t, n: train_on_pieces(
        t, n, choose=lambda c, v: min(c, key=lambda p: (-c[p], v[p[0]], v[p[1]]))
    ),
    "tie broken by the merged bytes": lambda t, n: train_on_pieces(
        t, n, choose=lambda c, v: max(c, key=lambda p: (c[p], v[p[0]] + v[p[1]]))
    ),
    "overlapping merges": lambda t, n: train_on_pieces(t, n, merge=merge_overlapping),
    "characters, not bytes": lambda t, n: train_on_pieces(t, n, to_ids=lambda w: list(map(ord, w))),
    "each distinct word counted once": lambda t, n: train_on_pieces(
        t, n, split=lambda text: list(dict.fromkeys(regex.findall(GPT2_SPLIT_PATTERN, text)))
    ),
    "vocab_size merges": lambda t, n: train_on_pieces(t, n + 256),
    "merges as pairs of ids": train_returning_id_pairs,
    "returns only the merges": lambda t, n: train_on_pieces(t, n)[1],
    "merges as a dict, as minbpe keeps them": train_with_merges_as_a_dict,
    "one merge too many": lambda t, n: train_on_pieces(t, n + 1),
    "vocab of strings, not bytes": lambda t, n: (
        {i: b.decode("utf-8", errors="replace") for i, b in train_on_pieces(t, n)[0].items()},
        train_on_pieces(t, n)[1],
    ),
    "<|endoftext|> added to the vocab": train_with_end_of_text,
}


# -- Exercise 2.4: decoding -----------------------------------------------------------------


def decode_joined(ids, vocab):
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")


def decode_with_bytearray(ids, vocab):
    out = bytearray()
    for i in ids:
        out += vocab[i]
    return str(out, "utf-8", "replace")


WRONG_DECODE = {
    "strict UTF-8": lambda ids, vocab: b"".join(vocab[i] for i in ids).decode("utf-8"),
    "drops broken bytes": lambda ids, vocab: b"".join(vocab[i] for i in ids).decode(
        "utf-8", errors="ignore"
    ),
    "decodes each token on its own": lambda ids, vocab: "".join(
        vocab[i].decode("utf-8", errors="replace") for i in ids
    ),
    "ids below 256 taken as bytes": lambda ids, vocab: decode_joined(
        ids, {**vocab, **{i: bytes([i]) for i in range(256)}}
    ),
    "Latin-1, not UTF-8": lambda ids, vocab: b"".join(vocab[i] for i in ids).decode("latin-1"),
    "returns bytes": lambda ids, vocab: b"".join(vocab[i] for i in ids),
}


# -- Exercise 2.5: encoding -----------------------------------------------------------------


def encode_with_ranks(text, vocab, merges):
    ids_of = {token: i for i, token in vocab.items()}
    rank = {(ids_of[a], ids_of[b]): r for r, (a, b) in enumerate(merges)}
    out = []
    for piece in regex.findall(GPT2_SPLIT_PATTERN, text):
        ids = [ids_of[bytes([b])] for b in piece.encode("utf-8")]
        while len(ids) > 1:
            pair = min(pairwise(ids), key=lambda p: rank.get(p, float("inf")))
            if pair not in rank:
                break
            ids = merge_with_while(ids, pair, ids_of[vocab[pair[0]] + vocab[pair[1]]])
        out += ids
    return out


def encode_with_bytes(text, vocab, merges):
    """Works on byte strings throughout and looks the ids up at the very end."""
    rank = {pair: r for r, pair in enumerate(merges)}
    ids_of = {token: i for i, token in vocab.items()}
    out = []
    for piece in regex.findall(GPT2_SPLIT_PATTERN, text):
        parts = [bytes([b]) for b in piece.encode("utf-8")]
        while True:
            ranked = [(rank[p], i) for i, p in enumerate(pairwise(parts)) if p in rank]
            if not ranked:
                break
            _, i = min(ranked)
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        out += [ids_of[p] for p in parts]
    return out


def encode_choosing(text, vocab, merges, split=None, choose=None, byte_ids=None, new_id=None):
    """Like encode_with_ranks, with switches for the usual mistakes."""
    ids_of = {token: i for i, token in vocab.items()}
    rank = {(ids_of[a], ids_of[b]): r for r, (a, b) in enumerate(merges)}
    merged = {(ids_of[a], ids_of[b]): ids_of[a + b] for a, b in merges}
    pieces = regex.findall(GPT2_SPLIT_PATTERN, text) if split is None else split(text)
    out = []
    for piece in pieces:
        raw = piece.encode("utf-8")
        ids = [ids_of[bytes([b])] for b in raw] if byte_ids is None else byte_ids(raw)
        while True:
            found = [p for p in pairwise(ids) if p in rank]
            if not found:
                break
            pair = min(found, key=rank.get) if choose is None else choose(found, rank)
            merged_id = merged[pair] if new_id is None else new_id(pair, rank)
            ids = merge_with_while(ids, pair, merged_id)
        out += ids
    return out


WRONG_ENCODE = {
    "byte values as ids": lambda t, v, m: encode_choosing(t, v, m, byte_ids=list),
    "no pre-tokenization": lambda t, v, m: encode_choosing(t, v, m, split=lambda text: [text]),
    "pre-tokenizes with re's \\w": lambda t, v, m: encode_choosing(
        t, v, m, split=lambda text: re.findall(r" ?\w+| ?[^\w\s]+|\s+", text)
    ),
    "case-insensitive contractions": lambda t, v, m: encode_choosing(
        t, v, m, split=lambda text: regex.findall(GPT2_SPLIT_PATTERN, text, regex.IGNORECASE)
    ),
    "the first mergeable pair from the left": lambda t, v, m: encode_choosing(
        t, v, m, choose=lambda found, rank: found[0]
    ),
    "the most frequent pair in the word": lambda t, v, m: encode_choosing(
        t, v, m, choose=lambda found, rank: max(found, key=found.count)
    ),
    "the latest merge first": lambda t, v, m: encode_choosing(
        t, v, m, choose=lambda found, rank: max(found, key=rank.get)
    ),
    "merged ids taken to be 256 + rank": lambda t, v, m: encode_choosing(
        t, v, m, new_id=lambda pair, rank: 256 + rank[pair]
    ),
    "returns a tensor of ids": lambda t, v, m: torch.tensor(encode_with_ranks(t, v, m)),
}


# -- Exercise 2.6: fast training ------------------------------------------------------------


def index_pairs(text):
    """Each distinct piece's bytes and count, each pair's count, and the pieces it occurs in."""
    freqs = Counter(regex.findall(GPT2_SPLIT_PATTERN, text))
    words = [list(w.encode("utf-8")) for w in freqs]
    weights = list(freqs.values())
    counts, where = Counter(), defaultdict(set)
    for w, (word, n) in enumerate(zip(words, weights, strict=True)):
        for pair in pairwise(word):
            counts[pair] += n
            where[pair].add(w)
    return words, weights, counts, where


def train_fast_with_max(text, vocab_size):
    words, weights, counts, where = index_pairs(text)
    vocab = {i: bytes([i]) for i in range(256)}
    merges = []
    for new_id in range(256, vocab_size):
        top = max(counts.values())
        tied = [p for p, c in counts.items() if c == top]
        pair = max(tied, key=lambda p: (vocab[p[0]], vocab[p[1]]))
        vocab[new_id] = vocab[pair[0]] + vocab[pair[1]]
        merges.append((vocab[pair[0]], vocab[pair[1]]))
        for w in where.pop(pair):
            word, n = words[w], weights[w]
            for p in pairwise(word):
                counts[p] -= n
            words[w] = word = merge_with_while(word, pair, new_id)
            for p in pairwise(word):
                counts[p] += n
                where[p].add(w)
        del counts[pair]
    return vocab, merges


class Reversed:
    """Orders byte strings backwards, so a min-heap pops the greatest first."""

    def __init__(self, key):
        self.key = key

    def __lt__(self, other):
        return self.key > other.key

    def __eq__(self, other):
        return self.key == other.key


def train_fast_with_heap(text, vocab_size):
    words, weights, counts, where = index_pairs(text)
    vocab = {i: bytes([i]) for i in range(256)}
    heap = [(-c, Reversed((vocab[a], vocab[b])), (a, b)) for (a, b), c in counts.items()]
    heapq.heapify(heap)
    merges = []
    for new_id in range(256, vocab_size):
        while -heap[0][0] != counts.get(heap[0][2]):
            heapq.heappop(heap)  # its count has changed since
        a, b = pair = heapq.heappop(heap)[2]
        vocab[new_id] = vocab[a] + vocab[b]
        merges.append((vocab[a], vocab[b]))
        changed = set()
        for w in where.pop(pair):
            old, new = words[w], merge_with_while(words[w], pair, new_id)
            for p in pairwise(old):
                counts[p] -= weights[w]
                changed.add(p)
            for p in pairwise(new):
                counts[p] += weights[w]
                changed.add(p)
                where[p].add(w)
            words[w] = new
        for p in changed:
            if counts[p] > 0:
                heapq.heappush(heap, (-counts[p], Reversed((vocab[p[0]], vocab[p[1]])), p))
            else:
                counts.pop(p)
    return vocab, merges


def train_fast_forgetting_old_pairs(text, vocab_size):
    """Adds the pairs a merge creates but never subtracts the ones it destroys."""
    words, weights, counts, where = index_pairs(text)
    vocab = {i: bytes([i]) for i in range(256)}
    merges = []
    for new_id in range(256, vocab_size):
        pair = max(counts, key=lambda p: (counts[p], vocab[p[0]], vocab[p[1]]))
        vocab[new_id] = vocab[pair[0]] + vocab[pair[1]]
        merges.append((vocab[pair[0]], vocab[pair[1]]))
        for w in where.pop(pair):
            words[w] = word = merge_with_while(words[w], pair, new_id)
            for p in pairwise(word):
                if new_id in p:
                    counts[p] += weights[w]
                    where[p].add(w)
        del counts[pair]
    return vocab, merges


WRONG_FAST_TRAIN = {
    "the plain trainer, recounting every pair": train_on_word_counts,
    "never subtracts destroyed pairs": train_fast_forgetting_old_pairs,
}


# (exercise, its check, right answers, wrong answers by the mistake they make)
EXERCISES = [
    (
        "2.1",
        check.meeting2.pair_counts,
        [pair_counts_with_zip, pair_counts_with_counter],
        WRONG_PAIR_COUNTS,
    ),
    ("2.2", check.meeting2.merge, [merge_with_while, merge_with_skip_flag], WRONG_MERGE),
    ("2.3", check.meeting2.train, [train_on_pieces, train_on_word_counts], WRONG_TRAIN),
    ("2.4", check.meeting2.decode, [decode_joined, decode_with_bytearray], WRONG_DECODE),
    ("2.5", check.meeting2.encode, [encode_with_ranks, encode_with_bytes], WRONG_ENCODE),
    (
        "2.6",
        check.meeting2.fast_train,
        [train_fast_with_max, train_fast_with_heap],
        WRONG_FAST_TRAIN,
    ),
]
