"""Padding in the update under sdpa/eager: first-fit rows (the update's layout before length bucketing: the
micro-batches of pack_micro_batches, each cut first-fit into rows of its longest sequence, several short
sequences sharing a row) vs bucket_micro_batches (one sequence per row, sorted by length).

No model: each step draws one rank's sequences (--contexts prompts of --prompt-tokens tokens, G responses
each, response lengths log-normal with mean --mean-response and sigma --sigma, clipped to [1, --max-response]),
lays them out both ways under the micro-batch budget (train.micro_batch_tokens) and counts
  padded/real: positions of the micro-batches' (rows x width) tensors over the sequences' own positions;
  shared rows: rows holding two or more sequences, each making transformers build a dense (L, L) mask for its
      micro-batch under sdpa/eager;
  micro-batches: forward/backward passes;
  largest/budget: the largest micro-batch's padded positions over the budget (first-fit budgets the real
      positions only, so its padded tensors can exceed train.micro_batch_tokens; bucketing budgets padded ones).
Prints the means over --steps and the ratios bucketed / first-fit measured in the same run (issue 12's goal
for bucketing: padded/real <= 1.05).

    python benchmarks/bench_packing.py          # ~1 minute; --contexts, --mean-response, --max-response, --budget
"""
import argparse
import math
import random
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from rpt.grpo import bucket_micro_batches, pack_micro_batches  # noqa: E402


def first_fit_stats(prompts, responses, budget: int, real_positions: int) -> dict[str, float]:
    """The former layout, counted without building its tensors: pack_micro_batches' micro-batches, each split
    first-fit (longest first) into rows of its longest sequence, right-padded to that width."""
    lengths = [len(p) + len(r) - 1 for p, r in zip(prompts, responses)]
    padded, shared, largest = 0, 0, 0
    micro_batches = pack_micro_batches(prompts, responses, budget)
    for mb in micro_batches:
        width = max(lengths[i] for i in mb.sequence_indices)
        rows = []  # [positions, sequences] per row
        for seq in sorted(mb.sequence_indices, key=lambda i: -lengths[i]):
            row = next((row for row in rows if row[0] + lengths[seq] <= width), None)
            if row is None:
                rows.append([lengths[seq], 1])
            else:
                row[0], row[1] = row[0] + lengths[seq], row[1] + 1
        padded += len(rows) * width
        shared += sum(count > 1 for _, count in rows)
        largest = max(largest, len(rows) * width)
    return {"padded/real": padded / real_positions, "shared rows": shared, "micro-batches": len(micro_batches),
            "largest/budget": largest / budget}


def layout_stats(micro_batches, real_positions: int, budget: int) -> dict[str, float]:
    return {"padded/real": sum(mb.input_ids.numel() for mb in micro_batches) / real_positions,
            "shared rows": sum(sum(len(set(row)) > 1 for row in mb.seq_index.tolist()) for mb in micro_batches),
            "micro-batches": len(micro_batches),
            "largest/budget": max(mb.input_ids.numel() for mb in micro_batches) / budget}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=int, default=32, help="contexts per rank (256 over 8 ranks)")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--mean-response", type=float, default=2048)
    parser.add_argument("--sigma", type=float, default=0.8, help="log-normal sigma of the response length")
    parser.add_argument("--max-response", type=int, default=8192)
    parser.add_argument("--budget", type=int, default=16384, help="train.micro_batch_tokens")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    mu = math.log(args.mean_response) - args.sigma ** 2 / 2  # so that the unclipped mean is --mean-response
    results = {"first-fit": [], "bucketed": []}
    response_means = []
    for _ in range(args.steps):
        prompts = [[1] * args.prompt_tokens for _ in range(args.contexts) for _ in range(args.group_size)]
        responses = [[2] * min(args.max_response, max(1, round(rng.lognormvariate(mu, args.sigma))))
                     for _ in prompts]
        response_means.append(statistics.mean(map(len, responses)))
        real = sum(len(p) + len(r) - 1 for p, r in zip(prompts, responses))
        results["first-fit"].append(first_fit_stats(prompts, responses, args.budget, real))
        results["bucketed"].append(layout_stats(bucket_micro_batches(prompts, responses, args.budget), real,
                                                args.budget))
    means = {name: {key: statistics.mean(step[key] for step in steps) for key in steps[0]}
             for name, steps in results.items()}
    print(f"{args.contexts} contexts x G={args.group_size} per rank, prompts {args.prompt_tokens} tokens, responses "
          f"log-normal (mean {args.mean_response:.0f}, sigma {args.sigma}, max {args.max_response}; drawn mean "
          f"{statistics.mean(response_means):.0f}), budget {args.budget} tokens, {args.steps} steps; per-step means")
    print(f"{'layout':>10} {'padded/real':>12} {'shared rows':>12} {'micro-batches':>14} {'largest/budget':>15}")
    for name, m in means.items():
        print(f"{name:>10} {m['padded/real']:>12.3f} {m['shared rows']:>12.1f} {m['micro-batches']:>14.1f} "
              f"{m['largest/budget']:>15.2f}")
    before, after = means["first-fit"], means["bucketed"]
    print(f"ratio bucketed / first-fit: padded positions {after['padded/real'] / before['padded/real']:.3f}, "
          f"micro-batches {after['micro-batches'] / before['micro-batches']:.3f}; bucketed padded/real "
          f"{after['padded/real']:.3f} (goal <= 1.05), shared rows {after['shared rows']:.0f}")


if __name__ == "__main__":
    main()
