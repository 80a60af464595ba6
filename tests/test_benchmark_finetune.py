"""The fine-tuning benchmark runs and counts memory as its docstring says (timings untested)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from benchmark_finetune import main, saved_activation_bytes, state_bytes
from torch import nn

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def test_state_bytes_counts_weights_existing_grads_and_adamw_moments():
    model = nn.Sequential(nn.Linear(10, 4), nn.Linear(4, 3))
    model[1].requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    weights = (10 * 4 + 4 + 4 * 3 + 3) * 4  # float32
    assert state_bytes(model, optimizer) == weights  # no gradient, no optimizer state yet
    model(torch.randn(2, 10)).sum().backward()
    optimizer.step()
    trainable = (10 * 4 + 4) * 4
    assert state_bytes(model, optimizer) == weights + trainable + 2 * trainable  # grads, m and v


def test_saved_activations_are_counted_once_and_without_the_weights():
    torch.manual_seed(0)
    layer = nn.Linear(6, 5)
    x = torch.randn(3, 6)

    def loss_fn(model, batch):
        hidden = model(batch[0])  # saves x (for the weight's gradient) and the weight itself
        return (hidden * hidden).sum()  # saves hidden, twice: one storage

    loss, saved = saved_activation_bytes(layer, loss_fn, (x, None))
    assert saved == (3 * 6 + 3 * 5) * 4
    torch.testing.assert_close(loss, (layer(x) ** 2).sum())


def test_the_benchmark_prints_one_row_per_task_and_method():
    out = subprocess.run(
        [sys.executable, str(ROOT / "Supporting/tools/benchmark_finetune.py"), "--model", "course",
         "--steps", "2", "--batch-size", "2", "--rank", "2", "--alpha", "4",
         "--test-examples", "4", "--val-examples", "4", "--max-new-tokens", "3",
         "--threads", "1"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "the course model, 2 steps of batch 2 per method, LoRA rank 2, alpha 4; cpu" in out
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    header, rule, *body = [line[2:-2].split(" | ") for line in lines]
    assert rule == ["---"] * len(header)
    assert header == ["task", "fine-tuning", "trainable parameters", "test score",
                      "weights + grads + AdamW (MB)", "saved activations (MB)",
                      "time per step (ms)"]
    assert [cells[:2] for cells in body] == [["spam", "full"], ["spam", "LoRA r=2"],
                                            ["instructions", "full"],
                                            ["instructions", "LoRA r=2"]]
    for cells in body:
        assert len(cells) == len(header)
        float(cells[4]), float(cells[5]), float(cells[6])  # numbers, not placeholders
    assert re.fullmatch(r"accuracy \d+\.\d%", body[0][3])
    assert re.fullmatch(r"ROUGE-L \d\.\d{3}, token F1 \d\.\d{3}, val loss \d+\.\d\d", body[2][3])
    assert body[0][2].endswith("(100.00%)") and body[2][2].endswith("(100.00%)")
    for full, lora in [(body[0], body[1]), (body[2], body[3])]:
        count = int(lora[2].split()[0].replace(",", ""))
        assert 0 < count < int(full[2].split()[0].replace(",", "")) / 10
        assert float(lora[4]) < float(full[4])  # LoRA's gradients and AdamW state are tiny
    # The course model: 4 blocks, 128 wide; rank 2 on every linear layer of a block, and the
    # spam run's new head (128 · 2 + 2) on top.
    per_block = 2 * ((128 + 384) + (128 + 128) + (128 + 512) + (512 + 128))
    assert body[3][2].startswith(f"{4 * per_block:,} ")
    assert body[1][2].startswith(f"{4 * per_block + 258:,} ")


def test_an_unknown_task_is_refused_by_name(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--tasks", "spam,qa"])
    assert exit_.value.code == 2 and "unknown tasks ['qa']" in capsys.readouterr().err
