"""Dynamic sampling bookkeeping with scripted generation rounds (no model)."""
import pytest
import torch

from rpt.grpo import PooledGroupCollector, filter_groups, select_kept

REWARDS = torch.tensor([[1.0, 0.0, 0.0, 0.0],  # spread: kept
                        [1.0, 1.0, 1.0, 1.0],  # all solved: dropped
                        [0.0, 0.0, 0.0, 0.0],  # none solved: dropped
                        [0.5, 0.5, 0.5, 0.25]])  # spread: kept


def test_filter_groups_before_and_after_start_step():
    assert filter_groups(REWARDS, step=499, start_step=500).tolist() == [True, True, True, True]
    assert filter_groups(REWARDS, step=500, start_step=500).tolist() == [True, False, False, True]


def test_one_rank_collects_until_full_over_rounds_and_truncates():
    collector = PooledGroupCollector(batch_size=3, max_rounds=5, step=600, start_step=500)
    collector.add_round([select_kept(["a", "b", "c", "d"], REWARDS, 600, 500)], [4])  # keeps a, d
    assert not collector.done
    collector.add_round([select_kept(["e", "f", "g", "h"], REWARDS, 600, 500)], [4])  # keeps e, h: 4 >= 3
    assert collector.done
    groups, rewards, stats = collector.result()
    assert groups == ["a", "d", "e"]
    torch.testing.assert_close(rewards, REWARDS[[0, 3, 0]], atol=0, rtol=0)
    assert stats == {"rounds": 2, "groups_generated": 8, "groups_kept": 3, "groups_filtered": 4,
                     "groups_surplus": 1, "groups_dropped": 5, "partial": 0}


# --- pooled over data-parallel ranks ---------------------------------------------------------------------

def spread(sample_id: int) -> bool:
    """A fixed, irregular pattern of which stream samples get reward spread (kept after step 500)."""
    return sample_id % 3 == 0 or sample_id % 7 == 2


def rewards_of(sample_ids: list[int]) -> torch.Tensor:
    """(b, 4) rewards: spread where spread(id), else all equal; the first value is id + 1 to check pairing."""
    return torch.tensor([[i + 1.0, 0.0, 0.0, 0.0] if spread(i) else [i + 1.0] * 4 for i in sample_ids])


def run_pooled(dp_size: int, batch_size: int, max_rounds: int, on_cap: str = "partial"):
    """Every rank's collector fed as the trainer feeds it: rank r takes the round's stream samples at offsets
    r, r + dp_size, ... (SampleStream), filters locally, and all ranks see every rank's kept list."""
    per_rank = batch_size // dp_size
    collectors = [PooledGroupCollector(batch_size, max_rounds, on_cap, step=600, start_step=500)
                  for _ in range(dp_size)]
    round_index = 0
    while not collectors[0].done:
        first = round_index * batch_size
        kept_by_rank = []
        for rank in range(dp_size):
            ids = [first + i * dp_size + rank for i in range(per_rank)]
            kept_by_rank.append(select_kept([f"s{i}" for i in ids], rewards_of(ids), step=600, start_step=500))
        for collector in collectors:
            collector.add_round(kept_by_rank, [per_rank] * dp_size)
        assert len({collector.done for collector in collectors}) == 1
        round_index += 1
    return collectors


def test_pooled_two_ranks_keep_the_same_set_as_one_process_and_trim():
    # stream ids 0..7 in round 0: spread at 0, 2, 3, 6 (4 kept); round 1 (8..15): 9, 12, 15 -> 7 kept >= 6
    (one,) = run_pooled(dp_size=1, batch_size=8, max_rounds=4)
    groups, rewards, stats = one.result()
    assert groups == ["s0", "s2", "s3", "s6", "s9", "s12", "s15", "s16"]  # round 2 tops it up: 16 has spread
    assert rewards[:, 0].tolist() == [1, 3, 4, 7, 10, 13, 16, 17]
    # round 2 (16..23) keeps 16, 18, 21, 23: 11 kept in all, the last 3 trimmed; 24 - 11 filtered
    assert stats == {"rounds": 3, "groups_generated": 24, "groups_kept": 8, "groups_filtered": 13,
                     "groups_surplus": 3, "groups_dropped": 16, "partial": 0}
    for dp_size in (2, 4):
        pooled = run_pooled(dp_size=dp_size, batch_size=8, max_rounds=4)
        for collector in pooled:
            other_groups, other_rewards, other_stats = collector.result()
            assert other_groups == groups and other_stats == stats
            torch.testing.assert_close(other_rewards, rewards, atol=0, rtol=0)
        shares = [pooled[rank].share(rank, dp_size) for rank in range(dp_size)]
        assert sorted(g for share, _ in shares for g in share) == sorted(groups)  # each group on one rank
        assert {len(share) for share, _ in shares} == {8 // dp_size}  # balanced
        assert shares[1][0] == groups[1::dp_size]
        torch.testing.assert_close(shares[1][1], rewards[1::dp_size], atol=0, rtol=0)


def test_pooled_partial_and_error_at_the_cap_on_every_rank():
    # batch 8 after one round: only 4 kept (0, 2, 3, 6)
    for collector in run_pooled(dp_size=2, batch_size=8, max_rounds=1):
        groups, rewards, stats = collector.result()
        assert groups == ["s0", "s2", "s3", "s6"] and rewards.shape == (4, 4)
        assert stats["partial"] == 1 and stats["groups_kept"] == 4 and stats["groups_dropped"] == 4
    assert [len(c.share(r, 2)[0]) for r, c in enumerate(run_pooled(2, 8, 1))] == [2, 2]
    for collector in run_pooled(dp_size=2, batch_size=8, max_rounds=1, on_cap="error"):
        with pytest.raises(RuntimeError, match="kept 4 of 8 groups over all ranks after 1 generation rounds"):
            collector.result()


def test_pooled_before_start_step_and_bad_inputs():
    collector = PooledGroupCollector(batch_size=4, max_rounds=3, step=10, start_step=500)
    collector.add_round([select_kept(["a", "c"], REWARDS[1:3], 10, 500),
                         select_kept(["b", "d"], REWARDS[1:3], 10, 500)], [2, 2])
    assert collector.done and collector.result()[0] == ["a", "b", "c", "d"]  # all kept, interleaved by offset
    with pytest.raises(RuntimeError, match="after the collector is done"):
        collector.add_round([[], []], [2, 2])
    fresh = PooledGroupCollector(batch_size=4, max_rounds=3)
    with pytest.raises(RuntimeError, match="before the collector is done"):
        fresh.result()
    with pytest.raises(ValueError, match="outside its 1 generated"):
        fresh.add_round([[(1, "x", REWARDS[0])]], [1])
    with pytest.raises(ValueError, match="from 2 ranks but counts from 1"):
        fresh.add_round([[], []], [1])
    with pytest.raises(ValueError, match="on_cap"):
        PooledGroupCollector(batch_size=2, max_rounds=2, on_cap="ignore")
