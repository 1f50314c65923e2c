"""The continual next-token-prediction baseline's phase functions (Table 2, "+ Continual NTP training"): a
step of cross-entropy on token windows through the same policy (FSDP2 PolicyLogprobs), packing, gradient
clip and optimizer as the RPT update, and the held-out loss.

Cross-entropy is -log p(x_{t+1} | x_<=t) from `token_logprobs` (rpt/grpo/logprobs.py): chunked over tokens
with a recomputing backward, so (N, T, V) logits never exist. A window of ids w is packed as the sequence
prompt [w_0] + response w_1.. (rpt/grpo/packing.py), so every id after the first is a target. The loss of
each micro-batch is its summed cross-entropy divided by the step's global target count (all micro-batches,
all ranks), so the gradient is that of the token-mean over the whole batch whatever the split into ranks
and micro-batches; FSDP averages gradients over ranks, hence `* world_size`.

Deviations from the paper: none known; the paper does not give the baseline's hyperparameters.
"""
import torch
import torch.distributed as dist

from rpt.dist import all_reduce
from rpt.fsdp import clip_grad_norm
from rpt.grpo.packing import pack_micro_batches


def equal_micro_batches(windows: list[list[int]], micro_batch_tokens: int, row_capacity: int | None) -> list:
    """Pack the windows (prompt = first id, response = the rest), then agree on the largest micro-batch count
    over ranks (every FSDP rank must run the same number of forward passes); missing ones are None."""
    prompts, responses = [w[:1] for w in windows], [w[1:] for w in windows]
    local = pack_micro_batches(prompts, responses, micro_batch_tokens, row_capacity=row_capacity) if windows else []
    count = int(all_reduce(torch.tensor([len(local)]), dist.ReduceOp.MAX).item())
    if windows and len(local) < count:
        local = pack_micro_batches(prompts, responses, micro_batch_tokens, min(count, len(windows)), row_capacity)
    return local + [None] * (count - len(local))


def _summed_logprobs(policy, mb, device, chunk_size: int) -> torch.Tensor:
    """Sum of log p(target) over the micro-batch's target positions (a scalar with grad); a dummy pass
    (0 * a tiny forward) for a rank with nothing left, so every rank joins every collective."""
    if mb is None:
        ids = torch.zeros(1, 2, dtype=torch.long, device=device)
        return policy(ids, torch.arange(2, device=device).view(1, 2), ids).sum() * 0.0
    mb = mb.to(device)
    logp = policy(mb.input_ids, mb.position_ids, mb.targets, chunk_size=chunk_size, loss_mask=mb.loss_mask)  # (R, L)
    return logp[mb.loss_mask].sum()


def ntp_update(policy, optimizer, windows: list[list[int]], *, micro_batch_tokens: int,
               row_capacity: int | None, chunk_size: int, grad_clip: float, device, world_size: int
               ) -> dict[str, float]:
    """One optimizer step of cross-entropy on this rank's windows -> {"loss" (token-mean cross-entropy over
    all ranks, nats), "grad_norm", "tokens" (targets over all ranks), "skipped_updates"}."""
    global_tokens = all_reduce(torch.tensor([float(sum(len(w) - 1 for w in windows))])).item()
    loss_sum = torch.zeros((), dtype=torch.float64)
    for mb in equal_micro_batches(windows, micro_batch_tokens, row_capacity):
        summed = _summed_logprobs(policy, mb, device, chunk_size)
        loss = -summed / max(global_tokens, 1.0)  # this micro-batch's share of the global token-mean
        (loss * world_size).backward()
        loss_sum += loss.detach().cpu().double()
    grad_norm = clip_grad_norm(policy, grad_clip)
    finite = bool(torch.isfinite(grad_norm))
    if finite:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss": all_reduce(loss_sum).item(), "grad_norm": grad_norm.item(), "tokens": global_tokens,
            "skipped_updates": float(not finite)}


@torch.no_grad()
def ntp_eval_loss(policy, windows: list[list[int]], *, micro_batch_tokens: int, row_capacity: int | None,
                  chunk_size: int, device) -> float:
    """Token-mean cross-entropy (nats) of the windows, this rank's share summed over ranks (every rank must
    call it, possibly with no windows)."""
    was_training = policy.training
    policy.eval()
    try:
        total = torch.zeros(2, dtype=torch.float64)  # (summed log-prob, targets)
        for mb in equal_micro_batches(windows, micro_batch_tokens, row_capacity):
            summed = _summed_logprobs(policy, mb, device, chunk_size)
            total += torch.tensor([summed.item(), 0.0 if mb is None else float(mb.loss_mask.sum())],
                                  dtype=torch.float64)
    finally:
        policy.train(was_training)
    total = all_reduce(total)
    return -total[0].item() / max(total[1].item(), 1.0)
