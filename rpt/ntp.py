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

from rpt.dist import all_reduce
from rpt.fsdp import clip_grad_norm
from rpt.update import dummy_forward, equal_micro_batches


def window_micro_batches(windows: list[list[int]], micro_batch_tokens: int, packed_rows: bool) -> list:
    """The windows as sequences prompt [w_0] + response w_1.., packed into as many micro-batches as the
    busiest rank needs (rpt.update.equal_micro_batches; None where this rank has none left)."""
    return equal_micro_batches([w[:1] for w in windows], [w[1:] for w in windows], micro_batch_tokens, packed_rows)


def _summed_logprobs(policy, mb, device, chunk_size: int) -> torch.Tensor:
    """Sum of log p(target) over the micro-batch's target positions (a scalar with grad); for a rank with
    nothing left, 0 x a dummy forward, so every rank joins every collective."""
    if mb is None:
        return dummy_forward(policy, device).sum() * 0.0
    mb = mb.to(device)
    logp = policy(mb.input_ids, mb.position_ids, mb.targets, chunk_size=chunk_size, loss_mask=mb.loss_mask)  # (R, L)
    return logp[mb.loss_mask].sum()


def ntp_update(policy, optimizer, windows: list[list[int]], *, micro_batch_tokens: int, packed_rows: bool,
               chunk_size: int, grad_clip: float, device, world_size: int) -> dict[str, float]:
    """One optimizer step of cross-entropy on this rank's windows -> {"loss" (token-mean cross-entropy over
    all ranks, nats), "grad_norm", "tokens" (targets over all ranks), "skipped_updates"}."""
    global_tokens = all_reduce(torch.tensor([float(sum(len(w) - 1 for w in windows))])).item()
    loss_sum = torch.zeros((), dtype=torch.float64)
    for mb in window_micro_batches(windows, micro_batch_tokens, packed_rows):
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
def ntp_eval_loss(policy, windows: list[list[int]], *, micro_batch_tokens: int, packed_rows: bool,
                  chunk_size: int, device) -> float:
    """Token-mean cross-entropy (nats) of the windows, this rank's share summed over ranks (every rank must
    call it, possibly with no windows)."""
    was_training = policy.training
    policy.eval()
    try:
        total = torch.zeros(2, dtype=torch.float64)  # (summed log-prob, targets)
        for mb in window_micro_batches(windows, micro_batch_tokens, packed_rows):
            summed = _summed_logprobs(policy, mb, device, chunk_size)
            total += torch.tensor([summed.item(), 0.0 if mb is None else float(mb.loss_mask.sum())],
                                  dtype=torch.float64)
    finally:
        policy.train(was_training)
    total = all_reduce(total)
    return -total[0].item() / max(total[1].item(), 1.0)
