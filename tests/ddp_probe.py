"""Test helper for test_pretrain.py: one process of a torchrun run that keeps its own weights.

    python -m torch.distributed.run --nproc-per-node 2 --standalone tests/ddp_probe.py ARGS

runs `python -m buildllm.pretrain ARGS` in each process, then saves that process's final
weights and summary as rank<N>.pt in --out, so the test can check that every process ended
with the same model.
"""

import os
import sys
from pathlib import Path

import torch

from buildllm.pretrain import parse_config, run

cfg = parse_config(sys.argv[1:])
model, summary = run(cfg)
rank = int(os.environ["RANK"])
torch.save({"model": model.state_dict(), "summary": summary}, Path(cfg.out) / f"rank{rank}.pt")
