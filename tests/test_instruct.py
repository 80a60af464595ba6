"""buildllm.instruct: prompts, the split, masked collation, the loss, training, answers."""

import json

import pytest
import torch
from stand_ins import Scripted
from torch import nn

from buildllm.data import fetch
from buildllm.instruct import (
    END_OF_TEXT,
    InstructionDataset,
    answer_loss,
    collate,
    encode_example,
    evaluate_responses,
    finetune,
    format_prompt,
    format_response,
    load_instructions,
    logits_at,
    prompt_ids,
    respond,
    respond_all,
    split_entries,
)
from buildllm.model import GPTConfig, GPTModel
from buildllm.training import batch_loss

pytestmark = pytest.mark.usefixtures("one_thread")

E = END_OF_TEXT
TINY = GPTConfig(context_length=128, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)
WITH_INPUT = {"instruction": "Rewrite in the passive voice.", "input": "The chef cooked the meal.",
              "output": "The meal was cooked by the chef."}
NO_INPUT = {"instruction": "Name a primary colour.", "input": "", "output": "Blue."}


@pytest.fixture(scope="module")
def splits():
    return load_instructions()


# --- prompts -------------------------------------------------------------------------------

def test_format_prompt_with_an_input():
    assert format_prompt(WITH_INPUT) == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nRewrite in the passive voice."
        "\n\n### Input:\nThe chef cooked the meal.")


def test_format_prompt_leaves_out_an_empty_or_missing_input():
    expected = ("Below is an instruction that describes a task. Write a response that "
                "appropriately completes the request.\n\n### Instruction:\nName a primary colour.")
    assert format_prompt(NO_INPUT) == expected
    assert format_prompt({"instruction": "Name a primary colour."}) == expected


def test_format_response_is_the_header_and_the_answer():
    assert format_response(NO_INPUT) == "\n\n### Response:\nBlue."


def test_a_missing_field_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="'instruction'"):
        format_prompt({"input": "x", "output": "y"})
    with pytest.raises(ValueError, match="'output'"):
        format_response({"instruction": "x"})


# --- data ----------------------------------------------------------------------------------

def test_load_instructions_splits_85_5_10_without_overlap(splits):
    train, val, test = splits
    assert (len(train), len(val), len(test)) == (935, 55, 110)
    keys = [json.dumps(e, sort_keys=True) for e in train + val + test]
    data = json.loads(fetch("instruction-data.json").read_text(encoding="utf-8"))
    assert sorted(keys) == sorted(json.dumps(e, sort_keys=True) for e in data)


def test_load_instructions_seed_none_is_the_books_split():
    data = json.loads(fetch("instruction-data.json").read_text(encoding="utf-8"))
    train, val, test = load_instructions(seed=None)
    assert train == data[:935] and test == data[935:1045] and val == data[1045:]


def test_split_entries_cuts_85_rest_10_and_leaves_its_input_alone():
    data = list(range(100))
    train, val, test = split_entries(data, seed=None)
    assert (train, test, val) == (data[:85], data[85:95], data[95:])
    shuffled = split_entries(data, seed=1)
    assert data == list(range(100)) and sorted(sum(shuffled, [])) == data
    assert shuffled == split_entries(data, seed=1) != (train, val, test)


def test_load_instructions_shuffles_reproducibly(splits):
    assert load_instructions(seed=123) == splits
    assert load_instructions(seed=7)[0] != splits[0]


def test_encode_example_is_the_prompt_tokens_then_the_answer_tokens(enc):
    ids, n_prompt = encode_example(WITH_INPUT, enc)
    assert ids[:n_prompt] == prompt_ids(WITH_INPUT, enc)
    assert enc.decode(ids[:n_prompt]) == format_prompt(WITH_INPUT) + "\n\n### Response:\n"
    assert enc.decode(ids[n_prompt:]) == WITH_INPUT["output"]


def test_encoding_in_pieces_gives_the_tokens_of_the_whole_text(enc, splits):
    # the prompt is encoded apart from the answer so its length is exact; on every entry of
    # the data that changes nothing: the tokens are those of the whole text encoded at once
    for entry in sum(splits, []):
        ids, _ = encode_example(entry, enc)
        assert ids == enc.encode(format_prompt(entry) + format_response(entry)), entry


def test_instruction_dataset_items_are_ids_and_prompt_length(enc):
    data = InstructionDataset([WITH_INPUT, NO_INPUT], enc)
    assert len(data) == 2
    assert data[1] == encode_example(NO_INPUT, enc)


# --- collate -------------------------------------------------------------------------------

BATCH = [([1, 2, 3, 4, 5], 3), ([6, 7], 1), ([8, 9, 10], 0)]


def test_collate_pads_to_the_longest_and_keeps_only_the_first_end_of_text():
    inputs, targets = collate(BATCH)
    assert inputs.dtype == targets.dtype == torch.long
    assert inputs.tolist() == [[1, 2, 3, 4, 5], [6, 7, E, E, E], [8, 9, 10, E, E]]
    assert targets.tolist() == [[2, 3, 4, 5, E], [7, E, -100, -100, -100],
                                [9, 10, E, -100, -100]]


def test_collate_mask_prompt_ignores_the_targets_that_are_prompt_tokens():
    _, targets = collate(BATCH, mask_prompt=True)
    # row 0: tokens 1 2 3 are the prompt, so the targets 2 and 3 go; 4 (the answer) stays
    assert targets.tolist() == [[-100, -100, 4, 5, E], [7, E, -100, -100, -100],
                                [9, 10, E, -100, -100]]


def test_collate_max_length_cuts_inputs_and_targets():
    inputs, targets = collate(BATCH, max_length=3)
    assert inputs.tolist() == [[1, 2, 3], [6, 7, E], [8, 9, 10]]
    assert targets.tolist() == [[2, 3, 4], [7, E, -100], [9, 10, E]]


def test_collate_uses_the_given_pad_id_and_ignore_index():
    inputs, targets = collate([([5, 6], 0), ([7], 0)], pad_id=0, ignore_index=-1)
    assert inputs.tolist() == [[5, 6], [7, 0]]
    assert targets.tolist() == [[6, 0], [0, -1]]


def test_collate_width_is_the_longest_example_of_each_batch():
    assert collate([([1] * 4, 0)])[0].shape == (1, 4)
    assert collate([([1] * 4, 0), ([1] * 9, 0)])[0].shape == (2, 9)


def test_masked_targets_are_exactly_the_answer_and_one_end_of_text(enc):
    entries = [WITH_INPUT, NO_INPUT]
    _, targets = collate([encode_example(e, enc) for e in entries], mask_prompt=True)
    for entry, row in zip(entries, targets, strict=True):
        kept = row[row != -100].tolist()
        assert kept[-1] == E and E not in kept[:-1]
        assert enc.decode(kept[:-1]) == entry["output"]


@pytest.mark.parametrize(("batch", "kwargs", "message"), [
    ([], {}, "empty batch"),
    ([([], 0)], {}, "no tokens"),
    ([([1, 2], 3)], {}, "prompt length 3"),
    ([([1, 2], -1)], {}, "prompt length -1"),
    ([([1, 2], 0)], {"max_length": 0}, "max_length must be at least 1"),
])
def test_collate_refuses_bad_input(batch, kwargs, message):
    with pytest.raises(ValueError, match=message):
        collate(batch, **kwargs)


# --- the loss and training -----------------------------------------------------------------

def test_answer_loss_equals_cross_entropy_over_every_position(enc):
    torch.manual_seed(0)
    model = GPTModel(TINY)
    inputs, targets = collate([encode_example(e, enc) for e in (WITH_INPUT, NO_INPUT)],
                              mask_prompt=True)
    ours = answer_loss(model, inputs, targets)
    (ours_grad,) = torch.autograd.grad(ours, model.tok_emb.weight)
    full = batch_loss(model, inputs, targets)  # logits everywhere, -100 skipped by F.cross_entropy
    (full_grad,) = torch.autograd.grad(full, model.tok_emb.weight)
    torch.testing.assert_close(ours, full)
    torch.testing.assert_close(ours_grad, full_grad)
    assert model(inputs).shape == (*inputs.shape, TINY.vocab_size)  # all logits again


def test_logits_at_selects_from_the_full_output_of_a_model_without_out_head():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 5))
    inputs, keep = torch.tensor([[1, 2, 3]]), torch.tensor([[True, False, True]])
    torch.testing.assert_close(logits_at(model, inputs, keep), model(inputs)[0, [0, 2]])


def test_answer_loss_refuses_a_batch_with_nothing_to_learn():
    model = GPTModel(TINY)
    with pytest.raises(ValueError, match="every target"):
        answer_loss(model, torch.zeros(1, 3, dtype=torch.long), torch.full((1, 3), -100))


@pytest.mark.parametrize("mask_prompt", [False, True])
def test_finetune_lowers_the_loss_and_records_its_history(enc, splits, mask_prompt):
    torch.manual_seed(0)
    model = GPTModel(TINY)
    train, val, _ = splits
    history = finetune(model, train[:8], val[:4], epochs=3, lr=1e-2, batch_size=4,
                       mask_prompt=mask_prompt, enc=enc, eval_every=2, eval_batches=None)
    assert history["step"] == [2, 4, 6]
    assert history["epoch"] == [1.0, 2.0, 3.0]
    assert history["tokens"][0] > 0
    assert history["tokens"] == sorted(set(history["tokens"]))
    assert len(history["train_loss"]) == len(history["val_loss"]) == 3
    assert history["train_loss"][-1] < history["train_loss"][0] - 0.5


def test_finetune_trains_only_what_requires_grad(enc, splits):
    torch.manual_seed(0)
    model = GPTModel(TINY)
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("trf_blocks")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    train, val, _ = splits
    finetune(model, train[:4], val[:4], epochs=1, lr=1e-2, batch_size=4, mask_prompt=True,
             enc=enc)
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) != name.startswith("trf_blocks"), name


def test_finetune_refuses_too_little_data(enc, splits):
    train, val, _ = splits
    with pytest.raises(ValueError, match="3 training entries make no full batch of 4"):
        finetune(GPTModel(TINY), train[:3], val[:4], epochs=1, lr=1e-3, batch_size=4,
                 mask_prompt=True, enc=enc)


# --- answers -------------------------------------------------------------------------------


def test_respond_stops_at_end_of_text(enc):
    answer = enc.encode(" Blue.")
    model = Scripted(answer + [E] + enc.encode(" and then more"))
    assert respond(model, enc, NO_INPUT, max_new_tokens=20) == "Blue."
    assert model.calls == len(answer) + 1  # no step after the end-of-text


def test_respond_cuts_where_a_new_section_begins(enc):
    model = Scripted(enc.encode("Blue.\n\n### Instruction:\nName another.") + [E])
    assert respond(model, enc, NO_INPUT, max_new_tokens=30) == "Blue."


def test_respond_gives_up_after_max_new_tokens(enc):
    script = enc.encode(" one two three four five six seven eight")
    assert respond(Scripted(script), enc, NO_INPUT, max_new_tokens=3) == "one two three"


def test_respond_sees_the_prompt_and_header_as_trained(enc):
    model = Scripted([E])
    respond(model, enc, WITH_INPUT)
    assert model.prompt_length == len(prompt_ids(WITH_INPUT, enc))


def test_evaluate_responses_scores_each_answer(enc):
    entries = [NO_INPUT, {**NO_INPUT, "output": "Red."}, {**NO_INPUT, "output": "Blue, I think."}]
    result = evaluate_responses(Scripted(enc.encode(" Blue.") + [E]), enc, entries,
                                progress=False)
    assert result["responses"] == ["Blue."] * 3
    # ROUGE-L: 1, 0, and "blue" against "blue i think": precision 1, recall 1/3, F1 1/2
    assert result["rouge_l"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert result["token_f1"] == pytest.approx((1 + 0 + 0.5) / 3)


class Echo(nn.Module):
    """A stand-in model that answers each row with its instruction's first token, then stops.

    Token 24 of every prompt is the instruction's first (the preamble and the instruction
    header take 24), so the answer shows which prompt a row of the batch came from. Rows are
    padded on the left, so it counts from each row's first real token.
    """

    def __init__(self):
        super().__init__()
        self.cfg = GPTConfig(context_length=256, emb_dim=8, n_heads=1, n_layers=1)
        self.anchor = nn.Parameter(torch.zeros(1))
        self.prefills = []  # (batch size, prompt length) of each generate call

    def forward(self, ids, cache=None, attention_mask=None):
        start = 0 if cache is None else cache.length
        if start == 0:
            first = ids[torch.arange(ids.shape[0]), (~attention_mask).sum(dim=1) + 24]
            self.first, self.prompt_length = first, ids.shape[1]
            self.prefills.append(tuple(ids.shape))
        if cache is not None:
            cache.length += ids.shape[1]
        step = start + ids.shape[1] - self.prompt_length  # tokens generated before this one
        logits = torch.zeros(ids.shape[0], ids.shape[1], self.cfg.vocab_size)
        token = self.first if step == 0 else torch.full_like(self.first, E)
        logits[torch.arange(ids.shape[0]), -1, token] = 1.0
        return logits


def test_respond_all_batches_prompts_of_any_length_and_keeps_the_order(enc):
    entries = [{"instruction": word, "input": "", "output": ""} for word in
               ("Magenta", "Red", "Green", "Blue")]
    model = Echo()
    assert respond_all(model, enc, entries, max_new_tokens=5, progress=False) == [
        "Mag", "Red", "Green", "Blue"]  # "Magenta" is two tokens, and the echo is the first
    lengths = [len(prompt_ids(e, enc)) for e in entries]
    assert lengths[0] == lengths[1] + 1 and lengths[1] == lengths[2] == lengths[3]
    assert model.prefills == [(4, lengths[0])]  # one batch, padded to the longest
    model.prefills.clear()
    respond_all(model, enc, entries, max_new_tokens=5, batch_size=2, progress=False)
    assert model.prefills == [(2, lengths[1]), (2, lengths[0])]  # shortest first: little padding


@pytest.mark.parametrize("sampling", [{}, {"temperature": 1.0, "top_k": 50, "seed": 3}])
def test_respond_all_gives_the_greedy_or_seeded_answers_of_respond(enc, splits, sampling):
    torch.manual_seed(0)
    model = GPTModel(TINY)
    entries = splits[2][:12]
    assert respond_all(model, enc, entries, max_new_tokens=6, progress=False, **sampling) == [
        respond(model, enc, e, max_new_tokens=6, **sampling) for e in entries]


def test_respond_all_refuses_a_batch_size_below_one(enc):
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        respond_all(Echo(), enc, [NO_INPUT], batch_size=0)
