"""Run by tests/test_update.py twice: as a plain process (no RANK: one process over the whole batch) and under
`torchrun --nproc_per_node=2` (FSDP2 via rpt.fsdp.build_policy, each rank half the sequences). Both call the
real `rpt.update.update_policy` with plain SGD(lr=1) and no clipping, so the parameter change is minus the
gradient of the step loss; rank 0 saves, per aggregation mode, the full-parameter deltas and the metrics.

    [torchrun --nproc_per_node=2] tests/workers/update_worker.py MODEL_DIR OUT_PT
"""
import random
import sys

import torch
from torch.distributed.tensor import DTensor

from rpt.dist import cleanup, init_distributed
from rpt.fsdp import build_policy
from rpt.grpo import AGG_MODES, compute_advantages
from rpt.update import UpdateSettings, update_policy

GROUPS, SAMPLES = 4, 4  # B contexts, G samples: N = 16 sequences
MAX_RESPONSE_LEN = 12


def full_parameters(policy) -> dict[str, torch.Tensor]:
    return {name: (p.full_tensor() if isinstance(p, DTensor) else p).detach().clone()
            for name, p in policy.model.named_parameters()}


def main(model_dir: str, out_path: str) -> None:
    rank, world_size, device = init_distributed()
    rng = random.Random(0)  # the same batch on every rank and in both runs
    policy = build_policy(model_dir, device=device)
    vocab = policy.model.config.vocab_size
    n = GROUPS * SAMPLES
    prompts = [[rng.randrange(vocab) for _ in range(rng.randint(2, 10))] for _ in range(n)]
    responses = [[rng.randrange(vocab) for _ in range(rng.randint(1, MAX_RESPONSE_LEN))] for _ in range(n)]
    rewards = torch.tensor([[rng.random() for _ in range(SAMPLES)] for _ in range(GROUPS)])
    advantages = compute_advantages(rewards).reshape(n)  # (N,)
    share = slice(rank * n // world_size, (rank + 1) * n // world_size)  # contiguous groups per rank
    results = {"world_size": world_size}
    for agg in AGG_MODES:
        policy = build_policy(model_dir, device=device)
        before = full_parameters(policy)
        optimizer = torch.optim.SGD(policy.parameters(), lr=1.0)
        # micro-batches of ~60 tokens: several per rank, and a different split than one process's
        settings = UpdateSettings(temperature=0.8, clip_low=0.2, clip_high=0.28, loss_agg=agg,
                                  max_response_len=MAX_RESPONSE_LEN, logprob_chunk_size=32, micro_batch_tokens=60,
                                  grad_clip=1e9)
        metrics = update_policy(policy, optimizer, prompts[share], responses[share], advantages[share], settings,
                                device, world_size)
        after = full_parameters(policy)
        results[agg] = {"metrics": metrics, "deltas": {k: after[k] - before[k] for k in before}}
    if rank == 0:
        torch.save(results, out_path)
    cleanup()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
