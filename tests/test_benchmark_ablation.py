"""The ablation benchmark runs end to end and reports what it says (its timings are not tested)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from benchmark_ablation import ROWS, decoder, parse_args, spread, verdict
from benchmark_pretrain import Recipe, char_data, train

from buildllm.decoder import Decoder, swiglu_hidden_dim
from buildllm.model import GPTModel
from buildllm.muon import MuonAdamW
from buildllm.training import lr_at

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "Supporting/tools/benchmark_ablation.py"
TINY = ["--iters", "6", "--layers", "1", "--emb-dim", "16", "--threads", "1"]

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def ablation(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def test_the_benchmark_runs_end_to_end_on_tiny_settings(tmp_path):
    out = tmp_path / "ablation.md"
    # --rows in any order: the table keeps ROWS' order, the recipe (the budget) first.
    done = ablation(*TINY, "--seeds", "3", "--rows", "all,tricks,rope", "--out", str(out))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert out.read_text(encoding="utf-8") == done.stdout
    assert lines[0].endswith(f"1 thread; Python {sys.version.split()[0]}, "
                             f"torch {torch.__version__}")
    assert re.match(r"Budget: \d+\.\d s, the time of nanoGPT's recipe \(6 steps\) with seed 3;",
                    lines[2])
    rows = [line for line in lines if line.startswith("| ")]
    assert rows[0] == ("| row | change | val loss | against the recipe | tokens/s | steps "
                       "| parameters |")
    body = [row[2:-2].split(" | ") for row in rows[1:]]
    assert [cells[0] for cells in body] == ["recipe", "tricks", "rope", "all"]
    assert [cells[1] for cells in body] == [ROWS[name].what for name in
                                            ("recipe", "tricks", "rope", "all")]
    losses = [float(cells[2]) for cells in body]  # one seed: a mean without a spread
    assert all(2.0 < loss < 4.5 for loss in losses)  # ln(65) = 4.17 before training
    assert body[0][3] == "" and body[0][5] == "6"  # the recipe trains by its steps
    for cells, loss in zip(body[1:], losses[1:], strict=True):
        assert float(cells[3]) == pytest.approx(loss - losses[0], abs=1.5e-3)
    assert all(int(cells[4].replace(",", "")) > 0 and int(cells[5].replace(",", "")) > 0
               for cells in body)
    parameters = [int(cells[6].replace(",", "")) for cells in body]
    assert parameters[0] == parameters[1] > parameters[2]  # RoPE drops the learned positions
    goal = re.fullmatch(r"Goal, the combined recipe at least 0\.05 below the tricks row "
                        r"\((\d\.\d{3})\) in this run: all (\d\.\d{3}) \(([-+]\d\.\d{3})\): "
                        r"(met|not met)\.", lines[-1])
    tricks, combined, gain = (float(goal[i]) for i in (1, 2, 3))
    assert (tricks, combined) == (losses[1], losses[3])
    assert gain == pytest.approx(combined - tricks, abs=1.5e-3)
    assert goal[4] == ("met" if gain <= -0.05 else "not met")


def test_a_bad_row_name_is_refused_in_one_line_and_nothing_is_written(tmp_path):
    out = tmp_path / "ablation.md"
    done = ablation(*TINY, "--rows", "rope,alibi", "--out", str(out))
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "benchmark_ablation.py: unknown row 'alibi' in --rows; choose from " + ", ".join(ROWS)]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "message"), [
    (["--seeds", "0,one"], "--seeds takes whole numbers separated by commas, got '0,one'"),
    (["--emb-dim", "20"], "--emb-dim must be a positive multiple of 8 (even features per head, "
                          "for RoPE), got 20"),
    (["--iters", "0"], "--iters must be 1 or more, got 0"),
])
def test_bad_settings_are_refused_in_one_line_before_anything_runs(args, message):
    with pytest.raises(SystemExit) as refused:
        parse_args(args)  # the script's own: its message is all that reaches the terminal
    assert refused.value.code == f"benchmark_ablation.py: {message}"


def test_each_row_changes_what_it_says_from_the_recipes_model():
    recipe = Recipe()
    gpt = GPTModel(recipe.model_config(65))
    count = sum(p.numel() for p in gpt.parameters())
    assert sum(p.numel() for p in Decoder(decoder(recipe, 65, ROWS["decoder"].changes))
               .parameters()) == count  # the family alone: the same model
    swiglu = decoder(recipe, 65, ROWS["swiglu"].changes)
    assert swiglu.hidden_dim == swiglu_hidden_dim(128) == 344
    # Three matrices of 128 × 344 for two of 128 × 512, with their biases: 1,200 more a block.
    assert sum(p.numel() for p in Decoder(swiglu).parameters()) == count + 4 * 1200
    combined = decoder(recipe, 65, ROWS["all"].changes)
    assert (combined.positions, combined.norm, combined.mlp, combined.qk_norm,
            combined.qkv_bias, combined.proj_bias, combined.mlp_bias,
            combined.tie_embeddings) == ("rope", "rms", "swiglu", True,
                                         False, False, False, False)
    assert ROWS["all"].muon and not ROWS["decoder"].muon and ROWS["recipe"].changes is None


def test_the_verdict_judges_each_combined_row_against_the_tricks_row():
    def runs(loss):
        return [{"val_loss": loss - 0.01}, {"val_loss": loss + 0.01}]

    line = verdict({"tricks": runs(1.76), "all": runs(1.70), "all-lr": runs(1.72)})
    assert line == ("Goal, the combined recipe at least 0.05 below the tricks row (1.760) in "
                    "this run: all 1.700 (-0.060): met; all-lr 1.720 (-0.040): not met.")
    assert verdict({"tricks": runs(1.76)}).startswith("The goal needs")


def test_the_spread_over_seeds_is_the_standard_deviation():
    assert spread([1.5]) == "1.500"
    assert spread([1.0, 1.2, 1.4]) == "1.200 ± 0.200"


def test_a_muon_learning_rate_of_its_own_follows_the_schedule_at_its_ratio():
    recipe = Recipe(n_layers=1, n_heads=2, emb_dim=16, context=8, batch=4, steps=6, warmup=2)
    made = []

    def muon(model):
        made.append(MuonAdamW(model, lr=recipe.max_lr, muon_lr=4 * recipe.max_lr))
        return made[0]

    train(recipe, char_data("to be or not to be, " * 40, recipe.context), eval_every=6,
          make_optimizer=muon)
    last = lr_at(5, max_lr=recipe.max_lr, warmup_steps=2, total_steps=6, min_lr=recipe.min_lr)
    assert [group["lr"] for group in made[0].muon.param_groups] == [4 * last]
    assert {group["lr"] for group in made[0].adamw.param_groups} == {last}
