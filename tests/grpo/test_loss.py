"""policy_loss on a hand-computed 2x4 batch for every aggregation mode, plus its invariants."""
import math

import pytest
import torch

from rpt.grpo import AGG_MODES, policy_loss

# Two sequences of 4 slots; row 0 has 3 loss tokens, row 1 has 2. Off-mask entries hold garbage that must
# have no effect on the loss and receive no gradient.
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
RATIOS = [[1.5, 0.5, 1.1], [1.0, 1.3]]
ADV = torch.tensor([[1.0], [-2.0]])  # (N, 1), broadcast over tokens
# Per-token loss with clip 0.2 / 0.2: max(-A r, -A clip(r, 0.8, 1.2)):
#   row 0 (A = 1):  r 1.5 -> max(-1.5, -1.2) = -1.2 (clipped), r 0.5 -> max(-0.5, -0.8) = -0.5, r 1.1 -> -1.1
#   row 1 (A = -2): r 1.0 -> 2.0, r 1.3 -> max(2.6, 2.4) = 2.6
# sums: row 0 -2.8 over 3 tokens, row 1 4.6 over 2 tokens; 5 tokens, 2 sequences.
EXPECTED = {
    "token-mean": (-2.8 + 4.6) / 5,
    "seq-mean-token-sum": (-2.8 + 4.6) / 2,
    "seq-mean-token-mean": (-2.8 / 3 + 4.6 / 2) / 2,
    "seq-mean-token-sum-norm": (-2.8 + 4.6) / (2 * 4),  # max_response_len 4
}


def make_batch():
    old_logp = torch.tensor([[-1.0, -2.0, -0.5, -3.0], [-0.7, -1.2, -0.1, -0.2]])
    log_ratios = torch.zeros(2, 4)
    for row, ratios in enumerate(RATIOS):
        log_ratios[row, : len(ratios)] = torch.tensor([math.log(r) for r in ratios])
    logp = old_logp + log_ratios
    logp[0, 3] = float("-inf")  # garbage off the mask
    logp[1, 2:] = 1000.0
    return logp.requires_grad_(), old_logp


@pytest.mark.parametrize("agg", AGG_MODES)
def test_hand_computed_loss_every_mode(agg):
    logp, old_logp = make_batch()
    loss, metrics = policy_loss(logp, old_logp, ADV, MASK, agg=agg, max_response_len=4)
    assert loss.item() == pytest.approx(EXPECTED[agg], abs=1e-6)
    assert metrics["pg_loss"].item() == pytest.approx(EXPECTED[agg], abs=1e-6)
    assert metrics["clip_frac"].item() == pytest.approx(1 / 5, abs=1e-7)
    assert metrics["ratio_mean"].item() == pytest.approx(5.4 / 5, abs=1e-6)
    assert metrics["ratio_max"].item() == pytest.approx(1.5, abs=1e-6)
    assert metrics["ratio_min"].item() == pytest.approx(0.5, abs=1e-6)
    k3 = sum(r - 1 - math.log(r) for ratios in RATIOS for r in ratios) / 5
    assert metrics["approx_kl_old"].item() == pytest.approx(k3, abs=1e-6)
    loss.backward()
    assert torch.isfinite(logp.grad).all()
    assert torch.equal(logp.grad[~MASK], torch.zeros(3)), "masked tokens must get exactly zero gradient"


def test_hand_computed_gradient_token_mean():
    logp, old_logp = make_batch()
    loss, _ = policy_loss(logp, old_logp, ADV, MASK)
    loss.backward()
    # d/dlogp of -A r / 5 is -A r / 5 on the unclipped branch; the clipped token (r 1.5, A 1) gets 0.
    expected = torch.tensor([[0.0, -0.5 / 5, -1.1 / 5, 0.0], [2.0 / 5, 2 * 1.3 / 5, 0.0, 0.0]])
    torch.testing.assert_close(logp.grad, expected, atol=1e-6, rtol=0)


def test_clip_higher():
    logp, old_logp = make_batch()
    loss, metrics = policy_loss(logp, old_logp, ADV, MASK, clip_low=0.2, clip_high=0.28)
    # r 1.5 with A 1 is now clipped at 1.28; r 1.3 with A -2: max(2.6, 2.56) = 2.6 still.
    assert loss.item() == pytest.approx((-1.28 - 0.5 - 1.1 + 2.0 + 2.6) / 5, abs=1e-6)
    assert metrics["clip_frac"].item() == pytest.approx(1 / 5, abs=1e-7)


def test_truncated_importance_sampling():
    logp, old_logp = make_batch()
    behavior_logp = old_logp.clone()
    behavior_logp[0, 2] -= math.log(3.0)  # weight exp(log 3) = 3, truncated to the cap 2
    behavior_logp[1, 0] -= math.log(0.5)  # weight 0.5
    behavior_logp[0, 3] = float("nan")  # garbage off the mask
    loss, metrics = policy_loss(logp, old_logp, ADV, MASK, behavior_logp=behavior_logp, tis_cap=2.0)
    assert loss.item() == pytest.approx((-1.2 - 0.5 - 1.1 * 2 + 2.0 * 0.5 + 2.6) / 5, abs=1e-6)
    assert metrics["tis_weight"].item() == pytest.approx((1 + 1 + 2 + 0.5 + 1) / 5, abs=1e-6)


def test_kl_and_entropy_terms():
    logp, old_logp = make_batch()
    ref_logp = logp.detach() + math.log(2.0)  # k3 = 2 - log 2 - 1 on every token
    entropy = torch.tensor([[1.0, 2.0, 3.0, float("nan")], [4.0, 5.0, float("nan"), float("nan")]])
    loss, metrics = policy_loss(logp, old_logp, ADV, MASK, ref_logp=ref_logp, kl_coef=0.1,
                                entropy=entropy, entropy_coef=0.01)
    expected = EXPECTED["token-mean"] + 0.1 * (1 - math.log(2.0)) - 0.01 * (1 + 2 + 3 + 4 + 5) / 5
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert metrics["kl_ref"].item() == pytest.approx(1 - math.log(2.0), abs=1e-6)
    assert metrics["entropy"].item() == pytest.approx(3.0, abs=1e-6)
    loss.backward()
    assert torch.equal(logp.grad[~MASK], torch.zeros(3))


def test_exact_on_policy_ratio_one_and_loss_is_minus_token_mean_advantage():
    torch.manual_seed(0)
    logp = torch.randn(6, 9).requires_grad_()
    adv = torch.randn(6, 1)
    mask = torch.rand(6, 9) < 0.7
    loss, metrics = policy_loss(logp, logp.detach(), adv, mask)
    tokens = mask.sum()
    torch.testing.assert_close(loss, -(adv * mask).sum() / tokens, atol=1e-6, rtol=0)
    assert metrics["ratio_max"].item() == 1.0 and metrics["ratio_min"].item() == 1.0
    assert metrics["clip_frac"].item() == 0.0
    loss.backward()
    torch.testing.assert_close(logp.grad, -(adv * mask) / tokens, atol=1e-7, rtol=0)


@pytest.mark.parametrize("agg", AGG_MODES)
def test_micro_batches_sum_to_full_batch_and_packed_layout_agrees(agg):
    torch.manual_seed(1)
    logp = torch.randn(5, 7)
    old_logp = logp + 0.3 * torch.randn(5, 7)
    adv = torch.randn(5, 1)
    mask = torch.rand(5, 7) < 0.6
    mask[:, 0] = True  # every sequence has a loss token
    kwargs = dict(agg=agg, max_response_len=7)
    full, _ = policy_loss(logp, old_logp, adv, mask, **kwargs)

    counts = dict(global_tokens=mask.sum(), global_seqs=5)
    parts = [policy_loss(logp[rows], old_logp[rows], adv[rows], mask[rows], **kwargs, **counts)[0]
             for rows in (slice(0, 2), slice(2, 3), slice(3, 5))]
    torch.testing.assert_close(sum(parts), full, atol=1e-6, rtol=0)

    # Packed: the 5 rows' loss tokens in one row, each token told its sequence's length.
    response_lengths = mask.sum(dim=1, keepdim=True).expand_as(mask)
    packed = [tensor[mask].unsqueeze(0) for tensor in (logp, old_logp, adv.expand_as(mask), response_lengths)]
    packed_loss, _ = policy_loss(packed[0], packed[1], packed[2], torch.ones_like(packed[0], dtype=torch.bool),
                                 response_lengths=packed[3], **kwargs)
    torch.testing.assert_close(packed_loss, full, atol=1e-6, rtol=0)


def test_unknown_mode_and_missing_constant_rejected():
    logp, old_logp = make_batch()
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        policy_loss(logp, old_logp, ADV, MASK, agg="sum")
    with pytest.raises(ValueError, match="max_response_len"):
        policy_loss(logp, old_logp, ADV, MASK, agg="seq-mean-token-sum-norm")
