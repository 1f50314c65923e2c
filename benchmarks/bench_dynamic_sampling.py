"""Dynamic sampling per rank vs pooled over data-parallel ranks: a simulation without a model.

Every group of G rewards has reward spread (is kept) with probability --keep-rate, independently; the rest
are all-equal and dropped (rpt.grpo.filter_groups). Each step wants --contexts groups over --ranks
data-parallel ranks; every round every rank generates its share (contexts / ranks groups). Both schemes see
the same random rewards (rank r takes the round's groups r, r + ranks, ... as SampleStream deals them) and
run the real bookkeeping:
  per rank: the loop before pooling: every rank fills its own share (a PooledGroupCollector of one rank, fed
            its own groups only, is exactly the former per-rank collector); rounds run while any rank is
            not done (a done rank still generates, since generation is collective, and discards it), and
            the groups a rank keeps beyond its share are dropped while another rank may end partial;
  pooled:   rpt.grpo.PooledGroupCollector fed every rank's rpt.grpo.select_kept list; it stops when all
            ranks together kept --contexts groups and trims the surplus.
Prints, per keep rate, the mean generation rounds per step, the generated-but-discarded groups per step (all-
equal ones plus surplus plus a done rank's rounds), the trained groups per step and the share of partial
steps, and the ratios pooled / per rank measured in the same run.

    python benchmarks/bench_dynamic_sampling.py            # ~1 minute; --steps, --ranks, --contexts, --max-rounds
"""
import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from rpt.grpo import PooledGroupCollector, select_kept  # noqa: E402

STEP, START_STEP = 600, 500  # dynamic sampling on


def round_rewards(generator: torch.Generator, contexts: int, group_size: int, keep_rate: float) -> torch.Tensor:
    """(contexts, G) rewards: a kept group gets one 1 among zeros, a dropped one all zeros."""
    rewards = torch.zeros(contexts, group_size)  # (B, G)
    rewards[torch.rand(contexts, generator=generator) < keep_rate, 0] = 1.0
    return rewards


def simulate_step(rounds_rewards: list[torch.Tensor], ranks: int, contexts: int, max_rounds: int) -> dict:
    """Both schemes on the same per-round rewards ((contexts, G) each, enough rounds for the cap)."""
    per_rank = contexts // ranks
    names = [f"g{i}" for i in range(contexts)]
    # per rank: each rank its own collector; rounds continue while any rank is not done
    collectors = [PooledGroupCollector(per_rank, max_rounds, "partial", step=STEP, start_step=START_STEP)
                  for _ in range(ranks)]
    rounds = 0
    while not all(collector.done for collector in collectors):
        for rank, collector in enumerate(collectors):
            if not collector.done:
                rewards = rounds_rewards[rounds][rank::ranks]
                collector.add_round([select_kept(names[rank::ranks], rewards, STEP, START_STEP)], [per_rank])
        rounds += 1
    trained = sum(len(collector.result()[0]) for collector in collectors)
    per_rank_stats = {"rounds": rounds, "generated": rounds * contexts, "trained": trained,
                      "partial": int(trained < contexts)}
    # pooled: every rank feeds the same gathered kept lists into its collector; one stands for all
    pooled = PooledGroupCollector(contexts, max_rounds, "partial", step=STEP, start_step=START_STEP)
    while not pooled.done:
        rewards = rounds_rewards[pooled.rounds]
        pooled.add_round([select_kept(names[rank::ranks], rewards[rank::ranks], STEP, START_STEP)
                          for rank in range(ranks)], [per_rank] * ranks)
    _, _, stats = pooled.result()
    pooled_stats = {"rounds": stats["rounds"], "generated": stats["groups_generated"],
                    "trained": stats["groups_kept"], "partial": stats["partial"]}
    return {"per_rank": per_rank_stats, "pooled": pooled_stats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, default=8)
    parser.add_argument("--contexts", type=int, default=256, help="train.batch_size: groups per step")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--max-rounds", type=int, default=4, help="grpo.max_generation_rounds (default 4)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--keep-rates", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.contexts % args.ranks:
        raise SystemExit(f"--contexts {args.contexts} must split evenly over --ranks {args.ranks}")

    print(f"{args.ranks} ranks, {args.contexts} contexts x G={args.group_size} per step, round cap "
          f"{args.max_rounds}, {args.steps} steps per keep rate; per-step means")
    print(f"{'keep':>5} {'scheme':>8} {'rounds':>7} {'generated':>10} {'discarded':>10} {'trained':>8} "
          f"{'partial':>8} | {'rounds ratio':>12} {'discarded ratio':>15}")
    for keep_rate in args.keep_rates:
        generator = torch.Generator().manual_seed(args.seed)
        totals = {scheme: {"rounds": 0, "generated": 0, "trained": 0, "partial": 0}
                  for scheme in ("per_rank", "pooled")}
        for _ in range(args.steps):
            rounds_rewards = [round_rewards(generator, args.contexts, args.group_size, keep_rate)
                              for _ in range(args.max_rounds)]
            for scheme, stats in simulate_step(rounds_rewards, args.ranks, args.contexts, args.max_rounds).items():
                for key in totals[scheme]:
                    totals[scheme][key] += stats[key]
        means = {scheme: {key: value / args.steps for key, value in scheme_totals.items()}
                 for scheme, scheme_totals in totals.items()}
        for scheme in means:
            means[scheme]["discarded"] = means[scheme]["generated"] - means[scheme]["trained"]
        rounds_ratio = means["pooled"]["rounds"] / means["per_rank"]["rounds"]
        discarded_ratio = means["pooled"]["discarded"] / means["per_rank"]["discarded"]
        for scheme, m in means.items():
            ratios = f"{rounds_ratio:>12.3f} {discarded_ratio:>15.3f}" if scheme == "pooled" else ""
            print(f"{keep_rate:>5.2f} {scheme:>8} {m['rounds']:>7.3f} {m['generated']:>10.1f} {m['discarded']:>10.1f} "
                  f"{m['trained']:>8.1f} {m['partial']:>8.3f} | {ratios}")


if __name__ == "__main__":
    main()
