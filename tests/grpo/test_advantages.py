import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rpt.grpo import compute_advantages


def test_hand_computed_2x4():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    # Row 0: mean 0.25, unbiased std sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5.
    # Row 1: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 1 / sqrt(3).
    eps = 1e-6
    expected = torch.tensor([
        [0.75 / (0.5 + eps), -0.25 / (0.5 + eps), -0.25 / (0.5 + eps), -0.25 / (0.5 + eps)],
        [0.5 / (1 / math.sqrt(3) + eps), 0.5 / (1 / math.sqrt(3) + eps),
         -0.5 / (1 / math.sqrt(3) + eps), -0.5 / (1 / math.sqrt(3) + eps)],
    ])
    torch.testing.assert_close(compute_advantages(rewards, eps=eps), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(compute_advantages(rewards, scale_by_std=False),
                               torch.tensor([[0.75, -0.25, -0.25, -0.25], [0.5, 0.5, -0.5, -0.5]]), atol=0, rtol=0)


def test_equal_rewards_give_exactly_zero():
    # 0.1 * 3 / 3 != 0.1 in floating point; the advantage must still be exactly 0, not residue / eps.
    rewards = torch.tensor([[0.1, 0.1, 0.1], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    for scale_by_std in (True, False):
        assert torch.equal(compute_advantages(rewards, scale_by_std=scale_by_std), torch.zeros(3, 3))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.floats(-10, 10, width=32), min_size=5, max_size=5), min_size=1, max_size=4))
def test_zero_group_mean_and_unit_std(rows):
    rewards = torch.tensor(rows)
    adv = compute_advantages(rewards, eps=0.0)
    torch.testing.assert_close(adv.mean(dim=1), torch.zeros(len(rows)), atol=1e-4, rtol=0)
    spread = rewards.std(dim=1) > 1e-3
    torch.testing.assert_close(adv.std(dim=1)[spread], torch.ones(int(spread.sum())), atol=1e-3, rtol=0)


def test_single_sample_groups_rejected():
    with pytest.raises(ValueError, match="G >= 2"):
        compute_advantages(torch.ones(3, 1))
