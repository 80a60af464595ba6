"""The cost estimates on Meeting-7/SCALING.md: written by the script, from the course's own counter,
with the same GPU peaks the pretraining command measures MFU against."""

from pathlib import Path

import scaling_estimates
from markdown_section import section
from scaling_estimates import GPUS, parameters, render, training_flops_per_token

from buildllm.costs import GPU_PEAK_TFLOPS
from buildllm.model import CONFIGS, GPTModel, count_parameters, forward_flops_per_token

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "Meeting-7" / "SCALING.md"


def test_the_page_shows_exactly_what_the_script_renders():
    shown = section(PAGE.read_text(encoding="utf-8"), "scaling-estimates", "SCALING.md")
    assert shown == render(), "run python Supporting/tools/scaling_estimates.py"


def test_check_mode_fails_on_a_stale_page_and_never_writes(tmp_path, monkeypatch):
    page = tmp_path / "SCALING.md"
    stale = "# x\n<!-- scaling-estimates:start -->\nold\n<!-- scaling-estimates:end -->\n"
    page.write_text(stale)
    monkeypatch.setattr(scaling_estimates, "PAGE", page)
    assert scaling_estimates.main(["--check"]) == 1
    assert page.read_text() == stale
    assert scaling_estimates.main([]) == 0
    assert scaling_estimates.main(["--check"]) == 0


def test_parameter_counts_on_the_meta_device_match_a_real_model_and_gpt2():
    assert parameters(CONFIGS["124M"]) == 124_439_808  # GPT-2 small, embedding tied
    assert parameters(CONFIGS["355M"]) == 354_823_168
    tiny = CONFIGS["cpu-tiny"]
    assert parameters(tiny) == count_parameters(GPTModel(tiny))


def test_training_flops_are_three_forward_passes_and_near_the_six_n_rule():
    for name in ("124M", "355M"):
        cfg = CONFIGS[name]
        assert training_flops_per_token(cfg) == 3 * forward_flops_per_token(cfg)
        ratio = training_flops_per_token(cfg) / (6 * parameters(cfg))
        assert 1.10 < ratio < 1.18, "SCALING.md says the counter is about 14% above 6N"


def test_bf16_peaks_agree_with_the_ones_pretrain_divides_by_for_mfu():
    known = dict(GPU_PEAK_TFLOPS)
    for gpu in GPUS:
        if gpu.precision == "bf16":
            key = gpu.name.split()[0]  # "A100 40GB" -> "A100", "H100 SXM" -> "H100"
            assert known[key] == gpu.peak_tflops, gpu.name
    assert {g.name.split()[0] for g in GPUS} >= {"T4", "L4", "A100", "H100"}


def test_every_gpu_cites_the_vendors_page_and_a_price():
    for gpu in GPUS:
        assert gpu.spec_sheet.startswith("https://www.nvidia.com/")
        assert gpu.usd_per_hour > 0 and gpu.peak_tflops > 0


def test_the_chinchilla_budget_is_twenty_tokens_per_parameter():
    (tokens, why), *_ = scaling_estimates.budgets(124_439_808)
    assert tokens == 20 * 124_439_808 and "Chinchilla" in why
