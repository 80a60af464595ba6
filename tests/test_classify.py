"""Spam data, the classification head and its training (buildllm.classify, Meeting 6)."""

import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from buildllm.classify import (
    BagOfWords,
    SpamDataset,
    accuracy,
    add_classification_head,
    class_logits,
    classify,
    evaluate_classifier,
    fit_bag_of_words,
    last_token_index,
    load_spam,
    set_trainable,
    split_frame,
    train_classifier,
)
from buildllm.model import GPTConfig, GPTModel
from buildllm.training import lr_at

pytestmark = pytest.mark.usefixtures("one_thread")

EOT = 50256
TINY = GPTConfig(context_length=32, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0)


@pytest.fixture(scope="module")
def spam():
    return load_spam()


def tiny_classifier(seed: int = 0) -> GPTModel:
    torch.manual_seed(seed)
    return add_classification_head(GPTModel(TINY)).eval()


def frame(texts, labels=None) -> pd.DataFrame:
    return pd.DataFrame({"label": labels or [0] * len(texts), "text": texts})


# --- data -------------------------------------------------------------------------------------

def test_load_spam_keeps_every_line_and_balances_by_undersampling_ham():
    full = load_spam(balance=False)
    assert len(full) == 5574  # one message per line: quote marks must not merge lines
    assert full["label"].value_counts().to_dict() == {0: 4827, 1: 747}
    balanced = load_spam()
    assert balanced["label"].value_counts().to_dict() == {0: 747, 1: 747}
    spam_texts = full.loc[full["label"] == 1, "text"].tolist()
    assert balanced.loc[balanced["label"] == 1, "text"].tolist() == spam_texts  # all spam kept
    assert set(balanced["text"]) <= set(full["text"])


def test_split_is_reproducible_disjoint_sized_and_balanced(spam):
    train, val, test = split_frame(spam, seed=123)
    assert (len(train), len(val), len(test)) == (1045, 149, 300)
    again = split_frame(spam, seed=123)
    assert all(a.index.equals(b.index) for a, b in zip((train, val, test), again, strict=True))
    assert not split_frame(spam, seed=124)[0].index.equals(train.index)
    indices = [set(part.index) for part in (train, val, test)]
    assert not (indices[0] & indices[1] or indices[0] & indices[2] or indices[1] & indices[2])
    assert set.union(*indices) == set(spam.index)
    for part in (train, val, test):  # a shuffle of a balanced set stays near half spam
        assert 0.4 < part["label"].mean() < 0.6


@pytest.mark.parametrize("fractions", [(0.7, 0.3), (0.7, 0.2, 0.2), (0.8, 0.2, 0.0)])
def test_split_rejects_bad_fractions(spam, fractions):
    with pytest.raises(ValueError, match="fractions"):
        split_frame(spam, fractions)


def test_dataset_pads_on_the_right_with_end_of_text_to_the_longest(enc):
    texts = ["Hello", "Hello there, my friend"]
    ds = SpamDataset(frame(texts, [0, 1]), enc)
    long = enc.encode(texts[1])
    assert ds.max_length == len(long) and ds.truncated == 0
    ids, label = ds[0]
    assert ids.tolist() == enc.encode("Hello") + [EOT] * (len(long) - 1)
    assert ds[1][0].tolist() == long and label.item() == 0 and ds[1][1].item() == 1


def test_dataset_truncates_to_the_first_max_length_tokens(enc):
    text = "one two three four five six"
    ds = SpamDataset(frame([text, "one"]), enc, max_length=3)
    assert ds[0][0].tolist() == enc.encode(text)[:3]
    assert ds.truncated == 1


def test_empty_text_is_one_end_of_text_token_and_is_classified_at_position_0(enc):
    ds = SpamDataset(frame(["", "Hi there"]), enc)  # 0 and 2 tokens
    assert ds[0][0].tolist() == [EOT, EOT] and ds.max_length == 2
    assert last_token_index(ds.inputs).tolist() == [0, 1]
    model = tiny_classifier()
    with torch.no_grad():
        torch.testing.assert_close(class_logits(model, ds.inputs)[0],
                                   model(torch.tensor([[EOT]]))[0, 0])
    assert classify(model, enc, "") in ("ham", "spam")


def test_a_literal_end_of_text_in_a_message_is_text_not_padding(enc):
    ds = SpamDataset(frame(["a <|endoftext|> b"]), enc)
    assert EOT not in ds[0][0].tolist()


@pytest.mark.parametrize("max_length", [0, -3, 2.5])
def test_dataset_rejects_a_bad_max_length(enc, max_length):
    with pytest.raises(ValueError, match="max_length"):
        SpamDataset(frame(["Hi"]), enc, max_length=max_length)


# --- the head and the position it reads ---------------------------------------------------------

def test_add_classification_head_replaces_and_unties_the_output_layer():
    torch.manual_seed(0)
    model = GPTModel(TINY)
    assert model.out_head.weight is model.tok_emb.weight  # tied before
    embedding = model.tok_emb.weight.detach().clone()
    add_classification_head(model, num_classes=3)
    assert model.out_head.weight.shape == (3, 16) and model.out_head.bias is not None
    assert model(torch.tensor([[1, 2, 3]])).shape == (1, 3, 3)
    assert torch.equal(model.tok_emb.weight, embedding)
    with pytest.raises(ValueError, match="num_classes"):
        add_classification_head(model, num_classes=1)


def test_class_logits_read_the_last_real_token():
    model = tiny_classifier()
    ids = torch.tensor([[11, 12, 13, 14, EOT, EOT], [21, 22, EOT, EOT, EOT, EOT]])
    with torch.no_grad():
        logits = class_logits(model, ids)
        by_hand = torch.stack([model(ids[:1, :4])[0, 3], model(ids[1:, :2])[0, 1]])
        assert logits.shape == (2, 2)
        torch.testing.assert_close(logits, by_hand)
        # What comes after the classified position (how much padding) does not matter...
        more_padding = torch.cat([ids, torch.full((2, 5), EOT)], dim=1)
        torch.testing.assert_close(class_logits(model, more_padding), logits)
        torch.testing.assert_close(class_logits(model, ids[1:, :2]), logits[1:])
        # ...a token before it does.
        changed = ids.clone()
        changed[0, 1] = 99
        assert not torch.allclose(class_logits(model, changed)[0], logits[0])
        torch.testing.assert_close(class_logits(model, changed)[1], logits[1])


# --- what trains ------------------------------------------------------------------------------

def block_parameters(d: int) -> int:
    """One transformer block by hand: two norms, qkv with bias, out_proj, the feed-forward."""
    norms = 2 * (2 * d)
    attention = (3 * d * d + 3 * d) + (d * d + d)
    feed_forward = (d * 4 * d + 4 * d) + (4 * d * d + d)
    return norms + attention + feed_forward


@pytest.mark.parametrize("mode", ["head", "last_block", "all"])
def test_set_trainable_counts_match_a_hand_count(mode):
    d, classes = TINY.emb_dim, 2
    head = d * classes + classes
    expected = {
        "head": head,
        "last_block": head + 2 * d + block_parameters(d),
        "all": head + 2 * d + TINY.n_layers * block_parameters(d)
        + TINY.vocab_size * d + TINY.context_length * d,
    }[mode]
    model = tiny_classifier()
    assert set_trainable(model, mode) == expected
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected


def test_set_trainable_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="'last_layer'"):
        set_trainable(tiny_classifier(), "last_layer")


def test_frozen_parameters_do_not_change_in_training(enc):
    model = tiny_classifier()
    set_trainable(model, "last_block")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    ds = SpamDataset(frame(["Win a prize now", "See you at lunch"], [1, 0]), enc)
    train_classifier(model, DataLoader(ds, 2), DataLoader(ds, 2), epochs=2, lr=1e-2)
    for name, p in model.named_parameters():
        trainable = name.startswith(("out_head", "final_norm", "trf_blocks.1."))
        assert p.requires_grad == trainable, name
        assert torch.equal(p, before[name]) != trainable, name


def test_a_few_training_steps_lower_the_loss(enc, spam):
    model = tiny_classifier()
    set_trainable(model, "all")
    ds = SpamDataset(spam.iloc[::47].head(24), enc, max_length=TINY.context_length)
    loader = DataLoader(ds, batch_size=8)
    loss_before, _ = evaluate_classifier(model, loader)
    history = train_classifier(model, loader, loader, epochs=4, lr=3e-3, eval_every=4)
    loss_after, _ = evaluate_classifier(model, loader)
    assert history["step"] == [4, 8, 12] and history["examples"] == [32, 64, 96]
    assert history["train_loss"][-1] == pytest.approx(loss_after)
    assert loss_after < 0.7 * loss_before


@pytest.mark.parametrize("cosine", [False, True])
def test_the_learning_rate_is_constant_or_falls_along_a_cosine(enc, cosine):
    model = tiny_classifier()
    set_trainable(model, "head")
    ds = SpamDataset(frame(["a", "b", "c", "d", "e", "f"], [0, 1, 0, 1, 0, 1]), enc)
    loader = DataLoader(ds, batch_size=2)  # 3 steps per epoch, 6 in all
    history = train_classifier(model, loader, loader, epochs=2, lr=0.01, eval_every=1,
                               cosine=cosine)
    expected = [lr_at(step, max_lr=0.01, warmup_steps=0, total_steps=6, min_lr=0.001)
                if cosine else 0.01 for step in range(6)]
    assert history["lr"] == pytest.approx(expected)


def test_train_classifier_refuses_a_fully_frozen_model(enc):
    model = tiny_classifier().requires_grad_(False)
    loader = DataLoader(SpamDataset(frame(["Hi"]), enc), 1)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train_classifier(model, loader, loader, epochs=1, lr=1e-3)


def test_accuracy_and_classify_agree_with_the_logits(enc):
    model = tiny_classifier(seed=3)
    texts = ["Call now to claim", "ok", "See you", "FREE entry!!", ""]
    ds = SpamDataset(frame(texts, [1, 0, 0, 1, 0]), enc)
    with torch.no_grad():
        predicted = class_logits(model, ds.inputs).argmax(dim=-1)
    expected = (predicted == ds.labels).float().mean().item()
    assert accuracy(model, DataLoader(ds, batch_size=2)) == pytest.approx(expected)
    assert [classify(model, enc, t) for t in texts] == [("ham", "spam")[i] for i in predicted]
    # Longer than the context: classified on its first context_length tokens.
    long = "spam " * 100
    assert classify(model, enc, long) == classify(model, enc, enc.decode(enc.encode(long)[:32]))


# --- the baseline -----------------------------------------------------------------------------

def test_bag_of_words_features_are_presence_or_counts():
    vocab = ["free", "win", "!"]
    binary, counts = BagOfWords(vocab), BagOfWords(vocab, binary=False)
    texts = ["WIN, win! Free", "hello"]
    assert binary.features(texts).tolist() == [[1, 1, 1], [0, 0, 0]]
    assert counts.features(texts).tolist() == [[1, 2, 1], [0, 0, 0]]


def test_bag_of_words_beats_90_percent_on_the_test_split(spam):
    train, _, test = split_frame(spam)
    model = fit_bag_of_words(train)
    assert model.accuracy(test) > 0.90
