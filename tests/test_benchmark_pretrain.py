"""The pretraining benchmark still runs and measures what it says (its timings are not tested)."""

import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import benchmark_pretrain
import pytest
import torch
from benchmark_pretrain import Recipe, char_data, train, val_loss

from buildllm.model import GPTModel

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

TINY = Recipe(n_layers=1, n_heads=2, emb_dim=16, context=8, batch=4, steps=30, warmup=3,
              max_lr=1e-2, min_lr=1e-3)


def test_the_benchmark_runs_end_to_end_on_tiny_settings(tmp_path):
    plot = tmp_path / "curves.png"
    out = subprocess.run(
        [sys.executable, str(ROOT / "Supporting/tools/benchmark_pretrain.py"),
         "--iters", "20", "--eval-every", "10", "--trick-lr", "2e-3",
         "--seeds", "0,1", "--draws", "40", "--plot", str(plot),
         "--tp-config", "cpu-tiny", "--tp-tokenizer", "char", "--tp-batch", "2",
         "--tp-context", "16", "--tp-steps", "3", "--tp-rounds", "2", "--threads", "1"],
        capture_output=True, text=True, check=True,
    ).stdout
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert rows[0] == "| measurement | result | goal or comparison |"
    body = [row[2:-2].split(" | ") for row in rows[1:]]
    assert [cells[0] for cells in body] == [
        "char Shakespeare, nanoGPT's CPU recipe, published (a laptop)",
        "the same command, what nanoGPT's train.py prints at step 2,000",
        "the same recipe, ours: 20 steps, seed 0",
        "the same recipe, seeds 0, 1",
        "these models scored as nanoGPT scores (20 random batches), 40 times each",
        "the course's tricks (lr 0.002, batch 12, fp32) in the same time",
        "throughput, cpu-tiny (char tokens), a plain loop",
        "throughput, cpu-tiny (char tokens), python -m buildllm.pretrain",
    ]
    assert body[1][1:] == ["train loss 1.7648, val loss 1.8857 (20 random batches each)",
                           "+0.0057 against the published 1.88"]
    assert body[2][1].startswith("train loss ") and "goal ≤ 1.88" in body[2][2]
    assert "(mean of 2 seeds)" in body[2][2]
    mean, low, high, train_mean = (float(word) for word in re.findall(r"\d\.\d{3}", body[3][1]))
    assert low <= mean <= high and low < high  # two seeds, two different losses
    low, high = (float(word) for word in re.findall(r"\d\.\d{3}", body[4][1]))
    assert low < high and re.fullmatch(r"\d+% of them at or below nanoGPT's own 1.8857", body[4][2])
    assert body[5][1].startswith("best val loss ") and "against the recipe" in body[5][2]
    assert all(cells[1].endswith("tokens/s") for cells in body[6:])
    assert "the script at" in body[7][2] and body[7][2].endswith("same weights")
    assert "1 thread;" in out
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_char_data_splits_like_nanogpt_and_scores_every_validation_character_once():
    text = "".join(chr(0x4E00 + i) for i in range(300))  # 300 distinct characters: id = position
    data = char_data(text, context=8, windows_per_batch=2)
    assert data.vocab_size == 300
    assert data.train.tolist() == list(range(270)) and data.val.tolist() == list(range(270, 300))
    assert [len(inputs) for inputs, _ in data.val_batches] == [2, 1]  # 3 whole windows of 8
    inputs = torch.cat([inputs for inputs, _ in data.val_batches])
    targets = torch.cat([targets for _, targets in data.val_batches])
    assert inputs.flatten().tolist() == list(range(270, 294))  # consecutive, no overlap
    assert torch.equal(targets, inputs + 1)
    # Training text: 33 windows of 8 in 17 batches of 2; every 9th batch (270 / 30) is kept.
    inputs = torch.cat([inputs for inputs, _ in data.train_batches])
    assert inputs.tolist() == [list(range(start, start + 8)) for start in (0, 8, 144, 152)]


@pytest.fixture(scope="module")
def shakespeare():
    from buildllm.data import fetch

    return char_data(fetch("tinyshakespeare.txt").read_text("utf-8"), TINY.context)


def test_shakespeare_has_nanogpts_65_characters(shakespeare):
    assert shakespeare.vocab_size == 65
    assert len(shakespeare.train) == 1_003_854  # int(0.9 × 1,115,394), as nanoGPT splits


def test_val_loss_is_the_mean_over_characters_not_over_batches(shakespeare):
    model = GPTModel(TINY.model_config(shakespeare.vocab_size))
    inputs = torch.cat([inputs for inputs, _ in shakespeare.val_batches])
    targets = torch.cat([targets for _, targets in shakespeare.val_batches])
    assert len({len(batch) for batch, _ in shakespeare.val_batches}) == 2  # unequal batches
    with torch.no_grad():
        logits = model.eval()(inputs)
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
    assert val_loss(model, shakespeare) == pytest.approx(expected.item(), rel=1e-5)


def test_a_run_takes_the_recipes_steps_scores_at_each_interval_and_learns(shakespeare):
    result = train(TINY, shakespeare, eval_every=12)
    assert result["steps"] == 30 and result["tokens"] == 30 * 4 * 8
    assert [step for step, _ in result["evals"]] == [0, 12, 24, 30]
    assert result["val_loss"] == result["evals"][-1][1] < result["evals"][0][1] - 0.5
    assert result["best_val_loss"] == min(loss for _, loss in result["evals"])


def test_without_biases_only_biases_and_shifts_stay_at_zero(shakespeare):
    result = train(replace(TINY, biases=False), shakespeare, eval_every=30)
    frozen = {name: p for name, p in result["model"].named_parameters() if not p.requires_grad}
    # 1 block: attention output, two feed-forward layers, two norms; then the final norm.
    assert sorted(frozen) == ["final_norm.shift", "trf_blocks.0.att.out_proj.bias",
                              "trf_blocks.0.ff.layers.0.bias", "trf_blocks.0.ff.layers.2.bias",
                              "trf_blocks.0.norm1.shift", "trf_blocks.0.norm2.shift"]
    assert all(not p.any() for p in frozen.values())
    assert result["val_loss"] < result["evals"][0][1] - 0.5  # the rest still learns


def test_the_same_seed_gives_the_same_run(shakespeare):
    assert train(TINY, shakespeare, eval_every=15)["evals"] == \
        train(TINY, shakespeare, eval_every=15)["evals"]


def test_a_run_on_a_budget_spends_it_and_its_schedule_follows_the_clock(shakespeare, monkeypatch):
    positions = []
    real_lr_at = benchmark_pretrain.lr_at

    def recorded(position, **schedule):
        positions.append(position)
        return real_lr_at(position, **schedule)

    monkeypatch.setattr(benchmark_pretrain, "lr_at", recorded)
    result = train(TINY, shakespeare, eval_every=10, budget=0.3)
    assert result["seconds"] >= 0.3
    assert positions[0] == 0 and positions == sorted(positions) and positions[-1] < TINY.steps
    assert len(positions) == result["steps"]  # one learning rate per step
    evaluated_at = [position for position, _ in result["evals"]]  # in the schedule, not steps
    assert evaluated_at == sorted(evaluated_at) and evaluated_at[0] == 0
    assert evaluated_at[-1] == TINY.steps  # the whole schedule, in however many steps it took
    assert 2 <= len(evaluated_at) <= 4  # at most at positions 10, 20 and 30 of 30: by the clock
