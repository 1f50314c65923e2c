"""Packed micro-batches: layout on a hand example, budget rules, and on a tiny Qwen2 the same log-probs as
each sequence alone and the same loss and gradients whatever the micro-batch split."""
import random

import pytest
import torch

from transformers.masking_utils import find_packed_sequence_indices

from rpt.grpo import bucket_micro_batches, pack_micro_batches, policy_loss
from rpt.policy import PolicyLogprobs
from rpt.model import load_model


def test_hand_example_layout():
    prompts = [[1, 2], [3], [4, 5, 6]]
    responses = [[7, 8], [9, 10, 11], [12]]
    # 3 positions each (prompt + response - 1); budget 6 -> 2 micro-batches, longest-first into the lightest:
    # seq 0 -> mb 0, seq 1 -> mb 1, seq 2 -> mb 0 (tie on load, lower index first).
    first, second = pack_micro_batches(prompts, responses, max_tokens=6)
    assert first.sequence_indices == [0, 2] and second.sequence_indices == [1]
    assert first.input_ids.tolist() == [[1, 2, 7, 4, 5, 6]]
    assert first.targets.tolist() == [[2, 7, 8, 5, 6, 12]]
    assert first.position_ids.tolist() == [[0, 1, 2, 0, 1, 2]]
    assert first.loss_mask.tolist() == [[False, True, True, False, False, True]]
    assert first.response_lengths.tolist() == [[2, 2, 2, 1, 1, 1]]
    assert first.seq_index.tolist() == [[0, 0, 0, 2, 2, 2]]
    assert second.input_ids.tolist() == [[3, 9, 10]] and second.targets.tolist() == [[9, 10, 11]]
    assert second.loss_mask.tolist() == [[True, True, True]]

    advantages = torch.tensor([0.5, -1.0, 2.0])
    assert first.expand_sequence_values(advantages).tolist() == [[0.5, 0.5, 0.5, 2.0, 2.0, 2.0]]
    engine_logp = [torch.tensor([-0.1, -0.2]), torch.tensor([-0.3, -0.4, -0.5]), torch.tensor([-0.6])]
    torch.testing.assert_close(first.place_response_values(engine_logp),
                               torch.tensor([[0.0, -0.1, -0.2, 0.0, 0.0, -0.6]]), atol=0, rtol=0)


def test_budget_respected_and_every_sequence_once():
    rng = random.Random(0)
    prompts = [[1] * rng.randint(1, 30) for _ in range(40)]
    responses = [[2] * rng.randint(0, 50) for _ in range(40)]
    lengths = [len(p) + len(r) - 1 for p, r in zip(prompts, responses)]
    for budget, min_micro_batches in ((80, 1), (200, 1), (10_000, 1), (10_000, 7)):
        micro_batches = pack_micro_batches(prompts, responses, budget, min_micro_batches)
        assert sorted(i for mb in micro_batches for i in mb.sequence_indices) == list(range(40))
        assert all(mb.input_ids.shape[1] <= budget for mb in micro_batches)
        assert len(micro_batches) >= max(min_micro_batches, -(-sum(lengths) // budget))
    assert len(pack_micro_batches(prompts, responses, 10_000, 7)) == 7


def test_invalid_inputs_rejected():
    with pytest.raises(ValueError, match="exceeds the micro-batch budget"):
        pack_micro_batches([[1, 2, 3]], [[4, 5, 6]], max_tokens=4)
    with pytest.raises(ValueError, match="at least one token"):
        pack_micro_batches([[]], [[4]], max_tokens=4)
    with pytest.raises(ValueError, match="min_micro_batches"):
        pack_micro_batches([[1]], [[4]], max_tokens=4, min_micro_batches=2)


@pytest.fixture(scope="module")
def tiny_batch(tiny_qwen2_dir):
    torch.manual_seed(0)
    model = load_model(tiny_qwen2_dir)
    rng = random.Random(0)
    vocab = model.config.vocab_size
    prompts = [[rng.randrange(vocab) for _ in range(rng.randint(2, 10))] for _ in range(8)]
    responses = [[rng.randrange(vocab) for _ in range(rng.randint(1, 12))] for _ in range(8)]
    return PolicyLogprobs(model), prompts, responses


@pytest.mark.parametrize("layout", [pack_micro_batches, bucket_micro_batches])
def test_packed_logprobs_equal_each_sequence_alone(tiny_batch, layout):
    policy, prompts, responses = tiny_batch
    (packed,) = layout(prompts, responses, max_tokens=10_000)
    with torch.no_grad():
        packed_logp = policy(packed.input_ids, packed.position_ids, packed.targets, temperature=0.8)  # (R, L)
        for seq in range(8):
            tokens = torch.tensor([prompts[seq] + responses[seq]])
            alone = policy(tokens[:, :-1], torch.arange(tokens.shape[1] - 1)[None], tokens[:, 1:], temperature=0.8)
            # padding continues the row's last sequence with positions past its end
            in_pack = packed_logp[(packed.seq_index == seq) & (packed.position_ids < tokens.shape[1] - 1)]
            torch.testing.assert_close(in_pack, alone[0], atol=1e-6, rtol=0)


def step_loss_and_grads(policy, prompts, responses, advantages, num_micro_batches, agg, bucket_budget=None):
    """Sum of micro-batch losses (backward on each, as the update does) and the accumulated gradients.
    bucket_budget: length-bucketed micro-batches of that many padded tokens instead of packed rows."""
    policy.zero_grad()
    global_tokens = sum(len(r) for r in responses)
    total = torch.zeros(())
    micro_batches = bucket_micro_batches(prompts, responses, bucket_budget, num_micro_batches) if bucket_budget \
        else pack_micro_batches(prompts, responses, max_tokens=10_000, min_micro_batches=num_micro_batches)
    for mb in micro_batches:
        logp = policy(mb.input_ids, mb.position_ids, mb.targets, temperature=0.8, chunk_size=16)  # (1, L)
        loss, _ = policy_loss(logp, logp.detach(), mb.expand_sequence_values(advantages), mb.loss_mask, agg=agg,
                              global_tokens=global_tokens, global_seqs=len(responses),
                              response_lengths=mb.response_lengths, max_response_len=12)
        loss.backward()
        total += loss.detach()
    return total, {name: p.grad.clone() for name, p in policy.named_parameters()}


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_loss_and_gradients_independent_of_micro_batch_split(tiny_batch, agg):
    policy, prompts, responses = tiny_batch
    advantages = torch.randn(8, generator=torch.Generator().manual_seed(1))
    reference_loss, reference_grads = step_loss_and_grads(policy, prompts, responses, advantages, 1, agg)
    # Against an independent value: on-policy, the loss is -sum over sequences of weight * advantage.
    lengths = torch.tensor([len(r) for r in responses], dtype=torch.float32)
    expected = (-(advantages * lengths).sum() / lengths.sum() if agg == "token-mean" else -advantages.mean())
    torch.testing.assert_close(reference_loss, expected, atol=1e-6, rtol=0)
    # packed rows split 2 and 4 ways; one sequence per row, length-bucketed, in 1, 3 and many micro-batches
    for num_micro_batches, bucket_budget in ((2, None), (4, None), (1, 10_000), (3, 10_000), (1, 40)):
        loss, grads = step_loss_and_grads(policy, prompts, responses, advantages, num_micro_batches, agg,
                                          bucket_budget)
        torch.testing.assert_close(loss, reference_loss, atol=1e-6, rtol=0)
        for name, grad in grads.items():
            torch.testing.assert_close(grad, reference_grads[name], atol=1e-6, rtol=0, msg=name)


def test_bucket_hand_example():
    prompts = [[1, 2], [3], [4, 5, 6], [7], [8, 9]]
    responses = [[7, 8], [9, 10, 11, 12], [12], [13], [14, 15, 16, 17, 18]]  # positions 3, 4, 3, 1, 6
    # sorted longest first: 4 (6), 1 (4), 0 (3), 2 (3), 3 (1); budget 12 padded positions:
    # [4, 1] (2 rows x 6 = 12), then [0, 2, 3] (3 rows x 3 = 9)
    first, second = bucket_micro_batches(prompts, responses, max_tokens=12)
    assert first.sequence_indices == [4, 1] and second.sequence_indices == [0, 2, 3]
    assert first.input_ids.tolist() == [[8, 9, 14, 15, 16, 17], [3, 9, 10, 11, 0, 0]]
    assert first.position_ids.tolist() == [[0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5]]  # padding opens no sequence
    assert first.loss_mask.tolist() == [[False, True, True, True, True, True], [True, True, True, True, False, False]]
    assert second.input_ids.tolist() == [[1, 2, 7], [4, 5, 6], [7, 0, 0]]
    assert second.targets.tolist() == [[2, 7, 8], [5, 6, 12], [13, 0, 0]]
    engine_logp = [torch.tensor([-0.1, -0.2]), torch.tensor([-0.3, -0.4, -0.5, -0.55]), torch.tensor([-0.6]),
                   torch.tensor([-0.7]), torch.tensor([-0.8] * 5)]
    torch.testing.assert_close(second.place_response_values(engine_logp), torch.tensor(
        [[0.0, -0.1, -0.2], [0.0, 0.0, -0.6], [-0.7, 0.0, 0.0]]), atol=0, rtol=0)
    # at least 3 micro-batches: the run with the most padded positions (the first, 12) is halved
    assert [mb.sequence_indices for mb in bucket_micro_batches(prompts, responses, 12, 3)] == [[4], [1], [0, 2, 3]]


def test_bucket_one_sequence_per_row_within_budget_every_sequence_once():
    rng = random.Random(0)
    prompts = [[1] * rng.randint(1, 30) for _ in range(60)]
    responses = [[2] * rng.randint(0, 90) for _ in range(60)]
    for budget, min_micro_batches in ((120, 1), (400, 1), (10_000, 1), (10_000, 7), (400, 30)):
        micro_batches = bucket_micro_batches(prompts, responses, budget, min_micro_batches)
        assert sorted(i for mb in micro_batches for i in mb.sequence_indices) == list(range(60))
        assert len(micro_batches) >= min_micro_batches
        for mb in micro_batches:
            assert mb.input_ids.numel() <= budget  # padded positions count
            assert mb.input_ids.shape[0] == len(mb.sequence_indices)  # one sequence per row
            assert all(len(set(row)) == 1 for row in mb.seq_index.tolist())
            # transformers sees no packed sequence, so sdpa/eager get no (L, L) mask
            assert find_packed_sequence_indices(mb.position_ids) is None
    with pytest.raises(ValueError, match="exceeds the micro-batch budget"):
        bucket_micro_batches([[1, 2, 3]], [[4, 5, 6]], max_tokens=4)
    with pytest.raises(ValueError, match="min_micro_batches"):
        bucket_micro_batches([[1]], [[4]], max_tokens=4, min_micro_batches=2)
