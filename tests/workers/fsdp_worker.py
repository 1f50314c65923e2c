"""Run under torchrun by tests/test_fsdp.py. Shards stories260K over the ranks (rank 0 loads, the others
receive by broadcast), takes two AdamW steps on fixed tokens, then checks and writes:
- the sharded policy's log-probs and the full weights streamed by iter_full_weights (in bf16, cast shard by
  shard before the gather: exactly the fp32 gather cast to bf16),
- an HF export, and a DCP checkpoint (then loaded into a fresh sharded model: identical log-probs)."""
import sys
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor

from rpt.checkpoint import load_checkpoint, save_checkpoint
from rpt.dist import cleanup, init_distributed
from rpt.fsdp import build_policy, export_hf, iter_full_weights
from rpt.model import load_tokenizer

model_dir, out = sys.argv[1], Path(sys.argv[2])
rank, world_size, device = init_distributed()
torch.manual_seed(0)
ids = torch.randint(3, 512, (2, 24))  # same on every rank
targets = torch.roll(ids, -1, dims=1)
positions = torch.arange(24).repeat(2, 1)


def make():
    policy = build_policy(model_dir)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    return policy, optimizer, scheduler


policy, optimizer, scheduler = make()
for _ in range(2):
    loss = -policy(ids, positions, targets).mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    scheduler.step()
with torch.no_grad():
    logp = policy(ids, positions, targets)  # (2, 24)
full = {name: tensor.clone() for name, tensor in iter_full_weights(policy)}
gathered_dtypes = []  # what each all-gather moves: the shard's dtype when full_tensor() is called
full_tensor = DTensor.full_tensor
DTensor.full_tensor = lambda self, **kwargs: gathered_dtypes.append(self.to_local().dtype) or full_tensor(self, **kwargs)
full_bf16 = {name: tensor.clone() for name, tensor in iter_full_weights(policy, torch.bfloat16)}
DTensor.full_tensor = full_tensor
sharded = sum(isinstance(p, DTensor) for p in policy.model.parameters())
assert (world_size == 1 or sharded > 0) and gathered_dtypes == [torch.bfloat16] * sharded, (sharded, gathered_dtypes)
assert full_bf16.keys() == full.keys()
for name, tensor in full_bf16.items():
    assert tensor.dtype == torch.bfloat16 and torch.equal(tensor, full[name].to(torch.bfloat16)), name
export_hf(policy, load_tokenizer(model_dir), out / "hf")
save_checkpoint(out / "checkpoints", policy, optimizer, scheduler, step=2, extra={"rank": rank})
fresh, fresh_optimizer, fresh_scheduler = make()
step, extra = load_checkpoint(out / "checkpoints" / "step_00000002", fresh, fresh_optimizer, fresh_scheduler)
with torch.no_grad():
    logp_restored = fresh(ids, positions, targets)
assert step == 2 and extra == {"rank": rank}, (step, extra)
assert torch.equal(logp, logp_restored), (logp - logp_restored).abs().max()
if rank == 0:
    torch.save({"logp": logp, "full": full, "full_bf16": full_bf16, "world_size": world_size}, out / "result.pt")
cleanup()
