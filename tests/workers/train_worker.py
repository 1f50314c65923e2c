"""Run by tests/test_train.py under torchrun: `train(cfg)` with a NaN planted in the loss of ONE rank, at its
n-th call of policy_loss, to check that the skip decision is taken by every rank (a NaN on one rank poisons
the all-reduced gradient norm everywhere). Rank 0 writes the step history as json.

    torchrun --nproc_per_node=2 tests/workers/train_worker.py OUT_JSON POISON_RANK POISON_CALL -- TRAIN_ARGS...
"""
import json
import sys

import torch.distributed as dist

import rpt.update as update
from rpt.config import load_config
from rpt.dist import cleanup
from rpt.train import train

out_path, poison_rank, poison_call = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
train_args = sys.argv[sys.argv.index("--") + 1:]
real_policy_loss = update.policy_loss
calls = {"n": 0}


def poisoned(*args, **kwargs):
    loss, metrics = real_policy_loss(*args, **kwargs)
    calls["n"] += 1
    if dist.get_rank() == poison_rank and calls["n"] == poison_call:
        return loss * float("nan"), metrics
    return loss, metrics


update.policy_loss = poisoned
history = train(load_config(train_args[1], train_args[2:]))  # train_args: --config FILE overrides...
if dist.get_rank() == 0:
    with open(out_path, "w") as f:
        json.dump(history, f)
cleanup()
