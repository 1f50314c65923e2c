"""Run under torchrun by tests/test_dist.py: checks rank/world/device, all_reduce_mean and per-rank seeds."""
import json
import sys

import torch

from rpt.dist import all_reduce_mean, cleanup, get_rank, init_distributed, print0, seed_everything

rank, world_size, device = init_distributed()
assert get_rank() == rank
seed_everything(123, rank)
draw = torch.rand(1).item()
mean = all_reduce_mean({"rank": rank, "one": 1.0})
gathered = [None] * world_size
torch.distributed.all_gather_object(gathered, draw)
print0(json.dumps({"world_size": world_size, "device": str(device), "mean_rank": mean["rank"],
                   "one": mean["one"], "draws": gathered}))
cleanup()
sys.exit(0)
