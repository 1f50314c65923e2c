"""Dynamic sampling bookkeeping with scripted generation rounds (no model)."""
import pytest
import torch

from rpt.grpo import GroupCollector, filter_groups

REWARDS = torch.tensor([[1.0, 0.0, 0.0, 0.0],  # spread: kept
                        [1.0, 1.0, 1.0, 1.0],  # all solved: dropped
                        [0.0, 0.0, 0.0, 0.0],  # none solved: dropped
                        [0.5, 0.5, 0.5, 0.25]])  # spread: kept


def test_filter_groups_before_and_after_start_step():
    assert filter_groups(REWARDS, step=499, start_step=500).tolist() == [True, True, True, True]
    assert filter_groups(REWARDS, step=500, start_step=500).tolist() == [True, False, False, True]


def test_collects_until_full_over_rounds_and_truncates():
    collector = GroupCollector(batch_size=3, max_rounds=5, step=600, start_step=500)
    collector.add(["a", "b", "c", "d"], REWARDS)  # keeps a, d
    assert not collector.done
    collector.add(["e", "f", "g", "h"], REWARDS)  # keeps e, h: 4 >= 3
    assert collector.done
    groups, rewards, stats = collector.result()
    assert groups == ["a", "d", "e"]
    torch.testing.assert_close(rewards, REWARDS[[0, 3, 0]], atol=0, rtol=0)
    assert stats == {"rounds": 2, "groups_generated": 8, "groups_kept": 4, "groups_dropped": 4, "partial": 0}
    with pytest.raises(RuntimeError, match="after the collector is done"):
        collector.add(["i"], REWARDS[:1])


def test_before_start_step_one_round_fills_the_batch():
    collector = GroupCollector(batch_size=4, max_rounds=3, step=10, start_step=500)
    collector.add(list("abcd"), REWARDS)
    assert collector.done
    groups, _, stats = collector.result()
    assert groups == list("abcd") and stats["groups_dropped"] == 0 and stats["rounds"] == 1


def test_round_cap_error_or_partial():
    degenerate = REWARDS[1:3]  # every group all-equal: nothing is ever kept
    strict = GroupCollector(batch_size=2, max_rounds=2, on_cap="error", step=600, start_step=500)
    strict.add(["a", "b"], degenerate)
    strict.add(["c", "d"], REWARDS[:2])  # keeps c only
    assert strict.done
    with pytest.raises(RuntimeError, match="kept 1 of 2 groups after 2 generation rounds"):
        strict.result()

    lenient = GroupCollector(batch_size=2, max_rounds=2, on_cap="partial", step=600, start_step=500)
    lenient.add(["a", "b"], degenerate)
    lenient.add(["c", "d"], REWARDS[:2])
    groups, rewards, stats = lenient.result()
    assert groups == ["c"] and rewards.shape == (1, 4)
    assert stats == {"rounds": 2, "groups_generated": 4, "groups_kept": 1, "groups_dropped": 3, "partial": 1}


def test_result_before_done_and_bad_arguments_rejected():
    collector = GroupCollector(batch_size=2, max_rounds=2)
    with pytest.raises(RuntimeError, match="before the collector is done"):
        collector.result()
    with pytest.raises(ValueError, match="on_cap"):
        GroupCollector(batch_size=2, max_rounds=2, on_cap="ignore")
    with pytest.raises(ValueError, match="rewards for"):
        collector.add(["a"], REWARDS)
