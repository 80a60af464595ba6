"""buildllm.retrieval: passages, the two embedders, cosine search (against PyTorch and FAISS),
and the prompt that carries the retrieved passages."""

import importlib.util
import math

import pytest
import torch
import torch.nn.functional as F

from buildllm.data import fetch
from buildllm.instruct import format_prompt, prompt_ids
from buildllm.model import GPTConfig, GPTModel
from buildllm.retrieval import (
    GPTEmbedder,
    Hit,
    TfidfEmbedder,
    VectorIndex,
    cosine_top_k,
    faiss_top_k,
    hidden_states,
    rag_entry,
    split_passages,
    words,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = GPTConfig(context_length=32, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0)
FACTS = [
    "The Eiffel Tower stands in Paris and was finished in 1889.",
    "Photosynthesis lets plants turn sunlight, water and carbon dioxide into sugar.",
    "The Nile flows north through Egypt into the Mediterranean Sea.",
    "A transformer block holds an attention layer and a feed-forward layer.",
    "Mount Everest, on the border of Nepal and China, is the highest mountain on Earth.",
    "Bees make honey from the nectar they collect from flowers.",
]
QUESTIONS = [  # (question, the passage that answers it), in words the passages use
    ("Which city is the Eiffel Tower in?", 0),
    ("What do plants turn sunlight into?", 1),
    ("Into which sea does the Nile flow?", 2),
    ("Which layers does a transformer block hold?", 3),
    ("What is the highest mountain?", 4),
    ("What do bees collect from flowers?", 5),
]


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return GPTModel(TINY).eval()


def brute_force(queries, keys, k):
    """Every pair's cosine by PyTorch, then a full sort: the reference for cosine_top_k."""
    similarity = F.cosine_similarity(queries[:, None, :], keys[None, :, :], dim=-1)
    order = similarity.argsort(dim=1, descending=True)[:, :k]
    return similarity.gather(1, order), order


# -- cosine search ------------------------------------------------------------------------

def test_cosine_top_k_equals_brute_force_cosine_similarity():
    g = torch.Generator().manual_seed(0)
    queries, keys = torch.randn(7, 24, generator=g), torch.randn(50, 24, generator=g) * 3
    scores, ids = cosine_top_k(queries, keys, k=10)
    ref_scores, ref_ids = brute_force(queries, keys, k=10)
    assert torch.equal(ids, ref_ids)
    torch.testing.assert_close(scores, ref_scores)


@pytest.mark.skipif(importlib.util.find_spec("faiss") is None,
                    reason="faiss is not installed (pip install faiss-cpu), so the FAISS parity "
                           "check is skipped; the brute-force check above still runs")
def test_cosine_top_k_gives_the_same_ids_and_scores_as_faiss_on_unit_vectors():
    g = torch.Generator().manual_seed(1)
    queries, keys = torch.randn(9, 32, generator=g), torch.randn(200, 32, generator=g) * 2
    scores, ids = cosine_top_k(queries, keys, k=5)
    faiss_scores, faiss_ids = faiss_top_k(queries, keys, k=5)
    assert ids.tolist() == faiss_ids.tolist()
    torch.testing.assert_close(scores, faiss_scores, rtol=1e-5, atol=1e-6)


def test_faiss_top_k_checks_its_input_before_starting_a_process():
    with pytest.raises(ValueError, match="k must be between 1 and"):
        faiss_top_k(torch.ones(1, 2), torch.ones(3, 2), 4)


def test_a_zero_vector_has_cosine_zero_with_everything():
    scores, _ = cosine_top_k(torch.zeros(1, 3), torch.eye(3), k=3)
    assert scores.tolist() == [[0.0, 0.0, 0.0]]


@pytest.mark.parametrize("k", [0, -1, 4])
def test_cosine_top_k_rejects_k_outside_one_to_the_number_of_keys(k):
    with pytest.raises(ValueError, match="k must be between 1 and"):
        cosine_top_k(torch.ones(1, 2), torch.ones(3, 2), k)


def test_cosine_top_k_rejects_vectors_of_different_sizes():
    with pytest.raises(ValueError, match="same d"):
        cosine_top_k(torch.ones(1, 2), torch.ones(3, 4), 1)


# -- passages -------------------------------------------------------------------------------

def test_split_passages_keeps_every_word_in_order_within_the_limit():
    text = fetch("the-verdict.txt").read_text(encoding="utf-8")
    passages = split_passages(text, max_words=40)
    assert max(len(p.split()) for p in passages) <= 40
    assert " ".join(passages).split() == text.split()


def test_split_passages_packs_short_paragraphs_and_cuts_long_ones_between_sentences():
    text = "A b c.\n\nD e.\n\nF g h. I j k. L m n o p q r s t u v."
    assert split_passages(text, max_words=6) == [
        "A b c.\n\nD e.", "F g h. I j k.", "L m n o p", "q r s t u v."]


@pytest.mark.parametrize("max_words", [0, -3])
def test_split_passages_rejects_a_limit_below_one(max_words):
    with pytest.raises(ValueError, match="max_words"):
        split_passages("some text", max_words)


# -- TF-IDF -------------------------------------------------------------------------------------

def test_words_lower_cases_and_splits_on_anything_but_letters_and_digits():
    assert words("Jack's 2 GREAT--pictures!") == ["jack", "s", "2", "great", "pictures"]


def test_tfidf_weights_counts_by_smoothed_inverse_document_frequency():
    embed = TfidfEmbedder(["the cat sat", "the dog sat", "a bird"])
    assert list(embed.vocab) == ["a", "bird", "cat", "dog", "sat", "the"]
    vector = embed(["cat cat the, and a fish"])[0]  # "and", "fish": not in the collection
    idf = {n_docs: math.log(4 / (1 + n_docs)) + 1 for n_docs in (1, 2)}
    expected = [idf[1], 0.0, 2 * idf[1], 0.0, 0.0, idf[2]]
    torch.testing.assert_close(vector, torch.tensor(expected))


def test_tfidf_needs_a_collection_with_words():
    for corpus in ([], ["", "--"]):
        with pytest.raises(ValueError):
            TfidfEmbedder(corpus)


# -- the index ---------------------------------------------------------------------------------

def test_tfidf_search_finds_the_passage_that_answers_each_question():
    index = VectorIndex(FACTS, TfidfEmbedder(FACTS))
    found = [index.search(question, k=1)[0].id for question, _ in QUESTIONS]
    assert found == [answer for _, answer in QUESTIONS]


def test_search_returns_hits_best_first_with_their_cosines_and_texts():
    index = VectorIndex(FACTS, TfidfEmbedder(FACTS))
    hits = index.search("Where does the Nile flow?", k=3)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    row = index.scores(["Where does the Nile flow?"])[0]
    for hit in hits:
        assert hit.text == FACTS[hit.id]
        assert hit.score == pytest.approx(row[hit.id].item())


def test_index_scores_are_every_pair_cosine_similarity_by_pytorch():
    embed = TfidfEmbedder(FACTS)
    questions = [q for q, _ in QUESTIONS]
    reference = F.cosine_similarity(embed(questions)[:, None], embed(FACTS)[None], dim=-1)
    torch.testing.assert_close(VectorIndex(FACTS, embed).scores(questions), reference)


def test_index_rejects_an_empty_collection():
    with pytest.raises(ValueError, match="collection is empty"):
        VectorIndex([], TfidfEmbedder(FACTS))


def test_index_rejects_blank_passages():
    with pytest.raises(ValueError, match=r"passages \[1\]"):
        VectorIndex(["a cat", "  "], TfidfEmbedder(["a cat"]))


@pytest.mark.parametrize("k", [0, len(FACTS) + 1])
def test_search_rejects_k_outside_one_to_the_collection_size(k):
    index = VectorIndex(FACTS, TfidfEmbedder(FACTS))
    with pytest.raises(ValueError, match="k must be between 1 and the number of passages"):
        index.search("Nile", k=k)


@pytest.mark.parametrize("query", ["", "   \n"])
def test_search_rejects_an_empty_query(query):
    index = VectorIndex(FACTS, TfidfEmbedder(FACTS))
    with pytest.raises(ValueError, match="non-empty string"):
        index.search(query)


def test_search_refuses_a_query_that_shares_no_word_with_the_collection():
    index = VectorIndex(FACTS, TfidfEmbedder(FACTS))
    with pytest.raises(ValueError, match="all zeros"):
        index.search("Xylophone quartz?")


def test_search_takes_one_string_and_search_many_a_list():
    index = VectorIndex(FACTS, TfidfEmbedder(FACTS))
    with pytest.raises(ValueError, match="search_many"):
        index.search(["Nile"])
    with pytest.raises(ValueError, match="list of queries"):
        index.search_many("Nile")


# -- the GPT embedder -------------------------------------------------------------------------

def test_hidden_states_are_what_the_output_layer_turns_into_the_logits(tiny_model):
    ids = torch.randint(0, TINY.vocab_size, (2, 9), generator=torch.Generator().manual_seed(2))
    states = hidden_states(tiny_model, ids)
    assert states.shape == (2, 9, TINY.emb_dim)
    with torch.no_grad():
        torch.testing.assert_close(tiny_model.out_head(states), tiny_model(ids))


def test_gpt_embedder_is_the_mean_of_the_hidden_states_over_the_tokens(tiny_model, enc):
    text = "The Nile flows north."
    ids = torch.tensor([enc.encode(text)])
    expected = hidden_states(tiny_model, ids).mean(dim=1)
    torch.testing.assert_close(GPTEmbedder(tiny_model, enc)([text]), expected)


def test_gpt_embedder_gives_the_same_vectors_in_padded_batches_as_one_by_one(tiny_model, enc):
    texts = FACTS + ["Short.", "A much longer sentence than the one before it, by far."]
    batched = GPTEmbedder(tiny_model, enc, batch_size=4)(texts)
    single = GPTEmbedder(tiny_model, enc, batch_size=1)(texts)
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-6)


def test_gpt_embedder_after_fit_centers_the_collection_on_zero(tiny_model, enc):
    embed = GPTEmbedder(tiny_model, enc)
    raw = embed(FACTS)
    embed.fit(FACTS)
    centered = embed(FACTS)
    torch.testing.assert_close(centered.mean(dim=0), torch.zeros(TINY.emb_dim),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(centered, raw - raw.mean(dim=0))


def test_gpt_embedder_warns_about_text_past_the_context_and_embeds_its_start(tiny_model, enc):
    long_text = " ".join(["word"] * 100)  # 100 tokens, context 32
    with pytest.warns(UserWarning, match="longer than the context"):
        vector = GPTEmbedder(tiny_model, enc)([long_text])
    start = enc.decode(enc.encode(long_text)[:TINY.context_length])
    torch.testing.assert_close(vector, GPTEmbedder(tiny_model, enc)([start]))


def test_gpt_embedder_keeps_the_models_training_mode(enc):
    model = GPTModel(TINY).train()
    GPTEmbedder(model, enc)(["a text"])
    assert model.training


def test_gpt_embedder_rejects_text_without_tokens_and_a_bare_string(tiny_model, enc):
    embed = GPTEmbedder(tiny_model, enc)
    with pytest.raises(ValueError, match="no tokens"):
        embed(["fine", ""])
    with pytest.raises(ValueError, match="list of texts"):
        embed("a text")


def test_an_index_over_gpt_vectors_finds_each_passage_from_its_own_text(tiny_model, enc):
    index = VectorIndex(FACTS, GPTEmbedder(tiny_model, enc))
    assert [index.search(fact, k=1)[0].id for fact in FACTS] == list(range(len(FACTS)))


# -- the prompt ---------------------------------------------------------------------------------

def test_rag_entry_puts_the_question_first_and_the_passages_best_first_as_input(enc):
    hits = [Hit(2, 0.9, FACTS[2]), Hit(0, 0.5, FACTS[0])]
    entry = rag_entry("Where does the Nile flow?", hits, enc, context_length=256)
    assert entry == {"instruction": "Where does the Nile flow?",
                     "input": FACTS[2] + "\n\n" + FACTS[0]}
    assert "### Input:\n" + FACTS[2] in format_prompt(entry)


@pytest.mark.parametrize("context_length, max_new_tokens", [(96, 16), (128, 32), (256, 64)])
def test_rag_entry_fits_the_context_and_leaves_nothing_that_would_still_fit(
        enc, context_length, max_new_tokens):
    passages = split_passages(fetch("the-verdict.txt").read_text(encoding="utf-8"), 50)[:6]
    question = "Why did Jack Gisburn give up painting?"
    entry = rag_entry(question, passages, enc, context_length, max_new_tokens)
    assert len(prompt_ids(entry, enc)) <= context_length - max_new_tokens
    text = entry["input"]
    assert text.endswith(" ...")  # these passages never all fit: the last one kept is cut
    whole = max(j for j in range(len(passages))  # passages kept whole, best first
                if text.startswith("\n\n".join(passages[:j] + [""])))
    prefix = "\n\n".join(passages[:whole] + [""])
    n_words = len(text[len(prefix):].split()) - 1  # the words kept of the cut one, less "..."
    assert text[len(prefix):] == " ".join(passages[whole].split()[:n_words]) + " ..."
    one_more_word = prefix + " ".join(passages[whole].split()[:n_words + 1]) + " ..."
    longer = {"instruction": question, "input": one_more_word}
    assert len(prompt_ids(longer, enc)) > context_length - max_new_tokens


def test_rag_entry_keeps_every_passage_that_fits(enc):
    entry = rag_entry("What is the highest mountain?", FACTS, enc, context_length=256,
                      max_new_tokens=32)
    assert entry["input"] == "\n\n".join(FACTS)


def test_rag_entry_without_passages_is_a_plain_instruction(enc):
    entry = rag_entry("Name a colour.", [], enc, context_length=64, max_new_tokens=8)
    assert format_prompt(entry) == format_prompt({"instruction": "Name a colour.", "input": ""})


def test_rag_entry_rejects_a_question_that_alone_does_not_fit(enc):
    with pytest.raises(ValueError, match="the question alone"):
        rag_entry("Why? " * 50, FACTS, enc, context_length=64, max_new_tokens=16)


@pytest.mark.parametrize("question", ["", "  "])
def test_rag_entry_rejects_an_empty_question(enc, question):
    with pytest.raises(ValueError, match="non-empty"):
        rag_entry(question, FACTS, enc, context_length=256)


@pytest.mark.parametrize("max_new_tokens", [0, 256])
def test_rag_entry_rejects_max_new_tokens_that_leave_no_room(enc, max_new_tokens):
    with pytest.raises(ValueError, match="max_new_tokens"):
        rag_entry("Why?", FACTS, enc, context_length=256, max_new_tokens=max_new_tokens)
