"""How much does continuous batching serve? Many clients at once, against one-at-a-time
serving, measured side by side in one run.

    BUILDLLM_MIRROR=../shared/data python Supporting/tools/benchmark_serving.py   # ~2 minutes

Prints a Markdown table for Meeting-7/README.md. Two servers (`buildllm.serve`, on loopback,
in this process) serve the same model: one writes one reply at a time (`max_batch=1`), the
other up to `--max-batch` replies together (`buildllm.batching`). `--clients` threads each
send `--requests` chat completions, one after another, at temperature 0 and `--max-tokens`
tokens each, with prompts of different lengths. The two servers take turns (`--repeats`
rounds of one then the other), so a change in the machine's load hits both.

Throughput is completion tokens per second of wall time; latency is one request's time from
sending to the whole reply. Every reply is first checked against `ChatSession.reply`, greedy
generation one at a time outside any server: the script fails if one differs. The model is
the course's (or `--run` folder's), on the CPU, with a fixed, printed thread count. Absolute
numbers depend on the machine; the ratios measured together are what to quote.
"""

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import torch
from benchmark_report import machine, markdown_table

from buildllm.chat import ChatSession
from buildllm.pretrained import COURSE_MODEL_DIR
from buildllm.serve import BackgroundServer, create_app

QUESTIONS = ["Who is Romeo?", "What is the weather like in Verona in the summer?",
             "Name a colour.", "Write a short greeting for a king who has come home from war.",
             "Why?", "Tell me what happened in the first act, and who was there.",
             "Give me three words that rhyme with night.", "Describe the sea."]


def prompts(n: int) -> list[str]:
    """`n` different questions of different lengths."""
    return [f"{QUESTIONS[i % len(QUESTIONS)]} (question {i})" for i in range(n)]


def serve_round(url: str, questions: list[str], clients: int,
                max_tokens: int) -> tuple[float, list[float], list[str], int]:
    """Ask every question, `clients` at a time: (wall seconds, latency of each request,
    replies, completion tokens)."""

    def ask(question: str) -> tuple[float, str, int]:
        start = time.perf_counter()
        body = httpx.post(f"{url}/v1/chat/completions", timeout=600, json={
            "model": "bench", "temperature": 0, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": question}]}).raise_for_status().json()
        return (time.perf_counter() - start, body["choices"][0]["message"]["content"],
                body["usage"]["completion_tokens"])

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        done = list(pool.map(ask, questions))
    wall = time.perf_counter() - start
    return wall, [d[0] for d in done], [d[1] for d in done], sum(d[2] for d in done)


def percentile(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def row(name: str, wall: float, latencies: list[float], tokens: int,
        baseline: float | None) -> list[str]:
    throughput = tokens / wall
    ratio = "" if baseline is None else f" ({throughput / baseline:.1f}×)"
    return [name, f"{len(latencies) / wall:.2f}", f"{throughput:.0f}{ratio}",
            f"{percentile(latencies, 50):.2f} s", f"{percentile(latencies, 95):.2f} s"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default=str(COURSE_MODEL_DIR), help="model folder (default: the "
                   "course model)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=2, help="per client (default 2)")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    chat = ChatSession.from_run(args.run, device="cpu")
    questions = prompts(args.clients * args.requests)
    expected = [chat.reply([{"role": "user", "content": q}], max_new_tokens=args.max_tokens)
                for q in questions]  # greedy, one at a time, outside any server
    modes = {"one at a time (max_batch=1)": 1,
             f"continuous batching (max_batch={args.max_batch})": args.max_batch}
    results = {name: [0.0, [], 0] for name in modes}
    servers = {name: BackgroundServer(create_app(chat, "bench", max_batch=size,
                                                 max_queue=len(questions)))
               for name, size in modes.items()}
    try:
        for server in servers.values():  # warm up
            serve_round(server.url, questions[:1], 1, 2)
        for _ in range(args.repeats):
            for name, server in servers.items():
                wall, latencies, replies, tokens = serve_round(
                    server.url, questions, args.clients, args.max_tokens)
                if replies != expected:
                    wrong = sum(r != e for r, e in zip(replies, expected, strict=True))
                    print(f"error: {name}: {wrong} of {len(replies)} replies differ from "
                          f"one-at-a-time greedy generation", file=sys.stderr)
                    return 1
                results[name][0] += wall
                results[name][1] += latencies
                results[name][2] += tokens
    finally:
        for server in servers.values():
            server.stop()
    report(args, results, len(questions))
    return 0


def report(args, results: dict, n_requests: int) -> None:
    print(f"{machine()}; torch.set_num_threads({args.threads}); {args.clients} clients, "
          f"{n_requests} requests of {args.max_tokens} tokens at temperature 0, "
          f"{args.repeats} rounds per server\n")
    (base_name, base), (batch_name, batched) = results.items()
    baseline = base[2] / base[0]
    print(markdown_table(["serving", "requests/s", "tokens/s", "p50 latency", "p95 latency"],
                         [row(base_name, *base, None), row(batch_name, *batched, baseline)],
                         ["---", "---:", "---:", "---:", "---:"]))
    print(f"\nAll {n_requests * args.repeats * 2} replies were identical to one-at-a-time greedy "
          f"generation (ChatSession.reply).")


if __name__ == "__main__":
    sys.exit(main())
