"""Reward throughput: extraction + Eq. 3 on 100,000 responses of 2,000 characters, on one CPU core.

Target (issue 3): >= 200,000 responses/s, so the reward never costs anything next to generation. The
responses are real OmniMATH solution text ending in `</think>` and a `\\boxed{}` prediction; their
continuations are real Qwen2 tokens of the text that follows. Prints responses/s for:
  baseline        rfind of `</think>` and `\\boxed{`, find of `}`, one bytes comparison (no token boundaries,
                  no balanced braces): the floor the issue quotes (~400,000/s)
  per-response    prefix_match_reward(extract_prediction(r), continuation) in a Python loop
  compute_rewards the batch entry point, batches of 2,048 (256 contexts x G=8), diagnostics included
and the ratios to the baseline, plus the cost of token_bytes per continuation.

Run: OMP_NUM_THREADS=1 python benchmarks/bench_reward.py [--n 100000] [--chars 2000]
"""
import argparse
import json
import os
import random
import time
from pathlib import Path

import torch

from rpt.model import load_tokenizer
from rpt.reward import compute_rewards, extract_prediction, prefix_match_reward, token_bytes
from rpt.reward.tokens import tokenizer_bytes

ASSETS = Path(os.environ.get("RPT_ASSETS", Path(__file__).resolve().parents[1] / "assets"))  # or a folder of that layout
CONTINUATION_TOKENS = 8


def build_responses(n: int, chars: int, tokenizer) -> tuple[list[str], list[list[bytes]], list[list[int]]]:
    """n responses of exactly `chars` characters and the byte pieces of their true continuations."""
    rows = [json.loads(line) for line in open(ASSETS / "omni_math_rule" / "omni_math_rule.jsonl")]
    corpus_ids = [token_id for row in rows[:400] for token_id in
                  tokenizer.encode(row["solution"] + "\n", add_special_tokens=False)]
    rng = random.Random(0)
    responses, continuations, continuation_ids = [], [], []
    for index in range(n):
        start = rng.randrange(len(corpus_ids) - 600)
        ids = corpus_ids[start + 500:start + 500 + CONTINUATION_TOKENS]
        pieces = token_bytes(tokenizer, ids)
        case = index % 6
        if case in (0, 1):  # exactly the next token
            prediction = pieces[0].decode("utf-8", "replace")
        elif case == 2:  # the next two tokens
            prediction = (pieces[0] + pieces[1]).decode("utf-8", "replace")
        elif case == 3:  # a wrong guess
            prediction = " the"
        else:  # no box (case 4) or no </think> (case 5): the tail carries no prediction
            prediction = None
        if prediction is None:
            tail = "\n\nI cannot tell." if case == 4 else ""
            think = "\n</think>" if case == 4 else ""
        else:
            tail = f"\n\nSo the next token is \\boxed{{{prediction}}}"
            think = "\n</think>"
        reasoning = tokenizer.decode(corpus_ids[start:start + 500])
        reasoning = (reasoning * (chars // max(len(reasoning), 1) + 1))[:chars - len(think) - len(tail)]
        responses.append(reasoning + think + tail)
        continuations.append(pieces)
        continuation_ids.append(ids)
    return responses, continuations, continuation_ids


def rate(seconds: float, count: int) -> str:
    return f"{count / seconds:>12,.0f}/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--chars", type=int, default=2_000)
    args = parser.parse_args()
    torch.set_num_threads(1)

    tokenizer = load_tokenizer(ASSETS / "tokenizers" / "qwen2")
    started = time.perf_counter()
    tokenizer_bytes(tokenizer)
    print(f"token table built once in {time.perf_counter() - started:.2f} s")
    responses, continuations, continuation_ids = build_responses(args.n, args.chars, tokenizer)
    print(f"{len(responses):,} responses of {args.chars:,} characters")

    started = time.perf_counter()
    baseline = []
    for response, pieces in zip(responses, continuations):
        think = response.rfind("</think>")
        box = response.rfind("\\boxed{", think) if think >= 0 else -1
        close = response.find("}", box) if box >= 0 else -1
        baseline.append(float(close >= 0 and b"".join(pieces).startswith(response[box + 7:close].encode())))
    baseline_seconds = time.perf_counter() - started

    started = time.perf_counter()
    per_response = [prefix_match_reward(extract_prediction(response), pieces)
                    for response, pieces in zip(responses, continuations)]
    per_response_seconds = time.perf_counter() - started

    started = time.perf_counter()
    batch_size = 2048
    batched = []
    for begin in range(0, len(responses), batch_size):
        rewards, _ = compute_rewards(responses[begin:begin + batch_size], continuations[begin:begin + batch_size],
                                     group_size=1)
        batched.append(rewards)
    batch_seconds = time.perf_counter() - started
    assert torch.equal(torch.cat(batched), torch.tensor(per_response)), "batch and per-response rewards differ"

    started = time.perf_counter()
    for ids in continuation_ids:
        token_bytes(tokenizer, ids)
    token_bytes_seconds = time.perf_counter() - started

    count = len(responses)
    print(f"mean reward {sum(per_response) / count:.3f} (baseline's looser check {sum(baseline) / count:.3f})")
    print(f"baseline         {rate(baseline_seconds, count)}   1.00x")
    print(f"per-response     {rate(per_response_seconds, count)}   {baseline_seconds / per_response_seconds:.2f}x"
          f" of baseline   target 200,000/s: {'met' if count / per_response_seconds >= 200_000 else 'MISSED'}")
    print(f"compute_rewards  {rate(batch_seconds, count)}   {baseline_seconds / batch_seconds:.2f}x of baseline"
          f"   target 200,000/s: {'met' if count / batch_seconds >= 200_000 else 'MISSED'}")
    print(f"token_bytes      {rate(token_bytes_seconds, count)}   ({CONTINUATION_TOKENS} ids per call)")


if __name__ == "__main__":
    main()
