"""The capstone pipeline: every stage makes its output, a rerun loads it, a changed setting
re-runs that stage and the later ones only, an interrupted pretraining resumes exactly, and bad
input stops it before anything is written. Also `training_cost`, and instruction tuning with a
course-trained BPE tokenizer, whose <|endoftext|> is not GPT-2's 50256."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from stand_ins import Scripted

import buildllm.costs
import buildllm.pretrain
from buildllm.capstone import (
    GPU,
    GPUS,
    Capstone,
    InputError,
    chat,
    evaluate,
    instruction_tune,
    pretrain,
    run_all,
    train_tokenizer,
    training_cost,
)
from buildllm.data import fetch
from buildllm.instruct import end_of_text_id, finetune, load_instructions, respond
from buildllm.model import CONFIGS, GPTConfig, GPTModel
from buildllm.tokenizers import BPETokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

STAGES = ("1-tokenizer", "2-pretrain", "3-instruct", "4-evaluate")


def tiny(texts, project, **changes) -> Capstone:
    """Settings small enough that the whole pipeline takes seconds. The context stays 256:
    with 300 tokens an instruction example is about 200 tokens long."""
    settings = dict(vocab_size=300, emb_dim=16, n_heads=2, n_layers=1, batch_size=4, steps=4,
                    eval_every=2, eval_batches=2, instructions=16, tune_batch_size=4,
                    tune_lr=1e-2, test_examples=3, max_new_tokens=8, device="cpu")
    return Capstone(str(texts), str(project), **{**settings, **changes})


def write_texts(folder: Path, sizes=(6_000, 6_000)) -> Path:
    """Consecutive pieces of Tiny Shakespeare, one .txt file each."""
    text = fetch("tinyshakespeare.txt").read_text("utf-8")
    folder.mkdir(parents=True, exist_ok=True)
    start = 0
    for n, size in enumerate(sizes):
        (folder / f"part{n}.txt").write_text(text[start:start + size], "utf-8")
        start += size
    return folder


def snapshot(project: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under `project`: (modification time, contents)."""
    return {str(p.relative_to(project)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(project.rglob("*")) if p.is_file()}


def ran(stages: dict) -> list[bool]:
    return [stage.ran for stage in stages.values()]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One pipeline, run once for the module: (settings, stages, files afterwards)."""
    root = tmp_path_factory.mktemp("capstone")
    cfg = tiny(write_texts(root / "texts"), root / "project")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as every test here: the same arithmetic, the same weights
    try:
        stages = run_all(cfg)
    finally:
        torch.set_num_threads(threads)
    return cfg, stages, snapshot(Path(cfg.project))


def copy_project(cfg: Capstone, tmp_path: Path, **changes) -> Capstone:
    """The built project in a folder of this test's own, with some settings changed."""
    shutil.copytree(cfg.project, tmp_path / "project")
    return replace(cfg, project=str(tmp_path / "project"), **changes)


# -- every stage, once, then loaded --------------------------------------------------------

def test_every_stage_writes_its_output_and_a_stage_json(built):
    cfg, stages, files = built
    assert ran(stages) == [True] * 4
    for name in ("1-tokenizer/tokenizer.json", "2-pretrain/run.json",
                 "2-pretrain/model.safetensors", "2-pretrain/loss.png", "3-instruct/run.json",
                 "3-instruct/model.safetensors", "3-instruct/tokenizer.json",
                 "4-evaluate/scores.json", *(f"{s}/stage.json" for s in STAGES)):
        assert name in files, name
    # the pretraining checkpoint only serves --resume; once the run is done it goes
    assert "2-pretrain/checkpoint.pt" not in files and "2-pretrain/pending.json" not in files
    assert stages["tokenizer"].info["tokens"] > stages["tokenizer"].info["words"] > 0


def test_a_second_call_loads_every_stage_and_writes_nothing(built, capsys):
    cfg, stages, files = built
    again = run_all(cfg)
    assert ran(again) == [False] * 4
    assert snapshot(Path(cfg.project)) == files
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == list(STAGES)
    assert all("loaded from" in line for line in lines)
    assert [s.key for s in again.values()] == [s.key for s in stages.values()]
    assert again["evaluate"].output == stages["evaluate"].output


@pytest.mark.parametrize(("change", "expected"), [
    ({"max_new_tokens": 6}, [False, False, False, True]),
    ({"tune_lr": 3e-3}, [False, False, True, True]),
    ({"steps": 3}, [False, True, True, True]),
    ({"vocab_size": 290}, [True, True, True, True]),
])
def test_a_changed_setting_reruns_its_stage_and_the_later_ones_only(built, tmp_path, capsys,
                                                                    change, expected):
    cfg, _, files = built
    changed = copy_project(cfg, tmp_path, **change)
    stages = run_all(changed)
    assert ran(stages) == expected
    after = snapshot(Path(changed.project))
    for stage, reran in zip(STAGES, expected, strict=True):
        same = {k: v for k, v in files.items() if k.startswith(stage)} == \
            {k: v for k, v in after.items() if k.startswith(stage)}
        assert same != reran, stage
    first = STAGES[expected.index(True)]
    (name, value), = change.items()
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(first))
    assert line.startswith(f"{first}: ran in") and f"(changed: {name} " in line
    record = json.loads(Path(changed.project, first, "stage.json").read_text("utf-8"))
    assert record["settings"][name] == value


def test_changed_text_reruns_everything(built, tmp_path):
    cfg, _, _ = built
    changed = copy_project(cfg, tmp_path)
    texts = shutil.copytree(cfg.text_folder, tmp_path / "texts")
    (texts / "part1.txt").write_text((texts / "part1.txt").read_text() + "\nMore.", "utf-8")
    assert ran(run_all(replace(changed, text_folder=str(texts)))) == [True] * 4


# -- what the stages made ------------------------------------------------------------------

def test_the_models_use_the_trained_bpe_and_its_end_of_text(built):
    _, stages, _ = built
    tokenizer = stages["tokenizer"].output
    assert isinstance(tokenizer, BPETokenizer) and tokenizer.vocab_size == 300
    assert end_of_text_id(tokenizer) == 299  # the special token comes last
    for key in ("pretrain", "instruct"):
        model, loaded = stages[key].output
        assert model.cfg.vocab_size == 300 and model.cfg.context_length == 256
        assert loaded.to_printable() == tokenizer.to_printable()


def test_instruction_tuning_lowers_the_loss_and_changes_the_weights(built):
    _, stages, _ = built
    history = stages["instruct"].info["history"]
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert stages["instruct"].info["examples"] + stages["instruct"].info["too_long"] == 16
    base, tuned = stages["pretrain"].output[0], stages["instruct"].output[0]
    assert not torch.equal(base.tok_emb.weight, tuned.tok_emb.weight)


def test_evaluation_scores_held_out_text_as_pretraining_did_and_answers_both_models(built):
    _, stages, _ = built
    scores = stages["evaluate"].output
    # the same held-out windows as pretraining's last evaluation, so the same loss
    assert scores["text"]["pretrained"]["loss"] == pytest.approx(
        stages["pretrain"].info["val_loss"], rel=1e-5)
    for label in ("pretrained", "tuned"):
        loss = scores["text"][label]["loss"]
        assert scores["text"][label]["perplexity"] == pytest.approx(torch.tensor(loss).exp())
        assert set(scores["answers"][label]) == {"rouge_l", "token_f1"}
    _, _, test = load_instructions()
    assert [e["instruction"] for e in scores["examples"]] == [e["instruction"] for e in test[:3]]
    assert all(isinstance(e["tuned"], str) for e in scores["examples"])


def test_the_tuned_model_chats(built):
    cfg, stages, _ = built
    session = chat(cfg, stages["instruct"])
    answer = session.reply([{"role": "user", "content": "Name a colour."}], max_new_tokens=5)
    model, tokenizer = stages["instruct"].output
    entry = {"instruction": "Name a colour.", "input": ""}
    assert answer == respond(model, tokenizer, entry, max_new_tokens=5)  # greedy, same prompt


# -- an interrupted pretraining --------------------------------------------------------------

def interrupted_at_step(n: int):
    """pretrain's batch_loss, but Ctrl-C is pressed during step `n` (one micro-step a step)."""
    real, calls = buildllm.pretrain.batch_loss, []

    def batch_loss(*args):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*args)
    return batch_loss


def test_an_interrupted_pretraining_resumes_to_the_weights_of_an_uninterrupted_one(
        built, tmp_path, monkeypatch):
    cfg, stages, _ = built
    fresh = replace(cfg, project=str(tmp_path / "project"))
    tokenizer = train_tokenizer(fresh)
    monkeypatch.setattr(buildllm.pretrain, "batch_loss", interrupted_at_step(3))
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C in step 3: step 2 saved a checkpoint
        pretrain(fresh, tokenizer)
    monkeypatch.undo()
    folder = tmp_path / "project" / "2-pretrain"
    assert (folder / "checkpoint.pt").is_file() and not (folder / "stage.json").exists()

    resumed = pretrain(fresh, tokenizer)
    assert resumed.ran and resumed.info["resumed"]
    ours, theirs = load_file(folder / "model.safetensors"), load_file(
        Path(cfg.project) / "2-pretrain" / "model.safetensors")
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert resumed.info["history"] == stages["pretrain"].info["history"]


def test_an_interrupted_pretraining_with_other_settings_starts_over(built, tmp_path, monkeypatch):
    cfg, _, _ = built
    fresh = replace(cfg, project=str(tmp_path / "project"))
    tokenizer = train_tokenizer(fresh)
    monkeypatch.setattr(buildllm.pretrain, "batch_loss", interrupted_at_step(3))
    with pytest.raises(KeyboardInterrupt):
        pretrain(fresh, tokenizer)
    monkeypatch.undo()
    stage = pretrain(replace(fresh, lr=1e-3), tokenizer)
    assert stage.ran and not stage.info["resumed"]


# -- bad input -------------------------------------------------------------------------------

def _bad_folder(tmp_path: Path, kind: str) -> Path:
    folder = tmp_path / "texts"
    if kind == "missing":
        return folder
    if kind == "a file":
        return write_texts(folder) / "part0.txt"
    folder.mkdir()
    if kind == "no .txt files":
        (folder / "notes.md").write_text("Some notes, but not in a .txt file.", "utf-8")
    elif kind == "an empty file":
        write_texts(folder)
        (folder / "empty.txt").write_text(" \n", "utf-8")
    elif kind == "too short":
        write_texts(folder, sizes=(1_500,))
    elif kind == "not UTF-8":
        write_texts(folder)
        (folder / "latin1.txt").write_bytes("café".encode("latin-1"))
    return folder


@pytest.mark.parametrize(("kind", "message"), [
    ("missing", "does not exist"),
    ("a file", "is not a folder"),
    ("no .txt files", "holds no .txt files"),
    ("an empty file", "empty.txt is empty"),
    ("too short", "the text is too short: its .* tokens leave"),
    ("not UTF-8", "latin1.txt is not UTF-8"),
])
def test_bad_text_input_stops_with_a_clear_message_and_writes_nothing(tmp_path, kind, message):
    cfg = tiny(_bad_folder(tmp_path, kind), tmp_path / "project")
    with pytest.raises(InputError, match=message):
        run_all(cfg)
    assert not (tmp_path / "project").exists()


@pytest.mark.parametrize(("pairs", "message"), [
    ("not json", "cannot be read as JSON"),
    ('{"instruction": "a", "output": "b"}', "must hold a non-empty list"),
    ("[]", "must hold a non-empty list"),
    ('[{"instruction": "Say hi.", "output": "Hi."}, {"instruction": "No answer"}]',
     "entry 1 is"),
])
def test_a_bad_pairs_file_stops_the_pipeline_before_it_writes(tmp_path, pairs, message):
    (tmp_path / "pairs.json").write_text(pairs, "utf-8")
    cfg = tiny(write_texts(tmp_path / "texts"), tmp_path / "project",
               own_pairs=str(tmp_path / "pairs.json"))
    with pytest.raises(InputError, match=message):
        run_all(cfg)
    assert not (tmp_path / "project").exists()


@pytest.mark.parametrize(("change", "message"), [
    ({"vocab_size": 256}, "vocab_size must be at least 257"),
    ({"steps": 0}, "steps must be a whole number, at least 1"),
    ({"model": "gpt-5"}, "model must be one of"),
    ({"emb_dim": 30, "n_heads": 4}, "do not fit together: emb_dim=30"),
    ({"max_new_tokens": 256}, "max_new_tokens .* must be below the context length"),
    ({"instructions": 0}, "nothing to tune on"),
    ({"device": "tpu"}, "device must be"),
    ({"lr": "fast"}, "lr must be above 0, got 'fast'"),
    ({"lr": float("inf")}, "lr must be at most 1"),
    ({"tune_lr": float("inf")}, "tune_lr must be at most 1"),
    ({"tune_lr": float("nan")}, "tune_lr must be above 0, got nan"),
    ({"tune_epochs": float("inf")}, "tune_epochs must be below 1000, got inf"),
])
def test_impossible_settings_are_refused_when_made(tmp_path, change, message):
    with pytest.raises(InputError, match=message):
        tiny(tmp_path, tmp_path / "project", **change)


def test_your_own_pairs_join_the_training_data(built, tmp_path):
    cfg, _, _ = built
    pairs = [{"instruction": "Who wrote Hamlet?", "output": "Shakespeare."}] * 4
    (tmp_path / "pairs.json").write_text(json.dumps(pairs), "utf-8")
    changed = copy_project(cfg, tmp_path, own_pairs=str(tmp_path / "pairs.json"))
    stages = run_all(changed)
    assert ran(stages) == [False, False, True, True]
    assert stages["instruct"].info["own_pairs"] == 4
    assert stages["instruct"].info["examples"] + stages["instruct"].info["too_long"] == 20


# -- instruction tuning with a BPE tokenizer ------------------------------------------------


@pytest.fixture(scope="module")
def bpe():
    text = fetch("tinyshakespeare.txt").read_text("utf-8")[:20_000]
    return BPETokenizer.train(text, 300, ["<|endoftext|>"])


def test_respond_stops_at_the_bpe_end_of_text_not_gpt2s(bpe):
    eot = end_of_text_id(bpe)
    assert eot == 299
    answer = bpe.encode(" Blue.")
    entry = {"instruction": "Name a colour.", "input": ""}
    assert respond(Scripted(answer + [eot] + bpe.encode(" and more"), 300), bpe, entry) == "Blue."


def test_finetune_pads_with_the_bpe_end_of_text(bpe):
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=300, context_length=512, emb_dim=16, n_heads=2,
                               n_layers=1, drop_rate=0.0))
    train, val, _ = load_instructions()
    # GPT-2's padding id 50256 would be out of range for 300 embeddings: this would raise
    history = finetune(model, train[:8], val[:4], epochs=2, lr=1e-2, batch_size=4,
                       mask_prompt=True, enc=bpe, eval_every=2, eval_batches=None)
    assert history["train_loss"][-1] < history["train_loss"][0]


def test_a_tokenizer_without_end_of_text_cannot_be_instruction_tuned():
    plain = BPETokenizer.train("to be or not to be " * 20, 260)
    with pytest.raises(ValueError, match="has no <\\|endoftext\\|> token"):
        end_of_text_id(plain)


# -- what a GPU run costs -------------------------------------------------------------------

def test_training_cost_is_three_forward_passes_per_token_at_the_given_utilization():
    cfg = CONFIGS["124M"]
    d, layers, ctx, vocab = 768, 12, 1024, 50257
    forward = layers * (24 * d * d + 4 * ctx * d) + 2 * d * vocab  # as forward_flops_per_token
    gpu = GPU("test", 100.0, "bf16", 2.0, "")
    cost = training_cost(cfg, 1e9, gpu, mfu=0.5, n_gpus=4)
    assert cost["flops"] == 3 * forward * 1e9
    assert cost["hours"] == pytest.approx(3 * forward * 1e9 / (100e12 * 0.5 * 4) / 3600)
    assert cost["usd"] == pytest.approx(cost["hours"] * 4 * 2.0)
    h100 = next(g for g in GPUS if g.name.startswith("H100"))
    assert h100.peak_tflops == dict(buildllm.costs.GPU_PEAK_TFLOPS)["H100"]
    with pytest.raises(ValueError, match="mfu"):
        training_cost(cfg, 1e9, gpu, mfu=1.5)


def test_stage_functions_take_the_stages_before_them(built):
    cfg, stages, _ = built
    # each stage's fingerprint chains the one before, so a stale earlier stage shows
    tune = instruction_tune(cfg, stages["pretrain"])
    assert not tune.ran and tune.key == stages["instruct"].key
    assert not evaluate(cfg, stages["pretrain"], tune).ran
