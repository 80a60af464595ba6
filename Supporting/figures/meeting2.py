"""Meeting 2's figures: byte-level BPE, from the training loop to GPT-2's encoder."""

from collections import Counter
from itertools import pairwise

import regex

from buildllm.tokenizers import GPT2_SPLIT_PATTERN, merge
from buildllm.tokenizers.bpe import BYTE_TO_CHAR
from figures import figure
from figures.kit import INK, MUTED, Canvas

SPACE = "␣"  # how the notebooks print a space inside a token


def _show(piece: str) -> str:
    """A token or pre-token with its spaces and newlines made visible, as the notebooks do."""
    return piece.replace(" ", SPACE).replace("\n", "\\n")


def _strip(tokens: list[str]) -> str:
    """Tokens joined the way notebook 1 prints them: t|h|e|␣|c|at."""
    return "|".join(_show(t) for t in tokens)


@figure("m2_training_loop", "The BPE training loop",
        alt="One turn of the training loop on the toy sentence: get_pair_counts(ids) counts "
            "neighbouring pairs, the most frequent pair (a, t) occurs 6 times, merge_pair "
            "replaces it by new_id 256 and shortens ids from 46 to 40 tokens, and vocab[256] "
            "becomes b'at'. The loop then repeats with new_id 257.",
        shows=("get_pair_counts", "merge_pair", "new_id", "46", "40"))
def training_loop() -> Canvas:
    c = Canvas(880, 350)
    before = list("the cat sat")  # the start of the toy sentence
    after = merge(before, ("a", "t"), "at")
    # row 1: ids -> count -> counts -> pick
    c.box(20, 50, 200, 70, color="blue")
    c.text(120, 68, "ids: 46 tokens", mono=True, size=11)
    c.text(120, 96, _strip(before) + "|…", mono=True, size=10)
    c.arrow((220, 85), (250, 85))
    c.box(252, 62, 188, 46, "get_pair_counts(ids)", color="orange", mono=True, size=10)
    c.arrow((440, 85), (470, 85))
    c.box(472, 30, 130, 142, color="blue")
    c.text(537, 46, "counts", mono=True, size=10, weight="bold")
    c.box(480, 60, 114, 22, color="yellow", radius=3)
    for row, (pair, n) in enumerate([("b'at'", 6), ("b'th'", 4), ("b'he'", 4), ("b'e '", 4)]):
        c.text(490, 71 + 22 * row, f"{pair}: {n}", mono=True, size=10, ha="left")
    c.text(537, 158, "…", size=10)
    c.arrow((602, 85), (632, 85))
    c.box(634, 62, 226, 46, "max(counts, key=…)", color="orange", mono=True, size=10)
    c.text(747, 124, "the most frequent pair; ties go to", size=9, color=MUTED)
    c.text(747, 138, "the greatest (left bytes, right bytes)", size=9, color=MUTED)
    # row 2, right to left: the winning pair -> merge -> shorter ids; vocab grows
    c.arrow((747, 150), (747, 218))
    c.box(659, 220, 176, 56, color="blue")
    c.text(747, 238, "pair = (97, 116)", mono=True, size=10)
    c.text(747, 258, "a + t, 6x", mono=True, size=10)
    c.arrow((659, 248), (558, 248))
    c.box(296, 225, 260, 46, "merge_pair(ids, pair, new_id)", color="orange", mono=True,
          size=10)
    c.text(426, 286, "each (97, 116) becomes 256", size=9, color=MUTED)
    c.arrow((296, 248), (222, 248))
    c.box(20, 213, 200, 70, color="blue")
    c.text(120, 231, "ids: 40 tokens", mono=True, size=11)
    c.text(120, 259, _strip(after) + "|…", mono=True, size=10)
    c.arrow((747, 276), (747, 298))
    c.box(632, 300, 230, 36, "vocab[256] = b'at'", color="green", mono=True, size=10)
    c.text(620, 318, "new_id = 256:", size=10, ha="right", mono=True)
    # back to the start
    c.arrow((60, 213), (60, 122), label="repeat with new_id = 257, 258, …", size=10)
    return c


# GPT-2's split pattern, one alternative at a time, so a figure can say which one matched.
ALTERNATIVES = [
    ("'(?:[sdmt]|ll|ve|re)", "contractions"),
    (r" ?\p{L}+", "letters, an optional space first"),
    (r" ?\p{N}+", "digits, an optional space first"),
    (r" ?[^\s\p{L}\p{N}]+", "anything else, an optional space first"),
    (r"\s+(?!\S)", "whitespace, but not the last before a word"),
    (r"\s+", "any whitespace left"),
]
assert "|".join(a for a, _ in ALTERNATIVES) == GPT2_SPLIT_PATTERN
EXAMPLE = "Hello world! It's 2024, and I've got   3 cats :)\n\nThe end."


@figure("m2_pretokenizer", "GPT-2's pre-tokenizer",
        alt="The example sentence cut by regex.findall(GPT2_SPLIT_PATTERN, example) into 20 "
            "pre-tokens, each labelled with the alternative of the pattern that matched it: "
            "contractions, letters, digits, other symbols or whitespace, each taking at most "
            "one leading space. BPE merges happen only inside a pre-token.",
        shows=("regex.findall", "GPT2_SPLIT_PATTERN", "example"))
def pretokenizer() -> Canvas:
    c = Canvas(880, 350)
    grouped = regex.compile("|".join(f"({a})" for a, _ in ALTERNATIVES))
    matches = [(m.group(), m.lastindex) for m in grouped.finditer(EXAMPLE)]
    c.text(20, 22, "regex.findall(GPT2_SPLIT_PATTERN, example)", mono=True, size=11, ha="left")
    c.text(860, 22, f"{len(matches)} pre-tokens; under each, the alternative that matched",
           size=10, color=MUTED, ha="right")
    x = 20
    for n, (piece, rule) in enumerate(matches):
        y = 48 + 76 * (n // 10)
        x = 20 if n % 10 == 0 else x
        w = max(40, 8.4 * len(_show(piece)) + 16)
        c.box(x, y, w, 34, _show(piece), color="blue", mono=True, size=10)
        c.text(x + w / 2, y + 46, str(rule), size=9, color=MUTED)
        x += w + 8
    c.box(560, 124, 300, 62, color="yellow")
    c.text(710, 144, "BPE merges only inside a box:", size=10)
    c.text(710, 166, f"{_show(' world')} and ! never become one token", size=10)
    y = 214
    c.text(20, y, "GPT2_SPLIT_PATTERN's alternatives, tried left to right at each position:",
           size=10, ha="left")
    for i, (alternative, meaning) in enumerate(ALTERNATIVES, start=1):
        row = y + 22 + 17 * (i - 1)
        c.text(28, row, str(i), size=10, color=MUTED)
        c.text(48, row, alternative.replace(" ", SPACE), mono=True, size=10, ha="left")
        c.text(250, row, meaning, size=10, ha="left")
    c.text(560, y + 22 + 17 * 4, f"3 spaces before 3: {_show('  ')} by rule 5,", size=10,
           ha="left", color=MUTED)
    c.text(560, y + 22 + 17 * 5, f"and the last one joins {_show(' 3')} (rule 3)", size=10,
           ha="left", color=MUTED)
    return c


@figure("m2_byte_alphabet", "GPT-2's byte alphabet",
        alt="All 256 bytes in a 16 by 16 table, each with the character BYTE_TO_CHAR spells it "
            "with in GPT-2's files. 188 visible bytes keep their own Latin-1 character; the 68 "
            "others, highlighted, are moved to chr(256 + n): the space, byte 32, becomes Ġ and "
            "the newline Ċ.",
        shows=("BYTE_TO_CHAR", "188", "68", "Ġ", "220"))
def byte_alphabet() -> Canvas:
    c = Canvas(860, 560)
    x, y, cell = 60, 60, 29
    moved = [b for b in range(256) if BYTE_TO_CHAR[b] != chr(b)]
    values = [[BYTE_TO_CHAR[16 * r + k] for k in range(16)] for r in range(16)]
    fills = [["yellow" if 16 * r + k in moved else "white" for k in range(16)] for r in range(16)]
    c.grid(x, y, values, cell=cell, fills=fills, size=11)
    for k in range(16):
        c.text(x + (k + 0.5) * cell, y - 12, f"{k:X}", mono=True, size=9, color=MUTED)
        c.text(x - 8, y + (k + 0.5) * cell, f"{k:X}_", mono=True, size=9, color=MUTED,
               ha="right")
    c.text(x + 8 * cell, 22, "BYTE_TO_CHAR[b]: row = first hex digit of b, column = second",
           size=10)
    right = x + 16 * cell + 30
    c.key(right, y, "white", f"{256 - len(moved)} bytes keep their own character")
    c.key(right, y + 30, "yellow", f"{len(moved)} are moved to chr(256 + n),")
    c.text(right + 26, y + 57, "n = 0, 1, … in byte order", size=10, ha="left")
    for row, b in enumerate([32, 10, 9, 0]):
        spelled = f"byte {b:3} {bytes([b])!r:8} is spelled {BYTE_TO_CHAR[b]}"
        c.text(right, y + 110 + 24 * row, spelled, mono=True, size=10, ha="left")
    c.text(right, y + 230, "GPT-2's ids 0 to 255 use this order:", size=10, ha="left")
    c.text(right, y + 250, f"the visible bytes are ids 0–{255 - len(moved)},", size=10,
           ha="left")
    c.text(right, y + 270, f"the moved ones ids {256 - len(moved)}–255", size=10, ha="left")
    c.text(right, y + 298, 'encoder["!"] = 0', mono=True, size=10, ha="left")
    c.text(right, y + 318, f'encoder["Ġ"] = {256 - len(moved) + moved.index(32)}', mono=True,
           size=10, ha="left")
    return c


TOY = "the cat sat on the mat, the rat sat on the hat"


def _pairs(word: list[str], freq: int) -> Counter:
    """The word's neighbouring pairs, each counted `freq` times."""
    return Counter({pair: n * freq for pair, n in Counter(pairwise(word)).items()})


@figure("m2_incremental_counts", "Updating pair counts after a merge",
        alt="After the merge of (a, t) on the toy sentence, the fast trainer visits only the 5 "
            "of its 9 distinct words that contain the pair, subtracts their old pairs and adds "
            "their new ones, weighted by each word's frequency. The naive trainer instead "
            "recounts every word before every merge: all 1,256 words of The Verdict, where "
            "merge 1 touches 69.",
        shows=("train_bpe_naive", "train_bpe", "1,256", "69", "heap"))
def incremental_counts() -> Canvas:
    c = Canvas(880, 420)
    words = Counter(regex.findall(GPT2_SPLIT_PATTERN, TOY))
    delta, merged = Counter(), {w: merge(list(w), ("a", "t"), "at") for w in words}
    touched = [w for w in words if merged[w] != list(w)]
    for word in touched:
        delta.subtract(_pairs(list(word), words[word]))
        delta.update(_pairs(merged[word], words[word]))
    c.text(20, 22, f"merge 256 = (a, t) on the toy sentence: {len(touched)} of its "
           f"{len(words)} distinct words contain the pair", size=11, ha="left")
    for row, (word, freq) in enumerate(words.items()):
        y = 44 + 26 * row
        hit = word in touched
        c.box(20, y, 100, 22, _show(word), color="yellow" if hit else "grey", mono=True,
              size=10, radius=3)
        c.text(130, y + 11, f"x{freq}", mono=True, size=10, ha="left")
        c.text(175, y + 11, _strip(merged[word]) if hit else "skipped", mono=hit, size=10,
               ha="left", color=INK if hit else MUTED)
    c.text(20, 292, "an index from each pair to the words that contain it", size=10,
           ha="left")
    c.text(20, 310, "sends the trainer straight to the highlighted ones", size=10, ha="left")
    c.arrow((330, 150), (410, 150))
    c.text(370, 136, "update", size=10, color=MUTED)
    for x, items, head in [(430, [p for p in delta.items() if p[1] < 0], "old pairs: subtract"),
                           (660, [p for p in delta.items() if p[1] > 0], "new pairs: add")]:
        c.text(x, 52, head, size=10, ha="left", color=MUTED)
        for row, (pair, d) in enumerate(items):
            c.box(x, 64 + 26 * row, 200, 22, color="grey" if d < 0 else "blue", radius=3)
            c.text(x + 10, 75 + 26 * row, f"({pair[0]}, {pair[1]})", mono=True, size=10, ha="left")
            c.text(x + 190, 75 + 26 * row, f"{d:+d}", mono=True, size=10, ha="right")
    c.text(660, 210, "each change is the word's", size=10, ha="left", color=MUTED)
    c.text(660, 228, "frequency: ␣sat counts x2", size=10, ha="left", color=MUTED)
    c.text(430, 292, "then push each changed count onto the heap; an old entry", size=10,
           ha="left")
    c.text(430, 310, "is dropped when it reaches the top with an outdated count", size=10,
           ha="left")
    c.line([(20, 340), (860, 340)], color="#d1d5db", width=1)
    c.text(20, 362, "train_bpe_naive:", mono=True, size=10, ha="left")
    c.text(170, 362, "recounts all 1,256 distinct words of The Verdict before every merge",
           size=10, ha="left")
    c.text(20, 390, "train_bpe:", mono=True, size=10, ha="left")
    c.text(170, 390, "visits only the words with the merged pair: 69 for merge 1, "
           "4 for the median merge", size=10, ha="left")
    return c


# The ranks (line numbers in vocab.bpe, from 0) of every pair that meets while GPT-2 encodes
# " tokenization", as `rank` in notebook 2 gives them; a pair missing here was never merged.
# Merge rank r makes token id 256 + r.
RANKS = {("Ġ", "t"): 0, ("t", "o"): 1206, ("o", "k"): 226, ("k", "e"): 109, ("e", "n"): 12,
         ("n", "i"): 8205, ("i", "z"): 272, ("z", "a"): 4240, ("a", "t"): 9, ("t", "i"): 20003,
         ("i", "o"): 696, ("o", "n"): 5, ("Ġt", "o"): 28, ("i", "on"): 39, ("at", "i"): 6990,
         ("k", "en"): 3208, ("en", "i"): 43594, ("at", "ion"): 85, ("iz", "ation"): 1378,
         ("Ġto", "ken"): 10985}
WORD = "Ġtokenization"  # " tokenization", spelled as vocab.bpe spells it


def _encode_steps(word: str) -> list[tuple[list[str], list[int | None], int | None]]:
    """Each step of encoding `word`: its pieces, each neighbour pair's rank, the pair merged."""
    parts, steps = list(word), []
    while True:
        ranks = [RANKS.get(pair) for pair in pairwise(parts)]
        known = [(r, i) for i, r in enumerate(ranks) if r is not None]
        best = min(known)[1] if known else None
        steps.append((parts, ranks, best))
        if best is None:
            return steps
        parts = [*parts[:best], parts[best] + parts[best + 1], *parts[best + 2:]]


def _byte_id(char: str) -> int:
    """GPT-2's id for a single byte, spelled as in its files: visible bytes first."""
    return sorted(BYTE_TO_CHAR.values()).index(char)


@figure("m2_encode_by_rank", "Encoding: the lowest rank first",
        alt="GPT-2 encoding ' tokenization' step by step: under each pair of neighbouring "
            "pieces is its rank, its line in vocab.bpe, and the pair with the lowest rank is "
            "merged next, wherever it sits in the word. After 11 merges no neighbouring pair "
            "has a rank left, and the word is the two tokens Ġtoken and ization.",
        shows=("rank", "merge_steps", "Ġtoken", "ization"))
def encode_by_rank() -> Canvas:
    c = Canvas(880, 384)
    steps = _encode_steps(WORD)
    c.text(20, 20, "merge_steps(b\" tokenization\"): merge the neighbouring pair with the "
           "lowest rank, repeat", size=11, ha="left")
    c.text(20, 40, "under each gap: the rank of that pair, its line in vocab.bpe (– : no such "
           "merge)", size=10, ha="left", color=MUTED)
    rows = [(0, 62), (1, 122), (2, 182), (None, 246), (len(steps) - 2, 266),
            (len(steps) - 1, 326)]
    for n, y in rows:
        if n is None:
            c.text(330, y, f"… {len(steps) - 5} more merges …", size=10, color=MUTED)
            continue
        parts, ranks, best = steps[n]
        c.text(20, y + 13, f"step {n + 1}", size=10, color=MUTED, ha="left")
        x, gap = 78, 30
        for i, part in enumerate(parts):
            w = 8.4 * len(part) + 12
            c.box(x, y, w, 26, part, color="blue", mono=True, size=10, radius=3)
            if i < len(ranks):
                label = "–" if ranks[i] is None else str(ranks[i])
                if i == best:
                    c.box(x + w + gap / 2 - 21, y + 30, 42, 18, color="yellow", radius=3)
                c.text(x + w + gap / 2, y + 39, label, mono=True, size=9,
                       color=INK if i == best else MUTED)
            x += w + gap
        if best is None:
            note = "no pair has a rank: stop"
        else:
            note = f"{parts[best]} + {parts[best + 1]} = {parts[best] + parts[best + 1]}"
        c.text(860, y + 13, note, mono=True, size=10, ha="right")
    return c


@figure("m2_merge_tree", "How ' tokenization' is built",
        alt="The merge tree of ' tokenization' in GPT-2: its 13 bytes at the bottom with "
            "their ids, and above them each merge with its token id and the step at which "
            "encoding made it. The word ends as two trees, Ġtoken (11241) and ization "
            "(1634), because vocab.bpe has no merge of the two.",
        shows=("11241", "1634", "Ġtoken", "ization"))
def merge_tree() -> Canvas:
    c = Canvas(880, 430)
    steps = _encode_steps(WORD)
    dx, bottom, rise = 64, 340, 64
    # each node: (x, level); leaves first, then one node per merge, in the order they happen
    nodes = [(44 + dx * i, 0) for i in range(len(WORD))]
    for i, ch in enumerate(WORD):
        c.box(nodes[i][0] - 20, bottom, 40, 26, ch, color="white", mono=True, size=10)
        c.text(nodes[i][0], bottom + 38, str(_byte_id(ch)), mono=True, size=9, color=MUTED)
    for n, (parts, ranks, best) in enumerate(steps[:-1], start=1):
        (xa, la), (xb, lb) = nodes[best], nodes[best + 1]
        x, level = (xa + xb) / 2, max(la, lb) + 1
        y = bottom - rise * level
        for cx, cl in [(xa, la), (xb, lb)]:
            c.line([(x, y + 26), (cx, bottom - rise * cl)], color="#9ca3af", width=1.2)
        token = parts[best] + parts[best + 1]
        final = n == len(steps) - 1 or token in steps[-1][0]
        w = 8.4 * len(token) + 14
        c.box(x - w / 2, y, w, 26, token, color="blue" if final else "white", mono=True,
              size=10, weight="bold" if final else "normal")
        c.text(x + w / 2 + 4, y + 13, f"{256 + ranks[best]}", mono=True, size=9, ha="left")
        c.text(x - w / 2 - 4, y + 13, f"#{n}", size=9, ha="right", color=MUTED)
        nodes[best:best + 2] = [(x, level)]
    c.text(20, 20, 'tok.encode(" tokenization") -> [11241, 1634]', mono=True, size=11,
           ha="left")
    c.text(20, 42, "vocab.bpe has no merge Ġtoken + ization, so the word stays two tokens",
           size=10, ha="left")
    c.text(20, bottom + 66, "bottom: the 13 bytes with their ids; above: each merge's token, "
           "its id (256 + rank) and #n, the step that made it", size=10, ha="left",
           color=MUTED)
    return c


DOC = "The end.<|endoftext|>A new story begins."
# tok.encode(DOC, allowed_special={ENDOFTEXT}) in notebook 2, piece by piece
DOC_IDS = [("The", 464), (" end", 886), (".", 13), ("<|endoftext|>", 50256), ("A", 32),
           (" new", 649), (" story", 1621), (" begins", 6140), (".", 13)]


@figure("m2_special_tokens", "Encoding with a special token",
        alt="How encode handles the end-of-text special token: allowed_special cuts it out of "
            "the text first and maps it straight to id 50256; the text around it is "
            "pre-tokenized and merged as usual. Not allowed, it raises ValueError; "
            "encode_ordinary spells it as seven ordinary tokens.",
        shows=("allowed_special", "50256", "encode_ordinary", "ValueError"))
def special_tokens() -> Canvas:
    c = Canvas(880, 380)
    special = "<|endoftext|>"
    c.box(20, 20, 840, 34, repr(DOC), color="blue", mono=True, size=11)
    c.text(20, 78, "1. cut out the special tokens", size=10, ha="left")
    c.text(20, 94, "allowed_special={ENDOFTEXT}", mono=True, size=9, ha="left", color=MUTED)
    c.text(20, 144, "2. pre-tokenize the rest with", size=10, ha="left")
    c.text(20, 160, "GPT2_SPLIT_PATTERN; merge", size=10, ha="left")
    c.text(20, 176, "by rank inside each piece", size=10, ha="left")
    c.text(20, 221, "3. the ids", size=10, ha="left")
    x, spans = 290, {}
    for piece, token_id in DOC_IDS:
        w = max(40, 8.4 * len(_show(piece)) + 14)
        is_special = piece == special
        side = "special" if is_special else ("before" if x < 400 else "after")
        spans.setdefault(side, [x, x + w])[1] = x + w
        colour = "yellow" if is_special else "blue"
        c.box(x, 136, w, 30, _show(piece), color=colour, mono=True, size=10)
        c.arrow((x + w / 2, 168), (x + w / 2, 204))
        c.box(x, 206, w, 30, str(token_id), color=colour, mono=True, size=10)
        x += w + 6
    for side, (x0, x1) in spans.items():
        text = special if side == "special" else repr(DOC.split(special)[side == "after"])
        c.box(x0, 70, x1 - x0, 30, text, color="yellow" if side == "special" else "white",
              mono=True, size=10)
        c.arrow(((x0 + x1) / 2, 102), ((x0 + x1) / 2, 134))
    c.text(860, 254, f"{special} skips the regex and the merges: it maps straight to its id",
           size=10, ha="right", color=MUTED)
    c.line([(20, 278), (860, 278)], color="#d1d5db", width=1)
    c.text(20, 301, "not allowed:", size=10, ha="left")
    c.box(290, 288, 300, 26, "tok.encode(doc) -> ValueError", color="red", mono=True,
          size=10)
    c.text(20, 343, "as plain text:", size=10, ha="left")
    c.box(290, 330, 224, 26, "tok.encode_ordinary(doc)", color="orange", mono=True, size=10)
    c.arrow((514, 343), (538, 343))
    x = 540
    for piece in ["<", "|", "end", "of", "text", "|", ">"]:
        w = 8.4 * len(piece) + 14
        c.box(x, 330, w, 26, piece, color="blue", mono=True, size=10, radius=3)
        x += w + 6
    c.text(x + 4, 343, "7 tokens", size=10, ha="left", color=MUTED)
    return c


@figure("m2_wordpiece_longest_match", "WordPiece: the longest piece first",
        alt="wordpiece_word splitting Romeo with the WordPiece vocabulary: from each position "
            "it tries the longest remaining piece first, marked ## inside a word, and takes the "
            "first that is in the vocabulary: Rom, ##e, ##o. In café no piece matches at é, so "
            "the whole word becomes [UNK].",
        shows=("wordpiece_word", "Rom", "##e", "[UNK]"))
def wordpiece_longest_match() -> Canvas:
    c = Canvas(860, 320)
    word, pieces = "Romeo", ["Rom", "##e", "##o"]
    c.text(20, 20, f'wordpiece_word("{word}"): at each position, try the longest piece first',
           size=11, ha="left")
    y, start = 46, 0
    for piece in pieces:
        length = len(piece.removeprefix("##"))
        prefix = "##" if start else ""
        c.text(20, y + 13, f"from {start}:", size=10, ha="left", color=MUTED)
        x = 100
        for end in range(len(word), start + length - 1, -1):
            tried = prefix + word[start:end]
            hit = end == start + length
            w = 8.4 * len(tried) + 14
            c.box(x, y, w, 26, tried, color="green" if hit else "grey", mono=True, size=10,
                  radius=3, dashed=not hit)
            c.text(x + w + 8, y + 13, "in the vocabulary" if hit else "✗", size=10,
                   ha="left", color=INK if hit else MUTED)
            x += w + 28
        y, start = y + 40, start + length
    c.text(20, y + 16, "result:", size=10, ha="left")
    x = 100
    for piece in pieces:
        w = 8.4 * len(piece) + 14
        c.box(x, y + 3, w, 26, piece, color="blue", mono=True, size=10)
        x += w + 8
    c.text(x + 10, y + 16, "## marks a piece that continues a word", size=10, ha="left",
           color=MUTED)
    y += 62
    c.line([(20, y), (840, y)], color="#d1d5db", width=1)
    c.text(20, y + 26, 'wordpiece_word("café"):', mono=True, size=10, ha="left")
    c.text(20, y + 50, "é never occurs in the training text, so no piece fits at position 3:",
           size=10, ha="left")
    c.text(20, y + 70, "the whole word is lost, not just the é", size=10, ha="left")
    c.box(560, y + 40, 80, 30, "[UNK]", color="grey", mono=True, size=10)
    c.text(660, y + 55, "(byte-level BPE spells", size=10, ha="left", color=MUTED)
    c.text(660, y + 73, "é as two bytes instead)", size=10, ha="left", color=MUTED)
    return c
