"""Pretraining the modern decoder (issue 21): `--model llama3-cpu-tiny` trains a Decoder whose run
folder loads, chats and resumes like a GPT's; its FLOPs and parameters are counted from its own
shapes; settings it cannot express and run.json files of an unknown family are refused."""

import json
import shutil
from dataclasses import replace

import pytest
import torch
from openai import OpenAI
from test_pretrain import TINY, assert_same_weights, char_run, snapshot, weights

import buildllm.pretrain as pretrain
from buildllm.chat import ChatSession
from buildllm.costs import parameter_count
from buildllm.data import fetch
from buildllm.decoder import CONFIGS, Decoder
from buildllm.generation import generate
from buildllm.instruct import visible_answer
from buildllm.model import CONFIGS as GPT_CONFIGS
from buildllm.model import count_parameters, forward_flops_per_token
from buildllm.modern import RopeScaling
from buildllm.pretrain import main
from buildllm.pretrain_data import InputError
from buildllm.runs import load_run, save_run
from buildllm.serve import BackgroundServer, create_app
from buildllm.tokenizers import BPETokenizer
from buildllm.training import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

LLAMA = ["--model", "llama3-cpu-tiny"]


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    """The first 10,000 characters of Shakespeare, as a file."""
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text(fetch("tinyshakespeare.txt").read_text("utf-8")[:10_000], "utf-8")
    return path


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory, text):
    """A Qwen3-style decoder trained 3 steps on a BPE tokenizer that knows <|endoftext|>, as
    the chat needs (with a context of 160 tokens, room for the chat's prompt): its folder."""
    folder = tmp_path_factory.mktemp("bpe")
    bpe = BPETokenizer.train(text.read_text("utf-8"), vocab_size=300,
                             special_tokens=["<|endoftext|>"])
    bpe.save(folder / "bpe.json")
    main([str(text), "--tokenizer", str(folder / "bpe.json"), *TINY, "--model",
          "qwen3-cpu-tiny", "--context-length", "160",
          "--steps", "3", "--out", str(folder / "run")])
    return folder / "run"


def test_a_decoder_run_records_its_family_and_loads_back_as_the_trained_decoder(bpe_run):
    info = json.loads((bpe_run / "run.json").read_text("utf-8"))
    assert info["model"]["family"] == "decoder"
    assert (info["model"]["qk_norm"], info["model"]["n_kv_heads"]) == (True, 2)
    model, tokenizer = load_run(bpe_run)
    assert isinstance(model, Decoder) and not model.training
    assert model.cfg.emb_dim == 32 and model.cfg.head_dim == 16 and model.cfg.norm == "rms"
    assert model.cfg.vocab_size == tokenizer.n_vocab == 300
    final = load_checkpoint(bpe_run / "checkpoint.pt")["model"]
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, final[name]), name
    assert load_checkpoint(bpe_run / "checkpoint.pt")["model_config"]["family"] == "decoder"


def test_a_decoder_run_chats_through_chat_session(bpe_run):
    chat = ChatSession.from_run(bpe_run, device="cpu", max_new_tokens=12)
    assert isinstance(chat.model, Decoder)
    messages = [{"role": "user", "content": "Who is there?"}]
    ids = chat.prompt_ids(messages)
    sampling = {"temperature": 1.0, "seed": 3}  # an untrained model's greedy text is blank
    new = generate(chat.model, torch.tensor([ids]), 12, eos_id=chat.eos_id,
                   **sampling)[0, len(ids):].tolist()
    new = new[:new.index(chat.eos_id)] if chat.eos_id in new else new
    expected = visible_answer(chat.tokenizer.decode(new), final=True)[0]
    assert expected and chat.reply(messages, **sampling) == expected


def test_a_decoder_run_is_served_and_answers_as_its_chat_session_does(bpe_run):
    chat = ChatSession.from_run(bpe_run, device="cpu", max_new_tokens=12)
    messages = [{"role": "user", "content": "Who is there?"}]
    with BackgroundServer(create_app(chat, "llama")) as server:
        client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)
        done = client.chat.completions.create(model="llama", messages=messages,
                                              temperature=1.0, seed=3)
    assert done.choices[0].message.content == chat.reply(messages, temperature=1.0, seed=3)


def test_an_untied_decoder_with_rope_scaling_saves_and_loads_as_itself(tmp_path):
    cfg = replace(CONFIGS["llama3-cpu-tiny"], vocab_size=40, n_layers=1,
                  tie_embeddings=False, rope_scaling=RopeScaling(factor=8.0))
    model = Decoder(cfg)
    save_run(model, {"kind": "char", "chars": "abcdefghijklmnopqrstuvwxyz ,.!?;:'-\nABCD"},
             tmp_path / "run")
    loaded = load_run(tmp_path / "run").model
    assert loaded.cfg == cfg and loaded.out_head.weight is not loaded.tok_emb.weight
    assert_same_weights(loaded.state_dict(), model.state_dict())


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_a_decoder_run_interrupted_resumes_to_the_same_weights_as_an_uninterrupted_one(
        text, tmp_path, monkeypatch, optimizer):
    args = [*LLAMA, "--steps", "6", "--eval-every", "3", "--checkpoint-every", "2",
            "--drop-rate", "0.1",  # dropout: the resumed run must restore the random state too
            "--optimizer", optimizer]
    main(char_run(text, tmp_path / "straight", *args))
    real, calls = pretrain.batch_loss, []

    def interrupted(*a):  # Ctrl-C during the fifth step, after step 4's checkpoint
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(pretrain, "batch_loss", interrupted)
    with pytest.raises(SystemExit, match="--resume"):
        main(char_run(text, tmp_path / "stopped", *args))
    monkeypatch.setattr(pretrain, "batch_loss", real)
    assert load_checkpoint(tmp_path / "stopped" / "checkpoint.pt")["step"] == 4
    assert main(["--out", str(tmp_path / "stopped"), "--resume"])["step"] == 6
    assert_same_weights(weights(tmp_path / "stopped"), weights(tmp_path / "straight"))
    assert isinstance(load_run(tmp_path / "stopped").model, Decoder)
    state = load_checkpoint(tmp_path / "stopped" / "checkpoint.pt")["optimizer"]
    assert ("muon" in state) == (optimizer == "muon")  # MuonAdamW's state: Muon's and AdamW's


def test_flops_per_token_of_a_decoder_config_is_the_hand_count():
    cfg = CONFIGS["llama3-cpu-tiny"]  # d 128, 4 query heads of 32, 2 kv heads, hidden 344
    assert (cfg.emb_dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.hidden_dim) == \
        (128, 4, 2, 32, 344)
    queries, keys_values, out = 128 * 128, 2 * 128 * 64, 128 * 128
    swiglu = 3 * 128 * 344  # gate, up and down
    attention = 2 * 128 * 128  # scores and the weighted sum: 128 tokens × 4 heads × 32
    per_layer = 2 * (queries + keys_values + out + swiglu + attention)
    by_hand = 4 * per_layer + 2 * 128 * 50257  # 4 layers, then the output layer
    assert by_hand == 14_577_920
    assert forward_flops_per_token(cfg) == by_hand
    gpt = CONFIGS["gpt2-cpu-tiny"]  # GPT-2's shapes as a DecoderConfig count as GPTConfig's
    assert forward_flops_per_token(gpt) == forward_flops_per_token(GPT_CONFIGS["cpu-tiny"])


@pytest.mark.parametrize("name", ["llama3-cpu-tiny", "qwen3-cpu-tiny", "gpt2-cpu-tiny"])
def test_parameter_count_of_a_decoder_config_is_what_the_decoder_holds(name):
    for cfg in (CONFIGS[name], replace(CONFIGS[name], tie_embeddings=False, mlp_bias=True)):
        assert parameter_count(cfg) == count_parameters(Decoder(cfg))


def test_pretrain_reports_mfu_from_the_decoders_own_flops(text, tmp_path, monkeypatch):
    monkeypatch.setattr(pretrain, "peak_flops", lambda *_: (1e9, "a pretend 1 GFLOP/s"))
    summary = main(char_run(text, tmp_path / "run", *LLAMA, "--steps", "2"))
    cfg = load_run(tmp_path / "run").model.cfg
    assert summary["mfu"] == pytest.approx(summary["tokens_per_s"] * 3
                                           * forward_flops_per_token(cfg) / 1e9)


BAD_FLAGS = {
    "heads the kv heads do not divide": (["--n-heads", "1"],
                                         "n_heads=1 must be a multiple of n_kv_heads=2"),
    "odd head_dim for rotary positions": (["--emb-dim", "30", "--n-heads", "2"],
                                          "head_dim must be even, got 15"),
}


@pytest.mark.parametrize("case", BAD_FLAGS)
def test_a_setting_the_decoder_cannot_express_is_refused_in_one_line(case, text, tmp_path):
    flags, message = BAD_FLAGS[case]
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main(char_run(text, tmp_path / "new", *LLAMA, *flags))
    assert message in str(stopped.value) and "\n" not in str(stopped.value)
    assert snapshot(tmp_path) == before


def test_resuming_a_decoder_run_as_a_gpt_names_the_family(bpe_run, tmp_path):
    done = shutil.copytree(bpe_run, tmp_path / "done")
    before = snapshot(done)
    with pytest.raises(SystemExit) as refused:
        main(["--out", str(done), "--resume", "--model", "cpu-tiny"])
    assert "model family: decoder in the checkpoint, gpt now\n" in str(refused.value)
    assert "model emb_dim" not in str(refused.value)  # the family says it; fields would be noise
    assert snapshot(done) == before


def test_resuming_with_another_optimizer_is_refused(bpe_run, tmp_path):
    done = shutil.copytree(bpe_run, tmp_path / "done")
    before = snapshot(done)
    with pytest.raises(SystemExit, match="--optimizer: 'adamw' in the checkpoint, 'muon' now"):
        main(["--out", str(done), "--resume", "--optimizer", "muon"])
    assert snapshot(done) == before


@pytest.mark.parametrize(("change", "message"), [
    ({"family": "mamba"}, "\"model\" family must be \"decoder\" or left out"),
    ({"norm": 3}, '"model" norm must be str, got 3'),
    ({"mlp": "relu"}, "mlp must be one of ('gelu', 'swiglu')"),
    ({"rope_scaling": {"factor": 0.5}}, "RopeScaling needs factor >= 1"),
])
def test_a_run_json_of_an_unknown_family_or_a_bad_decoder_field_is_refused(
        bpe_run, tmp_path, change, message):
    folder = shutil.copytree(bpe_run, tmp_path / "run")
    info = json.loads((folder / "run.json").read_text("utf-8"))
    info["model"].update(change)
    (folder / "run.json").write_text(json.dumps(info), "utf-8")
    before = snapshot(folder)
    with pytest.raises(InputError) as refused:
        load_run(folder)
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert snapshot(folder) == before
