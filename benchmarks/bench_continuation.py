"""What storing Eq. 3's whole ground truth costs: samples whose continuation is the rest of the document
(x_>=t, the paper) against the former 8-token cap, on OmniMATH with the real Qwen2 tokenizer.

Samples are cut on read from the per-document shards (rpt/data/samples_io.py), so the rest of the document
costs no disk; what it can cost is memory of the cut samples, the time to cut them and build the reward's
byte pieces (`token_bytes`, once per context), and the reward itself. Measured on 200 documents drawn as the
held-out split is (seed 0), at every position with at least 32 tokens of context (a superset of the easy
split), contexts of at most 4,096 tokens as in training. Prints, for the cap and for the rest of the
document: memory of all cut samples (tracemalloc; contexts included, as `read_samples` holds them), seconds
to cut them and to build their byte pieces, and `compute_rewards` throughput and mean reward on predictions
that are the true next 1 and 12 tokens (G=8 per context; under the cap the 12-token ones score 0), with
ratios; then the continuation length quantiles and the share of positions a 256-token cap would cut.

Run: OMP_NUM_THREADS=1 python benchmarks/bench_continuation.py [--docs 200] [--reward-contexts 2048]
"""
import argparse
import json
import os
import random
import time
import tracemalloc
from pathlib import Path

import numpy as np

from rpt.data.corpus import make_sample
from rpt.model import load_tokenizer
from rpt.reward import compute_rewards, token_bytes

ASSETS = Path(os.environ.get("RPT_ASSETS", Path(__file__).resolve().parents[1] / "assets"))  # or a folder of that layout
MIN_CONTEXT, MAX_CONTEXT, GROUP_SIZE = 32, 4096, 8


def cut_samples(documents: list[list[int]], continuation_tokens: int | None) -> list:
    return [make_sample(ids, position, MAX_CONTEXT, continuation_tokens, doc_id=index)
            for index, ids in enumerate(documents) for position in range(MIN_CONTEXT, len(ids))]


def measure_cut(documents, continuation_tokens, tokenizer) -> tuple[float, float, float]:
    """(MB held by all cut samples, seconds to cut them, seconds to build every continuation's byte pieces)."""
    tracemalloc.start()
    samples = cut_samples(documents, continuation_tokens)
    megabytes = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.stop()
    del samples
    start = time.perf_counter()
    samples = cut_samples(documents, continuation_tokens)
    cut_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for sample in samples:
        token_bytes(tokenizer, sample.continuation_ids)
    return megabytes, cut_seconds, time.perf_counter() - start


def measure_reward(documents, places, continuation_tokens, tokenizer,
                   prediction_tokens: int) -> tuple[float, float]:
    """compute_rewards on predictions that are the true next `prediction_tokens` tokens, G per context, at
    the (document, position) places -> (responses/s, mean reward)."""
    responses, continuations = [], []
    for doc_index, position in places:
        ids = documents[doc_index]
        text = b"".join(token_bytes(tokenizer, ids[position:position + prediction_tokens])).decode("utf-8", "replace")
        sample = make_sample(ids, position, MAX_CONTEXT, continuation_tokens, doc_id=doc_index)
        pieces = token_bytes(tokenizer, sample.continuation_ids)  # once per context, as the loop does
        responses += [f"Some reasoning.\n</think>\n\n\\boxed{{{text}}}"] * GROUP_SIZE
        continuations += [pieces] * GROUP_SIZE
    seconds = []
    for _ in range(3):  # best of 3: the machine is shared
        start = time.perf_counter()
        rewards, _ = compute_rewards(responses, continuations, group_size=GROUP_SIZE)
        seconds.append(time.perf_counter() - start)
    return len(responses) / min(seconds), float(rewards.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--reward-contexts", type=int, default=2048)
    args = parser.parse_args()
    tokenizer = load_tokenizer(ASSETS / "tokenizers" / "qwen2")
    rows = [json.loads(line) for line in open(ASSETS / "omni_math_rule" / "omni_math_rule.jsonl")]
    texts = [row["problem"] + "\n\n" + row["solution"] for row in rows]
    chosen = random.Random(0).sample(range(len(texts)), args.docs)
    documents = tokenizer([texts[i] for i in chosen], add_special_tokens=False)["input_ids"]
    all_lengths = np.array([len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]])

    places = [(d, t) for d, ids in enumerate(documents) for t in range(MIN_CONTEXT, len(ids) - 12)]
    places = random.Random(1).sample(places, min(args.reward_contexts, len(places)))
    results = {}
    for name, cap in (("cap 8", 8), ("rest of document", None)):
        results[name] = (*measure_cut(documents, cap, tokenizer),
                         *measure_reward(documents, places, cap, tokenizer, 1),
                         *measure_reward(documents, places, cap, tokenizer, 12))
    print(f"{args.docs} documents, {len(cut_samples(documents, 8)):,} samples (positions >= {MIN_CONTEXT}); "
          f"reward on {len(places):,} contexts x G={GROUP_SIZE} with at least 12 tokens left")
    print(f"{'continuation':<17} {'memory MB':>9} {'cut s':>6} {'pieces s':>8} {'1-token resp/s':>14} "
          f"{'reward':>6} {'12-token resp/s':>15} {'reward':>6}")
    for name, row in results.items():
        print(f"{name:<17} {row[0]:>9.1f} {row[1]:>6.2f} {row[2]:>8.2f} {row[3]:>14,.0f} {row[4]:>6.3f} "
              f"{row[5]:>15,.0f} {row[6]:>6.3f}")
    capped, rest = results["cap 8"], results["rest of document"]
    print(f"{'ratio rest/cap':<17} {rest[0] / capped[0]:>8.2f}x {rest[1] / capped[1]:>5.2f}x "
          f"{rest[2] / capped[2]:>7.2f}x {rest[3] / capped[3]:>13.2f}x {'':>6} {rest[5] / capped[5]:>14.2f}x")
    rest_lengths = np.concatenate([length - np.arange(MIN_CONTEXT, length) for length in all_lengths
                                   if length > MIN_CONTEXT])  # continuation length at every position
    quantiles = np.quantile(rest_lengths, [0.1, 0.5, 0.9, 0.99])
    print(f"whole corpus ({len(all_lengths):,} documents, {all_lengths.sum():,} tokens, longest "
          f"{all_lengths.max():,}): continuation tokens "
          f"p10/p50/p90/p99 {' / '.join(f'{q:.0f}' for q in quantiles)}, mean {rest_lengths.mean():.0f}; "
          f"a 256-token cap would cut {np.mean(rest_lengths > 256):.1%} of positions")


if __name__ == "__main__":
    main()
