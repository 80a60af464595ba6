"""DPO: the loss against a hand computation, sequence log-probabilities against a slow loop,
the masks, the data, and short training runs on a tiny model."""

import copy
import math

import pytest
import torch

from buildllm.data import gpt2_encoding
from buildllm.dpo import (
    PreferenceDataset,
    collate_preferences,
    dpo_loss,
    evaluate_dpo,
    frozen_copy,
    load_preferences,
    sequence_logprob,
    train_dpo,
)
from buildllm.instruct import load_instructions, prompt_ids
from buildllm.model import GPTConfig, GPTModel

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB = 97
TINY = GPTConfig(vocab_size=VOCAB, context_length=32, emb_dim=16, n_heads=2, n_layers=2,
                 drop_rate=0.0)


def tiny_model(seed: int = 0) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(TINY)


def random_pairs(n: int, seed: int = 1) -> list[dict]:
    """Pairs of random tokens: prompts of 3-6 tokens, answers of 2-5 (pad id 0 never used)."""
    g = torch.Generator().manual_seed(seed)

    def ids(lo, hi):
        length = int(torch.randint(lo, hi + 1, (), generator=g))
        return torch.randint(1, VOCAB, (length,), generator=g).tolist()

    return [{"prompt": ids(3, 6), "chosen": ids(2, 5), "rejected": ids(2, 5)} for _ in range(n)]


# --- the loss ---------------------------------------------------------------------------------

def test_dpo_loss_matches_a_hand_computation():
    pi_c, pi_r, ref_c, ref_r = [-12.0, -7.5], [-15.0, -6.0], [-13.0, -7.0], [-14.0, -6.5]
    beta = 0.5
    losses, chosen, rejected = [], [], []
    for i in range(2):
        z = beta * ((pi_c[i] - ref_c[i]) - (pi_r[i] - ref_r[i]))
        losses.append(-math.log(1 / (1 + math.exp(-z))))
        chosen.append(beta * (pi_c[i] - ref_c[i]))
        rejected.append(beta * (pi_r[i] - ref_r[i]))
    loss, rc, rr = dpo_loss(*(torch.tensor(v) for v in (pi_c, pi_r, ref_c, ref_r)), beta=beta)
    assert loss.item() == pytest.approx(sum(losses) / 2, rel=1e-6)
    assert rc.tolist() == pytest.approx(chosen)
    assert rr.tolist() == pytest.approx(rejected)


def test_dpo_loss_is_finite_for_a_huge_margin():
    big = torch.tensor([1e4])
    loss, _, _ = dpo_loss(big, -big, torch.zeros(1), torch.zeros(1), beta=1.0)
    assert loss.item() == 0.0
    loss, _, _ = dpo_loss(-big, big, torch.zeros(1), torch.zeros(1), beta=1.0)
    assert loss.item() == pytest.approx(2e4)


def test_dpo_loss_rejects_bad_beta_and_mismatched_shapes():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(x, x, x, x, beta=0.0)
    with pytest.raises(ValueError, match="shape"):
        dpo_loss(x, x, x, torch.zeros(2))


# --- sequence log-probabilities ---------------------------------------------------------------

def slow_sequence_logprob(model, ids, mask):
    """Each scored token on its own: the model reads the tokens before it, nothing else."""
    totals = []
    for b in range(ids.shape[0]):
        total = 0.0
        for t in range(1, ids.shape[1]):
            if mask[b, t]:
                logits = model(ids[b : b + 1, :t])[0, -1]
                total += torch.log_softmax(logits, dim=-1)[ids[b, t]].item()
        totals.append(total)
    return torch.tensor(totals)


@torch.no_grad()
def test_sequence_logprob_matches_a_slow_loop_over_positions():
    model = tiny_model().eval()
    batch = collate_preferences(random_pairs(4), pad_id=0)
    ids, mask = batch["chosen"], batch["chosen_mask"]
    expected = slow_sequence_logprob(model, ids, mask)
    torch.testing.assert_close(sequence_logprob(model, ids, mask), expected, atol=1e-4, rtol=0)
    mean = sequence_logprob(model, ids, mask, reduction="mean")
    torch.testing.assert_close(mean, expected / mask.sum(dim=1), atol=1e-5, rtol=0)


class FixedLogits(torch.nn.Module):
    """A 'model' whose logits do not depend on its input: only the targets can matter."""

    def __init__(self, length: int):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(length, VOCAB))

    def forward(self, ids):
        return self.table[: ids.shape[1]].expand(ids.shape[0], -1, -1)


@torch.no_grad()
def test_prompt_and_padding_targets_do_not_count_but_answer_targets_do():
    torch.manual_seed(0)
    pairs = [{"prompt": [5, 6, 7, 8], "chosen": [9, 10], "rejected": [11, 12, 13, 14, 15]}]
    batch = collate_preferences(pairs, pad_id=0)
    ids, mask = batch["chosen"], batch["chosen_mask"]  # 4 prompt, 2 answer, 3 padding tokens
    assert mask.tolist() == [[False] * 4 + [True] * 2 + [False] * 3]
    model = FixedLogits(ids.shape[1])
    before = sequence_logprob(model, ids, mask)
    for t, scored in [(1, False), (3, False), (4, True), (5, True), (6, False), (8, False)]:
        changed = ids.clone()
        changed[0, t] = 42
        after = sequence_logprob(model, changed, mask)
        assert (after != before).item() == scored, f"token {t}"


@torch.no_grad()
def test_padding_after_the_answer_does_not_change_a_real_models_logprob():
    model = tiny_model().eval()
    pairs = [{"prompt": [5, 6, 7], "chosen": [9, 10], "rejected": [11, 12, 13, 14, 15, 16]}]
    batch = collate_preferences(pairs, pad_id=0)
    ids, mask = batch["chosen"], batch["chosen_mask"]
    before = sequence_logprob(model, ids, mask)
    assert ids.shape[1] == 9 and not mask[0, 5:].any()  # tokens 5 to 8 pad the chosen row
    changed = ids.clone()
    changed[0, 5:] = 77
    assert torch.equal(sequence_logprob(model, changed, mask), before)


def test_sequence_logprob_rejects_masks_it_cannot_score():
    model = tiny_model()
    ids = torch.ones(2, 5, dtype=torch.long)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, 0] = True
    with pytest.raises(ValueError, match="token 0"):
        sequence_logprob(model, ids, mask)
    mask[0, 0], mask[0, 2] = False, True
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        sequence_logprob(model, ids, mask)
    with pytest.raises(ValueError, match="reduction"):
        sequence_logprob(model, ids, mask, reduction="max")


# --- batches ------------------------------------------------------------------------------------

def test_collate_pads_chosen_and_rejected_to_one_length_and_masks_only_answers():
    pairs = [{"prompt": [1, 2], "chosen": [3], "rejected": [4, 5, 6]},
             {"prompt": [7, 8, 9], "chosen": [10, 11], "rejected": [12]}]
    out = collate_preferences(pairs, pad_id=0)
    assert out["chosen"].tolist() == [[1, 2, 3, 0, 0], [7, 8, 9, 10, 11]]
    assert out["rejected"].tolist() == [[1, 2, 4, 5, 6], [7, 8, 9, 12, 0]]
    assert out["chosen_mask"].int().tolist() == [[0, 0, 1, 0, 0], [0, 0, 0, 1, 1]]
    assert out["rejected_mask"].int().tolist() == [[0, 0, 1, 1, 1], [0, 0, 0, 1, 0]]


def test_collate_truncates_to_max_length_and_refuses_to_cut_a_whole_answer():
    pairs = [{"prompt": [1, 2], "chosen": [3, 4, 5], "rejected": [6]}]
    out = collate_preferences(pairs, pad_id=0, max_length=3)
    assert out["chosen"].tolist() == [[1, 2, 3]]
    assert out["chosen_mask"].int().tolist() == [[0, 0, 1]]
    with pytest.raises(ValueError, match="max_length=2"):
        collate_preferences(pairs, max_length=2)


def test_preference_dataset_uses_the_instruction_prompt_and_ends_answers_in_endoftext():
    enc = gpt2_encoding()
    entry = {"instruction": "Name a colour.", "input": "", "output": "Blue.",
             "chosen": "Blue, thank you for asking.", "rejected": "Blue, obviously."}
    item = PreferenceDataset([entry], enc)[0]
    assert item["prompt"] == prompt_ids(entry, enc)
    for kind in ("chosen", "rejected"):
        assert item[kind][-1] == 50256
        assert enc.decode(item[kind][:-1]) == entry[kind]


def test_load_preferences_splits_the_prompts_as_load_instructions_does():
    prefs = load_preferences()
    assert [len(p) for p in prefs] == [930, 55, 109]
    for part, instructions in zip(prefs, load_instructions(), strict=True):
        allowed = {(e["instruction"], e["input"]) for e in instructions}
        assert {(e["instruction"], e["input"]) for e in part} <= allowed
        assert all(e["chosen"] != e["rejected"] for e in part)


# --- training ------------------------------------------------------------------------------------

def training_setup():
    policy = tiny_model()
    reference = frozen_copy(policy)
    loader = [collate_preferences(random_pairs(4), pad_id=0)]  # one fixed batch
    return policy, reference, loader


def test_at_the_start_the_loss_is_ln2_and_the_rewards_are_zero():
    policy, reference, loader = training_setup()
    res = evaluate_dpo(policy, reference, loader, beta=0.1)
    assert res["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert res["chosen_reward"] == 0.0 and res["rejected_reward"] == 0.0 and res["margin"] == 0.0


def test_a_few_dpo_steps_raise_the_margin_on_the_training_batch():
    policy, reference, loader = training_setup()
    history = train_dpo(policy, reference, loader, loader, steps=8, lr=1e-2, beta=0.5,
                        eval_every=4, eval_batches=None)
    assert history["step"] == [0, 4, 8]
    assert history["train_margin"][0] == 0.0
    assert history["train_margin"][-1] > 1.0
    assert history["train_loss"][-1] < math.log(2) - 0.2
    assert history["train_accuracy"][-1] == 1.0


def test_frozen_copy_is_a_separate_model_in_eval_mode_with_no_trainable_weights():
    policy = tiny_model().train()
    reference = frozen_copy(policy)
    assert reference is not policy and not reference.training and policy.training
    assert not any(p.requires_grad for p in reference.parameters())
    pairs = list(zip(reference.parameters(), policy.parameters(), strict=True))
    assert all(torch.equal(a, b) and a.data_ptr() != b.data_ptr() for a, b in pairs)


def test_training_never_changes_the_reference_even_one_left_trainable():
    policy, _, loader = training_setup()
    reference = copy.deepcopy(policy)  # not frozen: train_dpo alone must keep it still
    before = {k: v.clone() for k, v in reference.state_dict().items()}
    policy_before = {k: v.clone() for k, v in policy.state_dict().items()}
    train_dpo(policy, reference, loader, loader, steps=3, lr=1e-2, eval_every=3)
    assert all(torch.equal(v, before[k]) for k, v in reference.state_dict().items())
    assert all(p.grad is None for p in reference.parameters())  # scored under no_grad
    assert not all(torch.equal(v, policy_before[k]) for k, v in policy.state_dict().items())


def test_train_dpo_refuses_the_policy_as_its_own_reference_and_unclear_lengths():
    policy, _, loader = training_setup()
    with pytest.raises(ValueError, match="separate frozen copy"):
        train_dpo(policy, policy, loader, loader, steps=1)
    with pytest.raises(ValueError, match="exactly one of epochs and steps"):
        train_dpo(policy, frozen_copy(policy), loader, loader)
