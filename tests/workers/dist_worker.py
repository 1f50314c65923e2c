"""Run under torchrun by tests/test_dist.py: checks rank/world/device, the process-group timeout, all_reduce (sum and max,
back on the CPU) and per-rank seeds."""
import json
import sys

import torch

from rpt.dist import all_reduce, cleanup, get_rank, init_distributed, print0, seed_everything

rank, world_size, device = init_distributed(timeout_minutes=7.5)
# the timeout the default group's backend really runs with (gloo here, nccl on GPUs: both keep it in options)
group_timeout = torch.distributed.distributed_c10d._get_default_group()._get_backend(device).options._timeout
assert get_rank() == rank
seed_everything(123, rank)
draw = torch.rand(1).item()
total = all_reduce(torch.tensor([float(rank), 1.0]))
largest = all_reduce(torch.tensor([float(rank)]), torch.distributed.ReduceOp.MAX)
gathered = [None] * world_size
torch.distributed.all_gather_object(gathered, draw)
print0(json.dumps({"world_size": world_size, "device": str(device), "sum": total.tolist(),
                   "max": largest.tolist(), "reduced_on": str(total.device), "draws": gathered,
                   "timeout_s": group_timeout.total_seconds()}))
cleanup()
sys.exit(0)
