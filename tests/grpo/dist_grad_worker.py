"""Run by test_distributed.py under `torchrun --nproc_per_node=2` (gloo): one GRPO step's loss and gradients
computed by one process over the whole batch, and by 2 ranks each over half the sequences (in packed
micro-batches, counts and micro-batch numbers agreed by all-reduce, gradients SUM-reduced), must agree.
Rank 0 saves both results per aggregation mode with torch.save to argv[2]."""
import random
import sys

import torch
import torch.distributed as dist

from rpt.dist import cleanup, init_distributed
from rpt.grpo import AGG_MODES, PolicyLogprobs, compute_advantages, pack_micro_batches, policy_loss
from rpt.model import load_model

GROUPS, SAMPLES = 4, 4  # B contexts, G samples: N = 16 sequences
MAX_RESPONSE_LEN = 12


def all_reduce(tensor: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(tensor, op=op)
    return tensor


def step(policy, prompts, responses, advantages, max_tokens, agg, communicate):
    """Loss of this process's sequences, normalized by global counts; gradients left in policy's .grad."""
    policy.zero_grad()
    global_tokens = torch.tensor(float(sum(len(r) for r in responses)))
    global_seqs = torch.tensor(float(len(responses)))
    num_micro_batches = torch.tensor(len(pack_micro_batches(prompts, responses, max_tokens)))
    if communicate:
        all_reduce(global_tokens), all_reduce(global_seqs), all_reduce(num_micro_batches, dist.ReduceOp.MAX)
    total = torch.zeros(())
    for mb in pack_micro_batches(prompts, responses, max_tokens, min_micro_batches=int(num_micro_batches)):
        logp = policy(mb.input_ids, mb.position_ids, mb.targets, temperature=0.8, chunk_size=32)  # (1, L)
        loss, _ = policy_loss(logp, logp.detach() + 0.05, mb.expand_sequence_values(advantages), mb.loss_mask,
                              clip_low=0.2, clip_high=0.28, agg=agg, global_tokens=global_tokens,
                              global_seqs=global_seqs, response_lengths=mb.response_lengths,
                              max_response_len=MAX_RESPONSE_LEN)
        loss.backward()
        total += loss.detach()
    return total, [p.grad.clone() for p in policy.parameters()]


def main(model_dir: str, out_path: str) -> None:
    rank, world_size, _ = init_distributed()
    torch.manual_seed(0)
    policy = PolicyLogprobs(load_model(model_dir))  # same weights on every rank
    rng = random.Random(0)  # same batch on every rank
    vocab = policy.model.config.vocab_size
    n = GROUPS * SAMPLES
    prompts = [[rng.randrange(vocab) for _ in range(rng.randint(2, 10))] for _ in range(n)]
    responses = [[rng.randrange(vocab) for _ in range(rng.randint(1, MAX_RESPONSE_LEN))] for _ in range(n)]
    rewards = torch.tensor([[rng.random() for _ in range(SAMPLES)] for _ in range(GROUPS)])
    advantages = compute_advantages(rewards).reshape(n)  # (N,)

    share = slice(rank * n // world_size, (rank + 1) * n // world_size)  # contiguous groups per rank
    results = {"world_size": world_size}
    for agg in AGG_MODES:
        reference_loss, reference_grads = step(policy, prompts, responses, advantages, 10_000, agg, False)
        loss, grads = step(policy, prompts[share], responses[share], advantages[share], 60, agg, True)
        all_reduce(loss)
        for grad in grads:
            all_reduce(grad)  # SUM: each rank's loss is already its share of the global normalizer
        results[agg] = {"one_process": (reference_loss, reference_grads), "two_ranks": (loss, grads)}
    if rank == 0:
        torch.save(results, out_path)
    cleanup()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
