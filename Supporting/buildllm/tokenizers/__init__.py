"""Tokenizers, built in Meetings 1 and 2, all speaking one interface (`Tokenizer`).

    protocol   the interface: encode, encode_ordinary, decode, n_vocab, eot_token
    simple     Meeting 1  split on a regular expression, one id per distinct word
    char       Meeting 5  one id per character, for the first pretraining runs
    bpe        Meeting 2  byte-level BPE: pair counts, merges, encode and decode, save and load
    bpe_train  Meeting 2  learning merges, the plain way and the fast way
    gpt2       Meeting 2  GPT-2's own tokenizer, read from OpenAI's files
    show       Meeting 2  a text coloured token by token
"""

from .bpe import GPT2_SPLIT_PATTERN, BPETokenizer, PreTokenizer, merge, pair_counts
from .bpe_train import count_words, train_bpe, train_bpe_naive
from .char import CharTokenizer
from .gpt2 import gpt2_tokenizer, load_gpt2_files
from .protocol import ENDOFTEXT, Tokenizer
from .show import show_tokens
from .simple import UNK, SimpleTokenizer, split_words

__all__ = ["ENDOFTEXT", "GPT2_SPLIT_PATTERN", "UNK", "BPETokenizer", "CharTokenizer",
           "PreTokenizer", "SimpleTokenizer", "Tokenizer", "count_words", "gpt2_tokenizer",
           "load_gpt2_files", "merge", "pair_counts", "show_tokens", "split_words", "train_bpe",
           "train_bpe_naive"]
