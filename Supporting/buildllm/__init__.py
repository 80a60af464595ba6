"""buildllm: the course package of the LLMs From Scratch study group.

Each meeting builds one piece in its notebooks and keeps the finished piece here,
so later meetings import it instead of copying it:

    data         Meeting 0  every download, pinned by sha256, with an offline mirror
    utils        Meeting 0  device choice, seeding, a CPU speed calibration
    progress     Meeting 0  progress bars that a saved notebook shows where they ended
    tokenizers   Meeting 1  a regex word tokenizer
                 Meeting 2  byte-level BPE: training, encoding, GPT-2's own tokenizer
    datasets     Meeting 1  sliding-window next-token datasets and loaders
    embeddings   Meeting 1  sinusoidal position encodings
    attention    Meeting 3  self-attention, from one head by loops to batched causal heads
    model        Meeting 4  GPT-2: LayerNorm, GELU, feed-forward, blocks, GPTModel, configs
    generation   Meeting 4  greedy generation with a KV cache
                 Meeting 5  temperature, top-k and top-p sampling
                 Meeting 7  stream: one token at a time, for chat
    gpt2         Meeting 4  GPT-2 weights in Hugging Face's layout, loaded into GPTModel
    modern       bonus      RMSNorm, rotary embeddings, SwiGLU, grouped-query attention
    decoder      bonus      GPT-2, Llama 3 and Qwen3 as configs of one Decoder
    hf_decoder   bonus      transformers' Llama and Qwen3 files, loaded into Decoder
    training     Meeting 5  loss, evaluation, AdamW, warmup + cosine, clipping, checkpoints
    muon         Meeting 5  Muon for the hidden matrices, AdamW for the rest (bonus)
    pretrain     Meeting 5  the pretraining command: python -m buildllm.pretrain
    pretrain_data Meeting 5 its text files, tokenizers and resumable stream of windows
    pretrained   Meeting 5  GPT-2's weights, or the course's own model when offline;
                            the settings made for whichever model a notebook got
    classify     Meeting 6  spam data, a classification head on the last real token
    instruct     Meeting 6  Alpaca prompts, padding-and-masking collate, instruction tuning
    metrics      Meeting 6  ROUGE-L and token F1 for generated answers
    judge        Meeting 6  a client for any OpenAI-compatible chat endpoint, as a judge
    lora         Meeting 6  low-rank adapters: add, count, merge
    dpo          Meeting 6  preference pairs, sequence log-probabilities, the DPO loss
    capstone     Meeting 7  a folder of text to a chat: tokenizer, pretraining, tuning, cached
    chat         Meeting 7  chat sessions that fit the context; python -m buildllm.chat
    serve        Meeting 7  an OpenAI-compatible server and chat page: python -m buildllm.serve
    batching     Meeting 7  continuous batching: one model writes many replies at once
    inference    Meeting 7  int8 weights, batched generation with padding masks
    retrieval    Meeting 7  passages, embeddings and cosine search, for prompts with context
    figures      all        show_figure: the course's drawn figures, in a notebook
    check        all        the checks that exercise cells call
"""

__version__ = "0.1.0"
