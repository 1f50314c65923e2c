"""Dynamic sampling (DAPO; Section 3.3 of the paper): from a given step on, keep only groups whose G rewards are not
all equal (those have zero advantage, so no gradient) and keep generating until the step's batch is full.

Pure bookkeeping, no model, pooled over data-parallel ranks as DAPO fills its batch globally: the loop runs

    collector = PooledGroupCollector(batch_size, max_rounds, on_cap, step=step, start_step=start_step)
    while not collector.done:                      # the same value on every rank
        groups, rewards = <this rank's share of the round's contexts, generated and scored>   # (b, G)
        kept_by_rank = all_gather_object(select_kept(groups, rewards, step, start_step))
        collector.add_round(kept_by_rank, generated_by_rank)
    groups, rewards, stats = collector.result()    # the global batch, the same on every rank
    my_groups, my_rewards = collector.share(dp_rank, dp_size)

Every rank runs the collector on the same gathered inputs, so `done`, the trimming and an on_cap error are
the same everywhere without another collective. No rank keeps generating for a batch share it already has,
and no rank's surplus is dropped while another goes short (what filling a share per rank did: 8 ranks x 256
contexts at keep rate 0.5, 2.99 rounds per step vs 2.49 pooled; benchmarks/bench_dynamic_sampling.py).

Before `start_step` (paper: 500) every group is kept, so one round fills the batch. Rounds are capped
(`max_rounds`); hitting the cap short of a full batch raises (on_cap="error") or returns the partial batch
with stats saying so (on_cap="partial"), for the trainer to log.

Steps are 0-based here: with start_step 500 the first filtered step is loop step 500, which the trainer logs
as step 501, so 500 steps run unfiltered (the paper's "from step 500" does not say where it counts from).

Deviations from the paper: the round cap (the paper/DAPO generate "until the batch is full"; an uncapped loop
never ends when the policy solves everything or nothing); groups kept beyond a full batch are discarded
(as DAPO does). The pooled collector trims the surplus in the order of the 1-process stream, so the kept
set does not depend on the number of data-parallel ranks.
"""
from typing import Any

import torch

ON_CAP_POLICIES = ("error", "partial")


def filter_groups(rewards: torch.Tensor, step: int, start_step: int) -> torch.Tensor:
    """rewards: (B, G) -> keep (B,) bool: True where the group's rewards are not all equal, or everywhere
    before start_step (dynamic sampling is off until then)."""
    if step < start_step:
        return torch.ones(rewards.shape[0], dtype=torch.bool, device=rewards.device)  # (B,)
    return (rewards != rewards[:, :1]).any(dim=1)  # (B,)


def select_kept(groups: list[Any], rewards: torch.Tensor, step: int,
                start_step: int) -> list[tuple[int, Any, torch.Tensor]]:
    """One rank's groups of one round, rewards (b, G) -> [(index in the round, group, rewards (G,))] for the
    groups that filter_groups keeps: what the rank contributes to the pooled collector."""
    if len(groups) != rewards.shape[0]:
        raise ValueError(f"{len(groups)} groups but rewards for {rewards.shape[0]}")
    keep = filter_groups(rewards, step, start_step)  # (b,)
    return [(index, groups[index], rewards[index]) for index in keep.nonzero().flatten().tolist()]


class PooledGroupCollector:
    """Collects groups over rounds until all data-parallel ranks together kept `batch_size` groups, or
    `max_rounds` rounds are spent. Every rank holds one and feeds it the same gathered inputs.

    Order: rank r of D takes the round's samples at global stream offsets r, r + D, ... (rpt.data.SampleStream),
    so its i-th group of round k sits at (k, i * D + r) in the order one process would see them; the kept groups
    are sorted by that key before the surplus is cut, so D ranks keep the very groups one process keeps."""

    def __init__(self, batch_size: int, max_rounds: int, on_cap: str = "error", step: int = 0, start_step: int = 0):
        """batch_size: groups (contexts) wanted this step over all data-parallel ranks. max_rounds: generation
        rounds allowed (>= 1). on_cap: "error" or "partial", what result() does when the cap left the batch
        short. step, start_step: as in filter_groups; before start_step every group is kept."""
        if on_cap not in ON_CAP_POLICIES:
            raise ValueError(f"on_cap must be one of {ON_CAP_POLICIES}, got {on_cap!r}")
        if batch_size < 1 or max_rounds < 1:
            raise ValueError(f"batch_size ({batch_size}) and max_rounds ({max_rounds}) must be >= 1")
        self.batch_size = batch_size
        self.max_rounds = max_rounds
        self.on_cap = on_cap
        self.step = step
        self.start_step = start_step
        self.rounds = 0
        self.groups_generated = 0
        self.kept: list[tuple[tuple[int, int], Any, torch.Tensor]] = []  # (order key, group, rewards (G,))

    @property
    def done(self) -> bool:
        return len(self.kept) >= self.batch_size or self.rounds >= self.max_rounds

    def add_round(self, kept_by_rank: list[list[tuple[int, Any, torch.Tensor]]], generated_by_rank: list[int]) -> None:
        """kept_by_rank: per data-parallel rank, its select_kept(...) list of this round (all_gather_object'ed).
        generated_by_rank: per rank, how many groups it generated this round (kept or not)."""
        if self.done:
            raise RuntimeError("add_round() after the collector is done (batch full or round cap reached)")
        if len(kept_by_rank) != len(generated_by_rank):
            raise ValueError(f"kept groups from {len(kept_by_rank)} ranks but counts from {len(generated_by_rank)}")
        dp_size = len(kept_by_rank)
        for rank, (kept, generated) in enumerate(zip(kept_by_rank, generated_by_rank)):
            if len(kept) > generated or any(not 0 <= index < generated for index, _, _ in kept):
                raise ValueError(f"rank {rank} kept {len(kept)} groups with indices outside its {generated} generated")
            self.kept += [((self.rounds, index * dp_size + rank), group, rewards) for index, group, rewards in kept]
        self.kept.sort(key=lambda entry: entry[0])  # rounds arrive in order, so this only interleaves the ranks
        self.rounds += 1
        self.groups_generated += sum(generated_by_rank)

    def result(self) -> tuple[list[Any], torch.Tensor, dict[str, int]]:
        """-> (the first batch_size kept groups in 1-process order, their rewards (b, G), stats), the same on
        every rank. b < batch_size only at the round cap with on_cap="partial" (stats["partial"] = 1; with no
        group kept, rewards are an empty (0, 0) tensor). on_cap="error" raises on every rank alike.
        stats: rounds, groups_generated, groups_kept (in the batch), groups_filtered (all-equal rewards),
        groups_surplus (kept but beyond batch_size), groups_dropped (filtered + surplus), partial."""
        if not self.done:
            raise RuntimeError("result() before the collector is done; keep calling add_round()")
        used = min(len(self.kept), self.batch_size)
        stats = {
            "rounds": self.rounds,
            "groups_generated": self.groups_generated,
            "groups_kept": used,
            "groups_filtered": self.groups_generated - len(self.kept),
            "groups_surplus": len(self.kept) - used,
            "groups_dropped": self.groups_generated - used,
            "partial": int(used < self.batch_size),
        }
        if used < self.batch_size and self.on_cap == "error":
            raise RuntimeError(
                f"dynamic sampling kept {used} of {self.batch_size} groups over all ranks after {self.rounds} "
                f"generation rounds ({self.groups_generated} groups generated, {stats['groups_filtered']} with "
                "all-equal rewards); raise the round cap or use on_cap='partial'")
        if used == 0:
            return [], torch.empty(0, 0), stats
        batch = self.kept[:used]
        return [group for _, group, _ in batch], torch.stack([rewards for _, _, rewards in batch]), stats  # (b, G)

    def share(self, dp_rank: int, dp_size: int) -> tuple[list[Any], torch.Tensor]:
        """This rank's part of result() for the update: groups dp_rank, dp_rank + dp_size, ... of the batch, so
        the ranks' counts differ by at most one (a rank may get none in a partial batch), and rewards (b_r, G)."""
        if not 0 <= dp_rank < dp_size:
            raise ValueError(f"dp_rank {dp_rank} outside 0..{dp_size - 1}")
        groups, rewards, _ = self.result()
        if not groups:
            return [], rewards
        return groups[dp_rank::dp_size], rewards[dp_rank::dp_size]  # (b_r, G)
