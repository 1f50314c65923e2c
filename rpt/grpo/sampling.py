"""Dynamic sampling (DAPO; PAPER.md section 4): from a given step on, keep only groups whose G rewards are not
all equal (those have zero advantage, so no gradient) and keep generating until the step's batch is full.

Pure bookkeeping, no model: the trainer loops

    collector = GroupCollector(batch_size, max_rounds, on_cap, step=step, start_step=start_step)
    while not collector.done:
        groups, rewards = <sample contexts, generate G responses each, score>   # rewards (B, G)
        collector.add(groups, rewards)
    groups, rewards, stats = collector.result()

Before `start_step` (paper: 500) every group is kept, so one round fills the batch. Rounds are capped
(`max_rounds`); hitting the cap short of a full batch raises (on_cap="error") or returns the partial batch
with stats saying so (on_cap="partial"), for the trainer to log. With several ranks each rank collects its
own share; `done` is local, so the trainer must all-reduce it (continue while any rank is not done) when the
engine's generate involves collectives (tensor parallel).

Deviations from the paper: the round cap (the paper/DAPO generate "until the batch is full"; an uncapped loop
never ends when the policy solves everything or nothing); groups kept beyond a full batch are discarded
(as DAPO does).
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


class GroupCollector:
    """Collects groups over generation rounds until `batch_size` groups are kept or `max_rounds` are spent."""

    def __init__(self, batch_size: int, max_rounds: int, on_cap: str = "error", step: int = 0, start_step: int = 0):
        """batch_size: groups (contexts) wanted this step. max_rounds: generation rounds allowed (>= 1).
        on_cap: "error" or "partial", what result() does when the cap left the batch short.
        step, start_step: as in filter_groups; before start_step every group is kept."""
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
        self.kept_groups: list[Any] = []
        self.kept_rewards: list[torch.Tensor] = []  # (G,) each

    @property
    def done(self) -> bool:
        return len(self.kept_groups) >= self.batch_size or self.rounds >= self.max_rounds

    def add(self, groups: list[Any], rewards: torch.Tensor) -> None:
        """groups: B payloads (whatever the trainer needs later: prompts, completions...); rewards: (B, G)."""
        if len(groups) != rewards.shape[0]:
            raise ValueError(f"{len(groups)} groups but rewards for {rewards.shape[0]}")
        if self.done:
            raise RuntimeError("add() after the collector is done (batch full or round cap reached)")
        keep = filter_groups(rewards, self.step, self.start_step)  # (B,)
        for group, group_rewards, kept in zip(groups, rewards, keep.tolist()):
            if kept:
                self.kept_groups.append(group)
                self.kept_rewards.append(group_rewards)
        self.rounds += 1
        self.groups_generated += len(groups)

    def result(self) -> tuple[list[Any], torch.Tensor, dict[str, int]]:
        """-> (the first batch_size kept groups, their rewards (b, G), stats). b < batch_size only when the
        round cap was hit with on_cap="partial"; stats["partial"] is then 1 (and with no group kept at all,
        the rewards are an empty (0, 0) tensor: skip the update).
        stats: rounds, groups_generated, groups_kept (before truncation to batch_size), groups_dropped, partial."""
        if not self.done:
            raise RuntimeError("result() before the collector is done; keep calling add()")
        kept = len(self.kept_groups)
        stats = {
            "rounds": self.rounds,
            "groups_generated": self.groups_generated,
            "groups_kept": kept,
            "groups_dropped": self.groups_generated - kept,
            "partial": int(kept < self.batch_size),
        }
        if kept < self.batch_size and self.on_cap == "error":
            raise RuntimeError(
                f"dynamic sampling kept {kept} of {self.batch_size} groups after {self.rounds} generation rounds "
                f"({self.groups_generated} groups generated, {stats['groups_dropped']} with all-equal rewards); "
                "raise the round cap or use on_cap='partial'")
        if kept == 0:
            return [], torch.empty(0, 0), stats
        groups = self.kept_groups[: self.batch_size]
        return groups, torch.stack(self.kept_rewards[: self.batch_size]), stats  # (b, G)
