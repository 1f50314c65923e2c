"""Run under torchrun by tests/test_train.py: `grpo.on_round_cap: error` hit on rank 1 only. Rank 1's rewards
are made all-equal (every group dropped by dynamic sampling), rank 0's keep their spread (dense reward), so
the pooled batch ends its single round short with only rank 1's groups missing. Each rank writes the error
it raised to OUT/rank{r}.txt, and the timeout of the process group that train() created from
train.dist_timeout_minutes to OUT/timeout{r}.txt.

    torchrun --nproc_per_node=2 tests/workers/round_cap_worker.py OUT --config ... --section.key=value ...
"""
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import rpt.train as train_module
from rpt.config import load_config

out_dir, config_path, overrides = Path(sys.argv[1]), sys.argv[3], sys.argv[4:]
cfg = load_config(config_path, overrides)
rank = int(os.environ["RANK"])  # the process group is train()'s own
real_score_groups = train_module.score_groups


def all_equal_on_rank1(groups, *args, **kwargs):
    rewards = real_score_groups(groups, *args, **kwargs)  # (B, G)
    return torch.zeros_like(rewards) if rank == 1 else rewards


train_module.score_groups = all_equal_on_rank1
try:
    train_module.train(cfg)
except Exception as error:
    (out_dir / f"rank{rank}.txt").write_text(f"{type(error).__name__}: {error}")
    group = dist.distributed_c10d._get_default_group()._get_backend(torch.device("cpu"))
    (out_dir / f"timeout{rank}.txt").write_text(str(group.options._timeout.total_seconds()))
    raise
