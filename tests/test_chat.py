"""The chat: tokens streamed exactly as `generate` chooses them, conversations rendered in the
Alpaca layout the model was tuned on (a single message exactly as in Meeting 6), old turns
dropped to fit, replies cut as `instruct.respond` cuts them and never split inside a character,
and the terminal chat driven through its stdin."""

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stand_ins import READS_GPT2, Scripted, tiny_gpt

from buildllm import instruct
from buildllm.chat import ChatSession, ContextLengthError
from buildllm.chat import main as chat_main
from buildllm.generation import generate, stream
from buildllm.instruct import INSTRUCTION_HEADER, visible_answer
from buildllm.pretrained import COURSE_MODEL_DIR

ROOT = Path(__file__).resolve().parents[1]
EOT = instruct.END_OF_TEXT

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def small():
    """A random GPT with a 97-token vocabulary, for the token streamer."""
    return tiny_gpt()


@pytest.fixture(scope="module")
def tiny():
    """A random GPT that reads GPT-2's tokens: nonsense, but deterministic nonsense."""
    return tiny_gpt(**READS_GPT2)



def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def entry(text: str) -> dict:
    return {"instruction": text, "input": ""}


# -- generation.stream -------------------------------------------------------------------

@pytest.mark.parametrize("sampling", [{}, {"temperature": 1.0, "seed": 3},
                                      {"temperature": 0.8, "top_k": 5, "seed": 1},
                                      {"temperature": 1.2, "top_p": 0.9, "seed": 2}])
def test_stream_yields_the_tokens_generate_chooses(small, sampling):
    ids = [5, 17, 42]
    tokens = list(stream(small, ids, 29, **sampling))
    assert tokens == generate(small, torch.tensor([ids]), 29, **sampling)[0, 3:].tolist()


def test_stream_stops_after_the_end_of_text_token_as_generate_does(small):
    free = list(stream(small, [1, 2], 20))
    eos = free[5]  # pretend the sixth token ends the text
    ended = list(stream(small, [1, 2], 20, eos_id=eos))
    assert ended == free[: free.index(eos) + 1]
    assert ended == generate(small, torch.tensor([[1, 2]]), 20, eos_id=eos)[0, 2:].tolist()


def test_stream_checks_its_settings_when_called_not_when_read(small):
    with pytest.raises(ValueError, match="at least one prompt token"):
        stream(small, [], 3)
    with pytest.raises(ValueError, match="30 prompt \\+ 3 new tokens exceed the context length 32"):
        stream(small, [0] * 30, 3)
    with pytest.raises(ValueError, match="temperature"):
        stream(small, [0], 3, temperature=-1.0)


def test_stream_restores_the_models_mode_even_when_closed_early(small):
    small.train()
    tokens = stream(small, [1, 2, 3], 10)
    next(tokens)
    assert not small.training  # generating: eval mode, no dropout
    tokens.close()
    assert small.training
    small.eval()


# -- the prompt --------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["Name a colour.", "Rewrite in the passive voice:\nThe chef "
                                  "cooked the meal.", "  spaces and ünïcödé ☕ 你好  "])
def test_one_user_message_is_exactly_meeting_6s_instruction_prompt(tiny, enc, text):
    chat = ChatSession(tiny, enc)
    assert chat.prompt_ids([user(text)]) == instruct.prompt_ids(entry(text), enc)
    assert chat.format_messages([user(text)]) == (instruct.format_prompt(entry(text))
                                                  + instruct.RESPONSE_HEADER)


def test_a_conversation_is_written_turn_after_turn_each_answer_ended_by_endoftext(tiny, enc):
    chat = ChatSession(tiny, enc)
    messages = [{"role": "system", "content": "You answer briefly."}, user("Hi!"),
                assistant("Hello."), user("Name a colour.")]
    assert chat.format_messages(messages) == (
        "You answer briefly.\n\n### Instruction:\nHi!\n\n### Response:\nHello.<|endoftext|>"
        "\n\n### Instruction:\nName a colour.\n\n### Response:\n")


def test_the_first_turn_has_the_tokens_of_a_training_example(tiny, enc):
    chat = ChatSession(tiny, enc)
    first = {"instruction": "Hi!", "input": "", "output": "Hello."}
    ids = chat.prompt_ids([user("Hi!"), assistant("Hello."), user("And now?")])
    example, _ = instruct.encode_example(first, enc)
    assert ids == (example + [EOT] + enc.encode(INSTRUCTION_HEADER + "And now?")
                   + enc.encode(instruct.RESPONSE_HEADER))


def test_endoftext_typed_by_a_user_stays_plain_text(tiny, enc):
    ids = ChatSession(tiny, enc).prompt_ids([user("end <|endoftext|> here")])
    assert ids.count(EOT) == 0
    assert enc.decode(ids).count("<|endoftext|>") == 1


def test_the_oldest_turns_are_dropped_until_prompt_and_reply_fit(enc):
    turns = [user("First question, about the weather today?"), assistant("Sunny and warm."),
             user("Second question: and tomorrow?"), assistant("Rain, most likely."),
             user("Third: what should I wear?")]
    everything = [{"role": "system", "content": "Be brief."}, *turns]
    kept = [everything[0], *turns[2:]]  # whole turns go, the system prompt stays
    roomy = ChatSession(Scripted([EOT]), enc)
    n_all = len(roomy.prompt_ids(everything))
    chat = ChatSession(Scripted([EOT], context_length=n_all + 19), enc, max_new_tokens=20)
    assert chat.prompt_ids(everything, max_new_tokens=19) == roomy.prompt_ids(everything)
    ids = chat.prompt_ids(everything)  # one token short of room for everything
    assert ids == roomy.prompt_ids(kept)
    assert len(ids) + 20 <= chat.context_length
    assert chat.stream(everything).dropped_messages == 2


def test_a_last_message_that_alone_does_not_fit_is_a_clear_error(enc):
    chat = ChatSession(Scripted([EOT], context_length=64), enc, max_new_tokens=16)
    with pytest.raises(ContextLengthError, match="exceeds the context length 64: shorten"):
        chat.prompt_ids([user("A short one."), assistant("Yes."), user("word " * 40)])
    assert len(chat.prompt_ids([user("A short one.")])) + 16 <= 64


@pytest.mark.parametrize("messages, complaint", [
    ([], "messages is empty"),
    ("Hello", "must be a list"),
    ([user("Hi"), assistant("Hello")], "last message must be the user's"),
    ([{"role": "robot", "content": "Hi"}], "message 0 must be a dict with a 'role'"),
    ([{"role": "user", "content": ["Hi"]}], "message 0 needs text 'content'"),
    ([user("Hi"), {"role": "system", "content": "Be brief."}, user("Hi")], "system messages must"),
])
def test_a_malformed_conversation_is_refused_by_what_is_wrong(tiny, enc, messages, complaint):
    with pytest.raises(ValueError, match=complaint):
        ChatSession(tiny, enc).stream(messages)


def test_reply_settings_are_checked_by_name(tiny, enc):
    chat = ChatSession(tiny, enc)
    with pytest.raises(ValueError, match="max_new_tokens must be an integer from 1 to 127"):
        chat.stream([user("Hi")], max_new_tokens=128)
    with pytest.raises(ValueError, match="unknown settings \\['temprature'\\]"):
        chat.stream([user("Hi")], temprature=1.0)
    with pytest.raises(ValueError, match="top_p"):
        ChatSession(tiny, enc, top_p=1.5)


# -- the reply ---------------------------------------------------------------------------

def scripted_reply(enc, text: str, tail: list[int]) -> tuple[list[str], object]:
    """The pieces of a ChatSession reply when the model writes `text` then `tail`."""
    chat = ChatSession(Scripted(enc.encode(text) + tail), enc, max_new_tokens=64)
    reply = chat.stream([user("Say something.")])
    return list(reply), reply


@pytest.mark.parametrize("text, tail", [
    ("  The meal was cooked by the chef.\n", [EOT]),
    ("Blue.\n\n### Instruction:\nName another colour.", [EOT]),  # a new section: cut there
    ("Red, or ##green##, ### or blue", [EOT]),
    ("no end of text in sight " * 12, []),  # cut by max_new_tokens
])
def test_the_reply_is_what_instruct_respond_answers(enc, text, tail):
    script = (enc.encode(text) + tail + [EOT] * 64)[:64]
    expected = instruct.respond(Scripted(script), enc, entry("Say something."), max_new_tokens=64)
    pieces, reply = scripted_reply(enc, text, tail + [EOT] * 64)
    assert "".join(pieces) == reply.text == expected
    assert all(pieces), "every piece carries text"


def test_greedy_replies_of_a_real_model_match_instruct_respond(tiny, enc):
    chat = ChatSession(tiny, enc, max_new_tokens=20)
    for text in ("Name a colour.", "What is 2 + 2?"):
        assert chat.reply([user(text)]) == instruct.respond(tiny, enc, entry(text), 20)


def test_a_character_split_across_tokens_is_never_shown_in_halves(enc):
    text = "Café ☕ 你好 🙂!"
    tokens = enc.encode(text)
    halves = [t for t in tokens if "\ufffd" in enc.decode([t])]
    assert halves, "this text should have characters split across tokens"
    pieces, _ = scripted_reply(enc, text, [EOT])
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    assert len(pieces) > 1


def test_the_reply_counts_its_tokens_and_says_why_it_ended(enc):
    _, ended = scripted_reply(enc, "Blue.", [EOT])
    assert (ended.finish_reason, ended.completion_tokens) == ("stop", len(enc.encode("Blue.")) + 1)
    _, cut = scripted_reply(enc, "Blue.\n\n### Instruction: more", [EOT])
    assert cut.finish_reason == "stop"
    assert cut.completion_tokens < len(enc.encode("Blue.\n\n### Instruction: more"))  # early
    _, long = scripted_reply(enc, "word " * 80, [])
    assert (long.finish_reason, long.completion_tokens) == ("length", 64)
    assert long.prompt_tokens == len(instruct.prompt_ids(entry("Say something."), enc))


@pytest.fixture(scope="module")
def pool(enc):
    """Tokens that stress the reply's assembly: whitespace, #s, halves of characters, text."""
    texts = [" a", "Paris", ".", "\n", " ", "  ", "#", "##", "###", " #", "é", " ☕", "你", "🙂"]
    byte_halves = [enc.encode_single_token(bytes([b])) for b in (0xC3, 0xA9, 0xE2, 0x98, 0x95)]
    return sorted({t for s in texts for t in enc.encode(s)} | set(byte_halves))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_streamed_pieces_always_add_up_to_respond_s_answer(enc, pool, data):
    script = data.draw(st.lists(st.sampled_from(pool), max_size=24))
    script = script[: data.draw(st.integers(0, len(script)))] + [EOT] * 25  # maybe no EOT
    pieces, reply = scripted_reply(enc, "", script)
    answer = instruct.respond(Scripted(script), enc, entry("Say something."), max_new_tokens=25)
    assert "".join(pieces) == answer
    assert all(pieces)
    # A U+FFFD only ever shows where the finished answer has one too.
    assert sum(p.count("\ufffd") for p in pieces) == answer.count("\ufffd")


@pytest.mark.parametrize("text, shown", [("  Paris.\n\n##", ("Paris.", False)),
                                         ("Paris.\n\n### Instruction:", ("Paris.", True)),
                                         ("caf\ufffd", ("caf", False)), ("", ("", False))])
def test_visible_answer_holds_back_what_may_still_change(text, shown):
    assert visible_answer(text) == shown


def test_sampled_replies_repeat_with_a_seed(tiny, enc):
    chat = ChatSession(tiny, enc, max_new_tokens=16, temperature=1.0)
    runs = [chat.reply([user("Hi")], seed=s) for s in (1, 1, 2)]
    assert runs[0] == runs[1] != runs[2]


# -- a run folder and the terminal chat --------------------------------------------------

def test_from_run_loads_the_course_model_by_default(enc):
    chat = ChatSession.from_run(device="cpu", max_new_tokens=8)
    assert chat.context_length == 256 and chat.eos_id == EOT
    assert chat.prompt_ids([user("Hi")]) == instruct.prompt_ids(entry("Hi"), enc)


def run_chat(stdin: str, *flags: str, tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BUILDLLM_DEVICE": "cpu",
           "BUILDLLM_CACHE": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "buildllm.chat", *flags], input=stdin,
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)


def test_the_terminal_chat_keeps_the_history_streams_and_resets(enc, tmp_path):
    settings = {"max_new_tokens": 12, "temperature": 1.0, "seed": 5}
    flags = ["--checkpoint", str(COURSE_MODEL_DIR), "--max-new-tokens", "12",
             "--temperature", "1.0", "--seed", "5"]
    done = run_chat("Hello there\nTell me more.\n/reset\nHello there\n/quit\n", *flags,
                    tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    chat = ChatSession.from_run(COURSE_MODEL_DIR, device="cpu", **settings)
    first = chat.reply([user("Hello there")])
    second = chat.reply([user("Hello there"), assistant(first), user("Tell me more.")])
    assert chat.reply([user("Tell me more.")]) != second, "history should change the reply"
    shown = [f"bot> {first}\n", f"bot> {second}\n", "(conversation cleared)", f"bot> {first}\n"]
    at = 0
    for text in shown:  # each in order
        at = done.stdout.index(text, at) + len(text)
    assert done.stdout.count("bot> ") == 3


def test_the_terminal_chat_ends_quietly_at_end_of_input(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello\n"))  # then Ctrl-D: end of input
    chat_main(["--max-new-tokens", "4", "--device", "cpu"])
    out = capsys.readouterr().out
    assert out.startswith("Chatting with the course model") and out.count("bot> ") == 1
    assert out.endswith("you> \n")
