"""What Meeting 6's notebooks 1 and 2 need for their short runs on GPT-2: a step limit and
the training time without evaluations (buildllm.classify and buildllm.instruct)."""

import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from buildllm.classify import SpamDataset, add_classification_head, set_trainable, train_classifier
from buildllm.instruct import finetune
from buildllm.model import GPTConfig, GPTModel

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = GPTConfig(context_length=64, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)
MESSAGES = ["Win a prize now", "See you at lunch", "Free ringtones, txt STOP", "Ok, later",
            "Claim your cash", "Running late, sorry"]


def spam_loader(enc, batch_size: int = 2) -> DataLoader:
    frame = pd.DataFrame({"label": [1, 0, 1, 0, 1, 0], "text": MESSAGES})
    return DataLoader(SpamDataset(frame, enc), batch_size)  # 3 batches


def tiny_classifier() -> GPTModel:
    torch.manual_seed(0)
    model = add_classification_head(GPTModel(TINY))
    set_trainable(model, "all")
    return model


def test_train_classifier_stops_after_max_steps_and_evaluates_there(enc):
    loader = spam_loader(enc)
    history = train_classifier(tiny_classifier(), loader, loader, epochs=3, lr=1e-3,
                               eval_every=2, max_steps=5)
    assert history["step"] == [2, 4, 5]
    assert history["examples"] == [4, 8, 10]


def test_train_classifier_ends_its_cosine_at_max_steps(enc):
    loader = spam_loader(enc)
    history = train_classifier(tiny_classifier(), loader, loader, epochs=3, lr=0.01,
                               eval_every=1, cosine=True, max_steps=4)
    assert history["lr"][0] == pytest.approx(0.01)
    assert history["lr"][-1] < history["lr"][0]  # falling towards its end, at step 4
    assert len(history["lr"]) == 4


def test_train_classifier_without_max_steps_runs_every_epoch(enc):
    loader = spam_loader(enc)
    history = train_classifier(tiny_classifier(), loader, loader, epochs=2, lr=1e-3,
                               eval_every=3, max_steps=None)
    assert history["step"] == [3, 6]


@pytest.mark.parametrize("max_steps", [0, -1])
def test_train_classifier_refuses_a_max_steps_below_one(enc, max_steps):
    loader = spam_loader(enc)
    with pytest.raises(ValueError, match="max_steps"):
        train_classifier(tiny_classifier(), loader, loader, epochs=1, lr=1e-3,
                         max_steps=max_steps)


def test_train_classifier_records_growing_training_seconds(enc):
    loader = spam_loader(enc)
    history = train_classifier(tiny_classifier(), loader, loader, epochs=2, lr=1e-3,
                               eval_every=2)
    assert len(history["seconds"]) == len(history["step"])
    assert 0 < history["seconds"][0] <= history["seconds"][-1]


def test_instruction_finetune_records_growing_training_seconds(enc):
    entries = [{"instruction": f"Say {word}.", "input": "", "output": word}
               for word in ["yes", "no", "maybe", "later"]]
    torch.manual_seed(0)
    history = finetune(GPTModel(TINY), entries, entries[:2], epochs=2, lr=1e-3, batch_size=2,
                       mask_prompt=True, enc=enc, eval_every=2, eval_batches=1)
    assert history["step"] == [2, 4]
    assert len(history["seconds"]) == 2
    assert 0 < history["seconds"][0] <= history["seconds"][1]
