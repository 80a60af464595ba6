"""Classification fine-tuning (Meeting 6): SMS spam, a two-class head, and a baseline.

A pretrained GPT becomes a classifier by swapping its output layer (one logit per vocabulary
entry) for a small one (one logit per class) and training on labelled messages:

    >>> train, val, test = split_frame(load_spam())          # 1045 / 149 / 300 messages
    >>> enc = gpt2_encoding()
    >>> train_ds = SpamDataset(train, enc)                    # padded to the longest message
    >>> model = add_classification_head(gpt2_or_course_model("124M")[0])
    >>> set_trainable(model, "last_block")                    # head + last block + final norm
    >>> history = train_classifier(model, train_loader, val_loader, epochs=5, lr=5e-5)
    >>> classify(model, enc, "You have WON a £1000 prize! Call now")   # "spam" or "ham"

Which position is read. Causal attention lets each position see only itself and the tokens
before it, so only the last token's vector has seen the whole message. Messages are padded on
the right with end-of-text tokens to make a batch rectangular. The book reads the very last
position, which then sits after the padding: it still works, but the prediction depends on how
much padding a message got, and the model must learn to read through it. We read the *last
real token* instead, the last one that is not padding. Then the answer is the same however
long the batch is padded (tests/test_classify.py checks this), `classify` needs no padding at
all, and the padding columns after the batch's longest message can be cut off before the
model runs, so a batch of short messages costs a fraction of a full-length one.

The baseline, `BagOfWords`, is logistic regression on which words a message contains. It
trains in seconds and tells us what accuracy a GPT has to beat to be worth its cost.
"""

from __future__ import annotations

import csv
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import islice

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from .inference import pad_ids
from .instruct import END_OF_TEXT  # GPT-2's <|endoftext|>, our padding token
from .model import GPTModel, count_parameters
from .training import FitState, cycle, fit, param_groups, warmup_cosine
from .utils import eval_mode

__all__ = ["LABELS", "BagOfWords", "SpamDataset", "accuracy", "add_classification_head",
           "class_logits", "classify", "evaluate_classifier", "fit_bag_of_words",
           "last_token_index", "load_spam", "message_words", "set_trainable", "split_frame",
           "train_classifier"]

LABELS = ("ham", "spam")  # label 0 and label 1; "ham" is the dataset's word for not spam


def load_spam(balance: bool = True, seed: int = 123) -> pd.DataFrame:
    """The SMS Spam Collection as columns `label` (0 ham, 1 spam) and `text`, in file order.

    The file has 4,827 ham and 747 spam messages. With `balance`, a random 747 of the ham
    (chosen with `seed`) are kept, so a classifier cannot score 87% by always saying "ham".
    Each line is `label<TAB>message`; messages contain stray quote marks, so quoting is off
    (with pandas' default, a quote swallows the lines up to the next one), and a message that
    reads "NA" stays text instead of becoming a missing value.
    """
    from .data import fetch

    df = pd.read_csv(fetch("SMSSpamCollection"), sep="\t", header=None, names=["label", "text"],
                     quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)
    if unknown := set(df["label"]) - set(LABELS):
        raise ValueError(f"unexpected labels {sorted(unknown)} in SMSSpamCollection")
    df["label"] = (df["label"] == "spam").astype("int64")
    if balance:
        spam = df.index[df["label"] == 1]
        ham = df[df["label"] == 0].sample(n=len(spam), random_state=seed).index
        df = df.loc[sorted(ham.union(spam))]
    return df.reset_index(drop=True)


def split_frame(df: pd.DataFrame, fractions: Sequence[float] = (0.7, 0.1, 0.2),
                seed: int = 123) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Shuffle the rows with `seed` and cut them into training, validation and test parts.

    The first two parts get int(fraction · rows) rows each and the test part the rest, so
    1,494 messages split 1045 / 149 / 300. Each part keeps `df`'s index, so a row can be
    traced back and the parts checked to be disjoint.
    """
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be three positive numbers adding up to 1, "
                         f"got {tuple(fractions)}")
    shuffled = df.sample(frac=1, random_state=seed)
    n_train, n_val = int(len(df) * fractions[0]), int(len(df) * fractions[1])
    return (shuffled.iloc[:n_train], shuffled.iloc[n_train : n_train + n_val],
            shuffled.iloc[n_train + n_val :])


def _encode(enc, text: str, pad_id: int) -> list[int]:
    """Token ids of `text`; an empty message becomes one end-of-text token.

    `encode_ordinary` treats a literal "<|endoftext|>" in a message as plain text, so the
    padding id never appears inside a message and padding can be told apart from text.
    """
    return enc.encode_ordinary(text) or [pad_id]


class SpamDataset(TensorDataset):
    """Messages as token ids padded on the right to one length, with their labels.

    `max_length` defaults to the longest message in `df`; pass the training set's
    `max_length` to the validation and test sets. A longer message keeps its first
    `max_length` tokens (how many were cut is in `truncated`). Items are
    `(input_ids LongTensor[max_length], label LongTensor[])`.
    """

    def __init__(self, df: pd.DataFrame, enc, max_length: int | None = None,
                 pad_id: int = END_OF_TEXT):
        if not {"label", "text"} <= set(df.columns):
            raise ValueError(f"df needs columns 'label' and 'text', it has {list(df.columns)}")
        encoded = [_encode(enc, text, pad_id) for text in df["text"]]
        if max_length is None:
            max_length = max((len(ids) for ids in encoded), default=1)
        if not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be a positive integer, got {max_length!r}")
        self.max_length, self.pad_id = max_length, pad_id
        self.truncated = sum(len(ids) > max_length for ids in encoded)
        self.inputs = pad_ids([ids[:max_length] for ids in encoded], pad_id, width=max_length)[0]
        self.labels = torch.tensor(df["label"].to_numpy(), dtype=torch.long)
        super().__init__(self.inputs, self.labels)


def add_classification_head(model: GPTModel, num_classes: int = 2) -> GPTModel:
    """Replace `model.out_head` by a fresh `nn.Linear(emb_dim, num_classes)`, in place.

    The new layer has its own weights, so the tie between the old head and the token
    embedding is gone; the embedding itself is untouched.
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer of at least 2, got {num_classes!r}")
    like = model.tok_emb.weight
    model.out_head = nn.Linear(model.cfg.emb_dim, num_classes).to(like.device, like.dtype)
    return model


def set_trainable(model: GPTModel, mode: str) -> int:
    """Freeze the model, then unfreeze the part `mode` names; returns the trainable count.

    "head":        only `out_head`, a linear model on the pretrained features;
    "last_block":  `out_head`, `final_norm` (it scales what the head reads) and the last
                   transformer block, the book's choice;
    "all":         every parameter.
    """
    parts = {"head": [model.out_head],
             "last_block": [model.out_head, model.final_norm, model.trf_blocks[-1]],
             "all": [model]}
    if mode not in parts:
        raise ValueError(f"mode must be one of {list(parts)}, got {mode!r}")
    model.requires_grad_(False)
    for part in parts[mode]:
        part.requires_grad_(True)
    return count_parameters(model)


def last_token_index(input_ids: torch.Tensor, pad_id: int = END_OF_TEXT) -> torch.Tensor:
    """Per row, the position of the last token that is not padding (0 if all are padding).

    >>> last_token_index(torch.tensor([[5, 6, 50256], [7, 50256, 50256]]))
    tensor([1, 0])
    """
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    return torch.where(input_ids != pad_id, positions, 0).amax(dim=1)


def class_logits(model: GPTModel, input_ids: torch.Tensor,
                 pad_id: int = END_OF_TEXT) -> torch.Tensor:
    """The logits (batch, num_classes) at each message's last real token.

    Padding columns after the longest message in the batch are dropped first: with causal
    attention no position sees a later one, so they cannot change what we read.
    """
    if input_ids.ndim != 2 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must have shape (batch, tokens), got {tuple(input_ids.shape)}")
    last = last_token_index(input_ids, pad_id)  # (batch,)
    logits = model(input_ids[:, : int(last.max()) + 1])  # (batch, tokens, num_classes)
    return logits[torch.arange(len(input_ids), device=logits.device), last]


@torch.no_grad()
def evaluate_classifier(model: GPTModel, loader: Iterable,
                        max_batches: int | None = None) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy over (at most `max_batches` of) `loader`,
    without dropout."""
    device = next(model.parameters()).device
    loss, correct, seen = 0.0, 0, 0
    with eval_mode(model):
        for input_ids, labels in islice(loader, max_batches):
            logits = class_logits(model, input_ids.to(device))
            labels = labels.to(device)
            loss += F.cross_entropy(logits.float(), labels, reduction="sum").item()
            correct += (logits.argmax(dim=-1) == labels).sum().item()
            seen += len(labels)
    if seen == 0:
        raise ValueError("no examples to evaluate: the loader is empty")
    return loss / seen, correct / seen


def accuracy(model: GPTModel, loader: Iterable, max_batches: int | None = None) -> float:
    """The fraction of messages in (at most `max_batches` of) `loader` classified correctly."""
    return evaluate_classifier(model, loader, max_batches)[1]


@torch.no_grad()
def classify(model: GPTModel, enc, text: str, max_length: int | None = None,
             labels: Sequence[str] = LABELS) -> str:
    """The label of one message: "ham" or "spam" for the two-class spam model.

    The message keeps its first `max_length` tokens (default: the model's context), as in
    training. No padding is needed, since the last real token is read either way.
    """
    limit = min(model.cfg.context_length, math.inf if max_length is None else max_length)
    if limit < 1:
        raise ValueError(f"max_length must be at least 1, got {max_length}")
    device = next(model.parameters()).device
    ids = torch.tensor([_encode(enc, text, END_OF_TEXT)[:limit]], device=device)
    with eval_mode(model):
        return labels[class_logits(model, ids).argmax(dim=-1).item()]


def train_classifier(model: GPTModel, train_loader: Iterable, val_loader: Iterable, *,
                     epochs: int, lr: float, weight_decay: float = 0.1, eval_every: int = 50,
                     eval_batches: int | None = 5, cosine: bool = False,
                     max_steps: int | None = None, on_eval=None) -> dict[str, list]:
    """Fine-tune the trainable parameters with AdamW on the cross entropy of `class_logits`.

    Every `eval_every` steps, and after the last, the loss and accuracy on `eval_batches`
    batches of each loader are recorded (all batches when None). Matrices get weight decay,
    biases and norms do not (`buildllm.training.param_groups`). With `cosine`, the learning
    rate falls along a cosine from `lr` to a tenth of it at the last step: the last updates
    are small, so where training ends matters less. `max_steps` stops training early, after
    that many steps (a short run; the cosine then ends there). Returns the history: `step`,
    `examples` seen, the `lr` of the step just taken, `train_loss`, `val_loss`, `train_acc`,
    `val_acc`, and `seconds` spent training so far, evaluations left out. `on_eval(history)`,
    if given, runs after each evaluation. The loop is `buildllm.training.fit`.
    """
    if epochs < 1 or lr <= 0 or eval_every < 1 or (max_steps is not None and max_steps < 1):
        raise ValueError(f"need epochs >= 1, lr > 0, eval_every >= 1 and max_steps >= 1 (or None); "
                         f"got epochs={epochs}, lr={lr}, eval_every={eval_every}, "
                         f"max_steps={max_steps}")
    if count_parameters(model) == 0:
        raise ValueError("the model has no trainable parameters: call set_trainable first")
    device = next(model.parameters()).device
    # The fused update walks each weight once instead of several times: the same result,
    # several times quicker on a CPU, where updating the 50,257-row embedding dominates a step.
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr,
                                  fused=device.type in ("cpu", "cuda"))
    total = min(epochs * len(train_loader), max_steps or math.inf)

    def step_fn(batch) -> int:
        input_ids, labels = batch
        logits = class_logits(model, input_ids.to(device))
        F.cross_entropy(logits.float(), labels.to(device)).backward()
        return len(labels)

    def evaluate_fn(state: FitState) -> dict:
        train_loss, train_acc = evaluate_classifier(model, train_loader, eval_batches)
        val_loss, val_acc = evaluate_classifier(model, val_loader, eval_batches)
        return {"examples": state.seen, "lr": state.lr, "train_loss": train_loss,
                "val_loss": val_loss, "train_acc": train_acc, "val_acc": val_acc,
                "seconds": state.seconds}

    return fit(model, step_fn, cycle(train_loader), steps=total, optimizer=optimizer,
               scheduler=warmup_cosine(optimizer, 0, total) if cosine else None,
               evaluate_fn=evaluate_fn, eval_every=eval_every, desc="fine-tuning",
               postfix={"train_acc": "{train_acc:.2f}", "val_acc": "{val_acc:.2f}"},
               on_eval=on_eval and (lambda state: on_eval(state.history)))


def message_words(text: str) -> list[str]:
    """Lowercase words and single symbols: "WIN £100!" -> ['win', '£', '100', '!'].

    Unlike `buildllm.metrics.words`, symbols count: "£" and "!" are among spam's best clues.
    """
    return re.findall(r"[a-z0-9']+|[^\sa-z0-9']", text.lower())


class BagOfWords(nn.Module):
    """Logistic regression on word features: one weight per (word, class), plus a bias.

    A message becomes a vector with one entry per vocabulary word: 1 if the word occurs
    (`binary`) or how often it occurs. Word order is thrown away; words not in the
    vocabulary are ignored.
    """

    def __init__(self, vocab: Sequence[str], num_classes: int = 2, binary: bool = True):
        super().__init__()
        self.index = {word: i for i, word in enumerate(vocab)}
        self.binary = binary
        self.linear = nn.Linear(len(self.index), num_classes)

    def features(self, texts: Iterable[str]) -> torch.Tensor:
        """(messages, vocabulary) word counts, or 0/1 presence when `binary`."""
        rows = [Counter(i for w in message_words(t) if (i := self.index.get(w)) is not None)
                for t in texts]
        x = torch.zeros(len(rows), len(self.index))
        for r, counts in enumerate(rows):
            if counts:
                x[r, list(counts)] = torch.tensor(list(counts.values()), dtype=torch.float)
        return x.clamp_(max=1) if self.binary else x

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)

    @torch.no_grad()
    def predict(self, texts: Iterable[str]) -> torch.Tensor:
        """The predicted label of each message."""
        return self(self.features(texts)).argmax(dim=-1)

    def accuracy(self, df: pd.DataFrame) -> float:
        """The fraction of `df`'s messages whose `label` it predicts."""
        labels = torch.tensor(df["label"].to_numpy())
        return (self.predict(df["text"]) == labels).float().mean().item()


def fit_bag_of_words(train_df: pd.DataFrame, *, min_count: int = 1, binary: bool = True,
                     steps: int = 200, lr: float = 1.0, seed: int = 123) -> BagOfWords:
    """Train a `BagOfWords` on `train_df`; the vocabulary is its words seen `min_count` times.

    The training set is small enough to use whole, so each step is one batch of all of it,
    and the optimizer is plain gradient descent. Each weight then moves in proportion to its
    gradient, so a word seen once keeps a small weight. (Adam moves every weight at about the
    same speed however rare its word, and gives one-off phone numbers the weight of "free".)
    """
    if min_count < 1 or steps < 1 or lr <= 0:
        raise ValueError(f"need min_count >= 1, steps >= 1 and lr > 0; got min_count={min_count}, "
                         f"steps={steps}, lr={lr}")
    counts = Counter(w for text in train_df["text"] for w in message_words(text))
    vocab = sorted(w for w, c in counts.items() if c >= min_count)
    if not vocab:
        raise ValueError(f"no word occurs {min_count} times in the training messages")
    torch.manual_seed(seed)
    model = BagOfWords(vocab, num_classes=2, binary=binary)
    x = model.features(train_df["text"])
    y = torch.tensor(train_df["label"].to_numpy(), dtype=torch.long)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()
