"""Meeting 7's figures: the capstone's stages, int8 weights, serving and retrieval."""

from figures import figure
from figures.kit import MUTED, Canvas


def _card(c: Canvas, x: float, y: float, w: float, h: float, title: str, lines: list[str], *,
          color: str, mono_title: bool = True, mono_lines: bool = True, size: float = 9,
          dashed: bool = False) -> None:
    """A box with a title line and smaller lines under it, all centred."""
    c.box(x, y, w, h, color=color, dashed=dashed)
    top = y + h / 2 - 7 * len(lines)
    c.text(x + w / 2, top, title, mono=mono_title, size=10, weight="bold")
    for i, line in enumerate(lines):
        c.text(x + w / 2, top + 15 * (i + 1), line, mono=mono_lines, size=size)


# -- notebook 01: the capstone -------------------------------------------------------------

STAGES = [  # (function, what it is, folder, files, or None for chat)
    ("train_tokenizer", "byte-level BPE (Meeting 2)", "1-tokenizer/", ["tokenizer.json"]),
    ("pretrain", "a GPT from scratch (Meeting 5)", "2-pretrain/",
     ["run.json  model.safetensors", "log.jsonl  loss.png"]),
    ("instruction_tune", "answers only (Meeting 6)", "3-instruct/",
     ["run.json  model.safetensors", "tokenizer.json"]),
    ("evaluate", "held-out loss, ROUGE-L, F1", "4-evaluate/", ["scores.json"]),
    ("chat", "ChatSession (Meeting 7)", None, ["you> ...  bot> ..."]),
]


@figure("m7_capstone_stages", "The capstone's stages",
        alt="The capstone pipeline from top to bottom: TEXT_FOLDER of .txt files, then "
            "train_tokenizer, pretrain, instruction_tune, evaluate and chat. Each of the first "
            "four writes a folder under PROJECT (1-tokenizer to 4-evaluate) and, last, a "
            "stage.json whose key fingerprints its settings and the key before it: a matching "
            "key loads the stage, a changed one re-runs it and every stage after it.",
        shows=("TEXT_FOLDER", "PROJECT", "capstone-run"))
def capstone_stages() -> Canvas:
    c = Canvas(880, 462)
    sx, sw, fx, fw, kx, kw, pitch, h = 20, 250, 320, 300, 680, 110, 66, 52
    c.box(sx, 14, sw, 40, "TEXT_FOLDER: *.txt files", color="blue", mono=True, size=10)
    c.text(fx, 34, 'PROJECT = "capstone-run"', mono=True, size=10, ha="left")
    c.text(kx + kw / 2, 34, "written last", size=10, color=MUTED)
    c.arrow((sx + sw / 2, 54), (sx + sw / 2, 74))
    for i, (name, what, folder, files) in enumerate(STAGES):
        y = 76 + i * pitch
        _card(c, sx, y, sw, h, f"{i + 1} · {name}", [what], color="orange", mono_lines=False)
        if i < len(STAGES) - 1:
            c.arrow((sx + sw / 2, y + h), (sx + sw / 2, y + pitch))
        c.arrow((sx + sw, y + h / 2), (fx, y + h / 2))
        if folder is None:
            _card(c, fx, y, fw, h, "a reply, streamed", files, color="purple", mono_title=False)
            continue
        _card(c, fx, y, fw, h, folder, files, color="yellow")
        c.arrow((fx + fw, y + h / 2), (kx, y + h / 2))
        c.box(kx, y + 8, kw, h - 16, "stage.json", color="yellow", mono=True, size=10)
        if i < len(STAGES) - 2:
            c.arrow((kx + kw / 2, y + h - 8), (kx + kw / 2, y + pitch + 8), label="key")
    c.text(kx + kw + 12, 76 + h / 2, "settings", ha="left", size=9, color=MUTED)
    c.text(kx + kw + 12, 76 + h / 2 + 14, "+ key", ha="left", size=9, color=MUTED)
    y = 76 + 5 * pitch + 6
    c.text(20, y, "Run again: a stage whose key matches loads in a moment; a changed setting "
                  "re-runs that stage and every one after it.", ha="left", size=10)
    c.text(20, y + 20, "An interrupted pretraining resumes from its last checkpoint, as long "
                       "as the PROJECT folder is still there.", ha="left", size=10)
    return c


# -- notebook 02: int8 weights ---------------------------------------------------------------

W0 = ["-0.0276", "0.0293", "0.0112", "0.0554", "0.0192", "0.0026"]  # what the notebook prints
Q0 = ["-49", "52", "20", "99", "34", "5"]
W_HAT0 = ["-0.0275", "0.0292", "0.0112", "0.0556", "0.0191", "0.0028"]


@figure("m7_int8_rows", "int8 rows and scales",
        alt="A 512 by 128 weight matrix W quantized row by row. Each row gets its own step, "
            "its largest absolute value divided by 127 (0.00056 for row 0); each weight is "
            "stored as the int8 q = round(W / scale), and W_hat = q × scale is what the model "
            "computes with.",
        shows=("W_hat", "scale", "(512, 128)", "0.00056", "65,536"))
def int8_rows() -> Canvas:
    c = Canvas(860, 380)
    c.text(20, 22, "scale = W.abs().amax(dim=1) / 127   # one step per row", mono=True,
           size=10, ha="left")
    mx, my, cell, sx = 50, 80, 20, 50 + 6 * 20 + 24
    fills = [["yellow"] * 6] + [["green"] * 6 for _ in range(8)]
    c.grid(mx, my, [[""] * 6 for _ in range(9)], cell=cell, fills=fills)
    c.grid(sx, my, [[""] for _ in range(9)], cell=cell, fills=[["yellow"]] + [["green"]] * 8)
    c.text(mx + 3 * cell, my - 14, "W (512, 128)", mono=True, size=10)
    c.text(sx + cell / 2, my - 28, "scale", mono=True, size=10)
    c.text(sx + cell / 2, my - 14, "(512,)", mono=True, size=10)
    c.text(mx - 8, my + cell / 2, "0", mono=True, size=9, ha="right")
    c.text(mx - 8, my + 8.5 * cell, "511", mono=True, size=9, ha="right")
    c.text(mx + 3.5 * cell + 12, my + 9 * cell + 16, "one scale per row", size=9, color=MUTED)

    gx, gw, rows = 356, 62, [("W[0, :6]", W0, "float32"),
                             ("q[0, :6]", Q0, "int8 in [-127, 127]"),
                             ("W_hat[0, :6]", W_HAT0, "float32 again")]
    for i, (label, values, kind) in enumerate(rows):
        y = 56 + i * 110
        c.text(gx - 12, y + gw / 2, label, mono=True, size=10, ha="right")
        c.grid(gx, y, [values], cell=gw, fills=[["green"] * 6], size=9)
        c.text(gx + 6 * gw + 10, y + gw / 2, kind, size=9, color=MUTED, ha="left")
    c.line([(sx + cell + 4, my + cell / 2), (gx - 100, 56 + gw / 2)], color=MUTED, dashed=True)
    for i, op in enumerate(["q = round(W / scale)", "W_hat = q.float() * scale"]):
        y = 56 + i * 110 + gw
        c.arrow((gx + 3 * gw, y + 6), (gx + 3 * gw, y + 46))
        c.text(gx + 3 * gw + 14, y + 26, op, mono=True, size=10, ha="left", color="#c2410c")
    c.text(gx + 3 * gw - 14, 56 + gw + 26, "scale[0] = 0.00056", mono=True, size=10,
           ha="right")
    c.text(20, 362, "bytes: float32 262,144 → int8 65,536 + scales 2,048; rounding moves a "
                    "weight by at most half a step", size=10, ha="left")
    return c


@figure("m7_int8_tied", "One int8 matrix for two layers",
        alt="The tied token embedding and output layer after quantize_int8: one int8 matrix "
            "(50257, 128) and one scale per row (per token) serve both. tok_emb, an "
            "Int8Embedding, picks the rows of the token ids and scales them; out_head, an "
            "Int8Linear, multiplies the hidden vectors by the whole int8 matrix and scales each "
            "of the 50,257 outputs.",
        shows=("Int8Embedding", "Int8Linear", "tok_emb", "out_head", "(50257, 128)"))
def int8_tied() -> Canvas:
    c = Canvas(860, 330)
    mx, my, cell = 356, 70, 22
    picked = {1, 4}  # the rows that two token ids pick
    fills = [["yellow" if r in picked else "green"] * 5 for r in range(8)]
    c.grid(mx, my, [[""] * 5 for _ in range(8)], cell=cell, fills=fills)
    sx = mx + 5 * cell + 36
    c.grid(sx, my, [[""] for _ in range(8)], cell=cell,
           fills=[["yellow" if r in picked else "green"] for r in range(8)])
    c.text(mx + 2.5 * cell, my - 30, "weight: int8", mono=True, size=10)
    c.text(mx + 2.5 * cell, my - 14, "(50257, 128)", mono=True, size=10)
    c.text(sx + cell / 2 + 6, my - 30, "scale", mono=True, size=10)
    c.text(sx + cell / 2 + 6, my - 14, "(50257,)", mono=True, size=10)
    c.text(mx + 3 * cell + 5, my + 8 * cell + 16, "one row per token, stored once", size=9,
           color=MUTED)

    left, right = 30, 610
    c.box(left, 40, 220, 34, "ids (batch, tokens)", color="blue", mono=True, size=10)
    c.arrow((left + 110, 74), (left + 110, 100))
    _card(c, left, 102, 220, 56, "tok_emb", ["Int8Embedding", "q[ids] * scale[ids]"],
          color="green")
    c.arrow((left + 110, 158), (left + 110, 184))
    c.box(left, 186, 220, 34, "(batch, tokens, 128)", color="blue", mono=True, size=10)
    c.text(left + 110, 236, "dequantizes only the rows it picks", size=9, color=MUTED)
    for r in sorted(picked):
        c.arrow((mx, my + (r + 0.5) * cell), (left + 222, 130), dashed=True, color=MUTED)

    c.box(right, 40, 220, 34, "x (batch, tokens, 128)", color="blue", mono=True, size=10)
    c.arrow((right + 110, 74), (right + 110, 100))
    _card(c, right, 102, 220, 56, "out_head", ["Int8Linear", "(x @ q.T) * scale"],
          color="green")
    c.arrow((right + 110, 158), (right + 110, 184))
    c.box(right, 186, 220, 34, "logits (…, 50257)", color="purple", mono=True, size=10)
    c.text(right + 110, 236, "scales each output, not each weight", size=9, color=MUTED)
    c.arrow((sx + cell + 2, my + 4 * cell), (right - 2, 130), dashed=True,
            color=MUTED)
    c.text(430, 300, "tok_emb.weight is out_head.weight: the tie survives, one int8 copy "
                     "for both", mono=False, size=10)
    return c


# -- notebook 03: serving --------------------------------------------------------------------

CONVERSATION = [  # notebook 03's conversation: (role, content shown, the prompt's lines)
    ("system", "You are a helpful assistant. …",
     ["You are a helpful assistant.", "Answer in one sentence."]),
    ("user", "Who wrote Hamlet?", ["### Instruction:", "Who wrote Hamlet?"]),
    ("assistant", "William Shakespeare.",
     ["### Response:", "William Shakespeare.<|endoftext|>"]),
    ("user", "When was it written?", ["### Instruction:", "When was it written?"]),
]


@figure("m7_chat_prompt", "A conversation as one prompt",
        alt="The four messages of a conversation (system, user, assistant, user) and the one "
            "prompt that format_messages writes from them: the system message in place of "
            "Alpaca's preamble, each user message an ### Instruction:, each earlier answer a "
            "### Response: ending in the end-of-text token, then an open ### Response: where "
            "the reply goes. Prompt and reply must fit in the context of 256 tokens; if not, "
            "the oldest turns are dropped.",
        shows=("format_messages", "49 tokens", "context 256"))
def chat_prompt() -> Canvas:
    c = Canvas(860, 350)
    mx, mw, px, pw, pitch, h = 20, 270, 340, 300, 56, 44
    c.text(mx, 22, "conversation: a list of messages", size=10, ha="left", weight="bold")
    c.text(px, 22, "chat.format_messages(conversation)", mono=True, size=10, ha="left")
    for i, (role, content, lines) in enumerate(CONVERSATION):
        y = 44 + i * pitch
        c.box(mx, y, mw, h, color="blue")
        c.text(mx + 12, y + 14, role, mono=True, size=9, ha="left", color=MUTED)
        c.text(mx + 12, y + 30, content, size=10, ha="left")
        c.box(px, y, pw, h, color="white")
        for j, line in enumerate(lines):
            c.text(px + 12, y + 15 + 15 * j, line, mono=True, size=9, ha="left")
        c.arrow((mx + mw, y + h / 2), (px, y + h / 2))
    y = 44 + 4 * pitch
    c.box(px, y, pw, h, color="white")
    c.text(px + 12, y + 15, "### Response:", mono=True, size=9, ha="left")
    c.box(px + 12, y + 24, pw - 24, 16, color="purple", radius=3)
    c.text(px + pw / 2, y + 32, "the model writes the reply here", size=9)
    top, bottom = 44, 44 + 4 * pitch + h
    c.line([(px + pw + 14, top), (px + pw + 22, top), (px + pw + 22, bottom),
            (px + pw + 14, bottom)])
    for j, (line, mono) in enumerate([("49 tokens", True), ("+ the reply's tokens", False),
                                      ("must fit in the", False), ("context 256", True)]):
        c.text(px + pw + 34, 150 + 17 * j, line, mono=mono, size=10, ha="left")
    c.text(px + pw + 34, 234, "If not, the oldest", size=9, color=MUTED, ha="left")
    c.text(px + pw + 34, 250, "turns are dropped.", size=9, color=MUTED, ha="left")
    c.text(mx, 336, "With one user message this is exactly the prompt of instruction tuning "
                    "(instruct.prompt_ids).", size=10, ha="left")
    return c


@figure("m7_request_path", "A served request's path",
        alt="A chat-completions request through the server: the client POSTs to "
            "/v1/chat/completions; the caller checks, the body and the model name are "
            "checked; the conversation is written in the chat layout and fitted into the "
            "context; the request waits in the engine's queue, joins the batch, and each new "
            "token goes back as text, streamed as server-sent events. Each check refuses a bad "
            "request with its own status.",
        shows=("create_app", "chat.completions.create", "/v1"))
def request_path() -> Canvas:
    c = Canvas(900, 370)
    c.text(20, 18, 'client.chat.completions.create(model=name, messages=question, '
                   'stream=True)', mono=True, size=9, ha="left")
    c.box(20, 60, 140, 250, color="blue")
    c.text(90, 170, "client", weight="bold")
    c.text(90, 190, "OpenAI(base_url=", mono=True, size=9)
    c.text(90, 204, "server.url/v1)", mono=True, size=9)
    top = [("caller checks", ["Host header, API key", "JSON content type"], "421 · 401 · 415"),
           ("read and parse", ["body ≤ 1 MiB, fields", "model name"],
            "413 · 408 · 400 · 404"),
           ("chat layout", ["format the messages", "drop oldest turns to fit"],
            "400 context_length_exceeded")]
    xs, w, h = [200, 435, 670], 210, 64
    for x, (title, lines, errors) in zip(xs, top, strict=True):
        _card(c, x, 74, w, h, title, lines, color="orange", mono_title=False, mono_lines=False)
        c.text(x + w / 2, 152, errors, mono=True, size=9, color="#b91c1c")
    c.text(166, 50, "POST /v1/chat/completions", mono=True, size=9, ha="left")
    c.arrow((160, 106), (200, 106))
    c.arrow((410, 106), (435, 106))
    c.arrow((645, 106), (670, 106))
    c.arrow((775, 162), (775, 222))
    c.text(766, 192, "Request(ids, max_new_tokens)", mono=True, size=9, ha="right")
    bottom = [("text → events", ['data: {"delta": ...}', "data: [DONE]"], "purple"),
              ("the batch", ["one token per row", "per step"], "green"),
              ("engine queue", ["waits for a row", "429 when full"], "yellow")]
    for x, (title, lines, color) in zip(xs, bottom, strict=True):
        _card(c, x, 226, w, h, title, lines, color=color, mono_title=False,
              mono_lines=title.startswith("text"))
    c.arrow((670, 258), (645, 258))
    c.arrow((435, 258), (410, 258))
    c.arrow((200, 258), (160, 258))
    c.line([(425, 214), (890, 214), (890, 302), (425, 302), (425, 214)], color=MUTED,
           dashed=True)
    c.text(657, 316, "the engine's thread: it owns the model", size=9, color=MUTED)
    c.text(305, 306, "or, without stream, one JSON body", size=9, color=MUTED)
    c.text(20, 350, "create_app(chat, name) builds the FastAPI app: its event loop answers "
                    "every client and never waits for the model.", size=10, ha="left")
    return c


BATCH_ROWS = {  # request → real tokens in the cache, in each picture of the batch
    "step": {0: 6, 1: 8, 2: 5, 3: 7},
    "leave": {0: 6, 2: 5, 3: 7},
    "join": {0: 6, 2: 5, 3: 7, 4: 9},
}


def _batch(c: Canvas, x: float, y: float, rows: dict[int, int], cell: float = 20) -> None:
    """A batch's KV cache aligned right: padding (grey), cached tokens (yellow), and each row's
    newest token (purple), fed in at the next step."""
    width = max(rows.values())
    for i, (request, n) in enumerate(rows.items()):
        fills = [["grey"] * (width - n) + ["yellow"] * n]
        c.grid(x, y + i * cell, [[""] * width], cell=cell, fills=fills)
        c.grid(x + width * cell + 6, y + i * cell, [[""]], cell=cell, fills=[["purple"]])
        c.text(x - 8, y + (i + 0.5) * cell, str(request), mono=True, size=9, ha="right")


@figure("m7_continuous_batching", "Continuous batching",
        alt="Three pictures of an Engine with max_batch=4. A step gives every row its next "
            "token in one forward pass; request 1 has written the end-of-text token, so its row "
            "leaves, with the cache columns no other row uses; request 4, prefilled alone, "
            "joins as a new row. The KV cache is aligned on the right, padding on the left "
            "hidden by the mask.",
        shows=("Engine", "max_batch=4"))
def continuous_batching() -> Canvas:
    c = Canvas(880, 330)
    c.text(20, 18, "Engine(chat.model, max_batch=4): at most 4 rows; each step decodes one "
                   "token for every row", mono=False, size=10, ha="left")
    titles = {"step": ("1. a step", "request 1 writes <|endoftext|>"),
              "leave": ("2. request 1 leaves", "so does a column no row uses"),
              "join": ("3. request 4 joins", "prefilled alone, copied in")}
    for i, (name, rows) in enumerate(BATCH_ROWS.items()):
        x = 50 + i * 290
        title, note = titles[name]
        c.text(x, 50, title, weight="bold", size=10, ha="left")
        c.text(x, 68, note, size=9, color=MUTED, ha="left")
        _batch(c, x, 84, rows)
        if i < 2:
            c.arrow((x + 228, 154), (x + 262, 154))
    c.text(50 + 8 * 20 + 6 + 24, 84 + 1.5 * 20, "← ends", size=9, ha="left")
    qx, qy = 520, 230
    c.text(qx - 10, qy + 14, "waiting:", size=10, ha="right")
    for j, request in enumerate([4, 5, 6, 7]):
        c.box(qx + j * 34, qy, 28, 28, str(request), color="blue", mono=True, size=9,
              radius=3, dashed=request == 4)
    c.arrow((qx + 14, qy), (630 - 8, 84 + 3.5 * 20 + 12), dashed=True, color=MUTED)
    legend = [("yellow", "keys and values in the KV cache"),
              ("grey", "padding: the mask hides it"),
              ("purple", "newest token, fed in at the next step")]
    for j, (color, words) in enumerate(legend):
        c.key(20, 212 + j * 30, color, words)
    c.text(20, 312, "Rows are aligned on the right and positions count real tokens only, so "
                    "each reply is exactly the one it gets alone.", size=10, ha="left")
    return c


# -- notebook 04: retrieval-augmented generation -------------------------------------------

@figure("m7_rag_pipeline", "Retrieval, then generation",
        alt="RAG in three lanes. Once: the story is cut by split_passages into 82 passages, "
            "and each becomes a TF-IDF vector of unit length. For each question: the question "
            "is embedded the same way and cosine_top_k finds the closest passages. Then "
            "rag_entry puts the question and the passages into the prompt, and the model "
            "writes the answer.",
        shows=("split_passages", "cosine_top_k", "rag_entry", "82 passages"))
def rag_pipeline() -> Canvas:
    c = Canvas(900, 380)
    xs, w, h = [20 + i * 178 for i in range(5)], 150, 56
    lanes = [("once: index the passages", 50), ("for each question: retrieve", 160),
             ("then: generate", 270)]
    for label, y in lanes:
        c.text(20, y - 12, label, size=10, color=MUTED, ha="left")
    first = [("the-verdict.txt", ["the story"], "blue"),
             ("split_passages", ["max_words=60"], "orange"),
             ("82 passages", ["of 11 to 60 words"], "blue"),
             ("TfidfEmbedder", ["a vector per text"], "orange"),
             ("(82, 1073)", ["unit vectors"], "blue")]
    second = [("question", ["How did Stroud die?"], "blue"),
              ("TfidfEmbedder", ["the same one"], "orange"),
              ("(1073,)", ["unit vector"], "blue"),
              ("cosine_top_k", ["one matmul, top k"], "orange"),
              ("top-k passages", ["best first"], "blue")]
    for y, lane in ((lanes[0][1], first), (lanes[1][1], second)):
        for i, (title, lines, color) in enumerate(lane):
            _card(c, xs[i], y, w, h, title, lines, color=color, mono_lines=False)
            if i:
                c.arrow((xs[i - 1] + w, y + h / 2), (xs[i], y + h / 2))
    c.arrow((xs[4] + w / 2, 50 + h), (xs[3] + w / 2, 160), label="")
    y = lanes[2][1]
    c.box(xs[3], y, xs[4] + w - xs[3], 76, color="blue")
    c.text(xs[3] + 12, y + 14, "rag_entry: the prompt", mono=False, size=10, weight="bold",
           ha="left")
    for j, line in enumerate(["### Instruction: the question", "### Input: the passages",
                              "### Response:"]):
        c.text(xs[3] + 12, y + 33 + 15 * j, line, mono=True, size=9, ha="left")
    c.arrow((xs[4] + w / 2, 160 + h), (xs[4] + w / 2, y))
    _card(c, xs[2], y + 10, w, h, "model", ["respond(...)"], color="green",
          mono_lines=True)
    _card(c, xs[1], y + 10, w, h, "answer", ["greedy, 32 tokens"], color="purple",
          mono_title=False, mono_lines=False)
    c.arrow((xs[3], y + 38), (xs[2] + w, y + 38))
    c.arrow((xs[2], y + 38), (xs[1] + w, y + 38))
    c.text(20, 366, "Retrieval finds knowledge the weights do not hold; the model must still "
                    "be able to copy it from the prompt.", size=10, ha="left")
    return c


@figure("m7_cosine_search", "Cosine search in one matrix product",
        alt="The shapes of cosine search: unit_questions (10, 1073) times unit_passages.T "
            "(1073, 82) gives similarity (10, 82), the cosine of every question with every "
            "passage; row i times column j is cell (i, j). topk(3, dim=1) then keeps the three "
            "best passages of each row.",
        shows=("unit_questions", "unit_passages", "similarity", "topk(3, dim=1)",
               "(82, 1073)"))
def cosine_search() -> Canvas:
    c = Canvas(880, 340)
    px, py, pw, ph = 290, 40, 246, 150  # unit_passages.T: 1073 rows, 82 columns
    qx, qy, qw, qh = 110, 214, 150, 60  # unit_questions: 10 rows, 1073 columns
    c.box(px, py, pw, ph, color="blue", radius=2)
    c.box(qx, qy, qw, qh, color="blue", radius=2)
    c.box(px, qy, pw, qh, color="purple", radius=2)
    col, row = px + 150, qy + 24  # one passage j, one question i
    c.box(col, py, 12, ph, color="yellow", radius=0)
    c.box(qx, row, qw, 12, color="yellow", radius=0)
    c.box(col, row, 12, 12, color="yellow", radius=0)
    c.text(px + pw / 2, py - 14, "unit_passages.T  (1073, 82)", mono=True, size=10)
    c.text(qx + qw / 2, qy + qh + 16, "unit_questions", mono=True, size=10)
    c.text(qx + qw / 2, qy + qh + 32, "(10, 1073)", mono=True, size=10)
    c.text(px + pw / 2, qy + qh + 16, "similarity  (10, 82)", mono=True, size=10)
    c.text(px + pw / 2, qy + qh + 32, "a cosine per question and passage", size=9,
           color=MUTED)
    c.text(qx - 10, row + 6, "question i", size=9, ha="right")
    c.text(col + 6, py + ph + 12, "passage j", size=9)
    c.text(20, 22, "similarity = unit_questions", mono=True, size=10, ha="left")
    c.text(20, 40, "             @ unit_passages.T", mono=True, size=10, ha="left")
    c.text(20, 64, "cell (i, j): question i · passage j", size=9, color=MUTED, ha="left")
    c.text(px - 30, py + 100, "tfidf (82, 1073)", mono=True, size=9, ha="right")
    c.text(px - 30, py + 118, "÷ row norms, then .T", size=9, color=MUTED, ha="right")
    c.arrow((px - 24, py + 109), (px - 4, py + 109))

    tx = 690
    c.arrow((px + pw + 4, qy + qh / 2), (tx - 4, qy + qh / 2))
    c.text((px + pw + tx) / 2, qy + qh / 2 - 14, "topk(3, dim=1)", mono=True, size=10)
    c.grid(tx, qy - 6, [["", "", ""] for _ in range(3)], cell=24,
           fills=[["purple"] * 3] * 3)
    c.text(tx + 36, qy + 72 + 4, "⋮", size=11)
    c.text(tx + 36, qy + qh + 32, "top3.indices  (10, 3)", mono=True, size=10)
    c.text(tx + 36, qy + qh + 50, "the 3 best passages per question", size=9, color=MUTED)
    for j, line in enumerate(["Scale every vector to length 1 once:",
                              "then one matrix product gives",
                              "the cosine of every pair."]):
        c.text(720, 104 + 18 * j, line, size=10)
    c.text(720, 70, "cos(q, x) = q · x / (|q| |x|)", mono=True, size=10)
    return c
