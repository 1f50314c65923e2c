"""Answer-reward cost: math-verify in the reused worker process (rpt.reward.answer_rewards, a deadline per
call) against the strongest honest baseline, the same math-verify parse + verify called in-process (no time
limit at all, so nothing protects the trainer from a hung comparison).

Data: MATH-500's 500 reference answers; each is answered once correctly in another surface form (a box
around the reference with spaces removed, or `\\frac{a}{b}` written as `a/b`) and once wrongly (the answer
of the next question), inside a 2,000-character response ending in `</think>` and a box. Both paths see
the same pairs; the script checks they give the same rewards and prints pairs/s and the ratio.

Run: OMP_NUM_THREADS=1 python benchmarks/bench_answer_reward.py [--pairs 1000]
"""
import argparse
import functools
import json
import logging
import os
import re
import time
from pathlib import Path

from rpt.reward.answer import MathVerifier, answer_rewards
from rpt.reward.extract import extract_prediction

ASSETS = Path(os.environ.get("RPT_ASSETS", Path(__file__).resolve().parents[1] / "assets"))  # or a folder of that layout


def build_pairs(count: int) -> tuple[list[str], list[str]]:
    answers = [json.loads(line)["answer"] for line in open(ASSETS / "math500" / "test.jsonl")]
    responses, references = [], []
    for i in range(count):
        reference = answers[(i // 2) % len(answers)]
        if i % 2 == 0:  # correct, another surface form
            predicted = re.sub(r"\\frac\{(\w+)\}\{(\w+)\}", r"(\1)/(\2)", reference).replace(" ", "")
        else:  # wrong: the next question's answer
            predicted = answers[(i // 2 + 1) % len(answers)]
        responses.append("<think>\n" + "reasoning " * 190 + "\n</think>\n" + f"\\boxed{{{predicted}}}")
        references.append(reference)
    return responses, references


def in_process(responses: list[str], references: list[str]) -> list[float]:
    from math_verify import parse, verify

    parse_gold = functools.lru_cache(maxsize=4096)(lambda text: parse("\\boxed{" + text + "}", parsing_timeout=None))
    rewards = []
    for response, reference in zip(responses, references):
        prediction = extract_prediction(response)
        if prediction.strip() == reference.strip():
            rewards.append(1.0)
            continue
        gold = parse_gold(reference)  # cached, as the worker caches reference answers
        target = parse("\\boxed{" + prediction + "}", parsing_timeout=None)
        rewards.append(float(verify(gold, target, timeout_seconds=None)))
    return rewards


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=1000)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    responses, references = build_pairs(args.pairs)
    in_process(responses[:20], references[:20])  # warm the imports

    start = time.perf_counter()
    baseline = in_process(responses, references)
    baseline_s = time.perf_counter() - start

    verifier = MathVerifier(timeout_s=30.0)
    answer_rewards(responses[:2], references[:2], verifier)  # start the worker outside the measurement
    start = time.perf_counter()
    rewards, diagnostics = answer_rewards(responses, references, verifier)
    worker_s = time.perf_counter() - start
    verifier.close()

    disagree = sum(a != b for a, b in zip(rewards.tolist(), baseline))
    print(f"{args.pairs} pairs, {sum(baseline):.0f} correct; rewards differ on {disagree}; "
          f"timeouts {int(diagnostics['verify_timeout'].sum())}")
    print(f"in-process math-verify (no time limit): {args.pairs / baseline_s:8.1f} pairs/s")
    print(f"worker process with a deadline:          {args.pairs / worker_s:8.1f} pairs/s")
    print(f"ratio worker / in-process: {baseline_s / worker_s:.2f}x throughput")


if __name__ == "__main__":
    main()
