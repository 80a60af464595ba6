"""buildllm: the course package of the LLMs From Scratch study group.

Each meeting builds one piece in its notebooks and keeps the finished piece here,
so later meetings import it instead of copying it:

    data         Meeting 0  every download, pinned by sha256, with an offline mirror
    utils        Meeting 0  device choice, seeding, a CPU speed calibration
    tokenizers   Meeting 1  a regex word tokenizer
                 Meeting 2  byte-level BPE: training, encoding, GPT-2's own tokenizer
    datasets     Meeting 1  sliding-window next-token datasets and loaders
    embeddings   Meeting 1  sinusoidal position encodings
    attention    Meeting 3  self-attention, from one head by loops to batched causal heads
    model        Meeting 4  GPT-2: LayerNorm, GELU, feed-forward, blocks, GPTModel, configs
    generation   Meeting 4  greedy generation with a KV cache
    gpt2         Meeting 4  GPT-2 weights in Hugging Face's layout, loaded into GPTModel
    check        all        the checks that exercise cells call
"""

__version__ = "0.1.0"
