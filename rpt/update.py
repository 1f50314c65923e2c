"""The update phase: log-probs of the rollout's response tokens under the (sharded) policy, the GRPO loss, one
or more AdamW steps. Pure math comes from rpt.grpo; this module adds the distributed bookkeeping: every rank
runs the same number of forward/backward passes, and every loss is normalized by step-global counts so the
result does not depend on how the batch is split over micro-batches and ranks.

Functions take what they use (an `UpdateSettings`, tensors, token lists), never the whole Config, so tests
call the real `update_policy` on one process or under FSDP2 on two ranks.

Deviations from the paper: a step whose gradient norm is not finite is skipped on every rank (the paper says
nothing); `train.grad_clip` is the gradient-norm clip (see rpt/config.py).
"""
from dataclasses import dataclass

import torch
import torch.distributed as dist

from rpt.dist import all_reduce, reduce_metrics
from rpt.fsdp import clip_grad_norm
from rpt.grpo.loss import policy_loss
from rpt.grpo.packing import MicroBatch, bucket_micro_batches, pack_micro_batches


@dataclass(frozen=True)
class UpdateSettings:
    """Everything the update phase reads (the loop fills it from train.*, grpo.*, rollout.temperature)."""
    temperature: float = 0.8  # the rollout's: ratios and gradients use the distribution that was sampled
    clip_low: float = 0.2
    clip_high: float = 0.2
    loss_agg: str = "token-mean"
    max_response_len: int = 8192  # the constant of seq-mean-token-sum-norm
    kl_coef: float = 0.0  # > 0: k3 KL to the reference log-probs passed to update_policy
    entropy_coef: float = 0.0
    log_entropy: bool = False
    tis_cap: float = 0.0  # > 0: truncated importance sampling against the engine's log-probs
    logprob_chunk_size: int = 1024
    micro_batch_tokens: int = 16384
    packed_rows: bool = False  # one packed row per micro-batch (flash_attention_2); else one row per sequence
    num_minibatches: int = 1  # optimizer updates per step (1: exact on-policy, the paper)
    grad_clip: float = 0.2


def equal_micro_batches(prompts: list[list[int]], responses: list[list[int]], micro_batch_tokens: int,
                        packed_rows: bool) -> list[MicroBatch | None]:
    """Pack, then agree on the largest micro-batch count over ranks: under FSDP every rank must run the
    same number of forward/backward passes. A rank with fewer micro-batches than that count pads with None
    (a dummy pass whose loss is multiplied by zero).

    flash_attention_2 takes one packed row per micro-batch; sdpa/eager build an L x L mask for a packed
    row, so they get one sequence per row, bucketed by length (rpt/grpo/packing.py)."""
    layout = pack_micro_batches if packed_rows else bucket_micro_batches
    local = layout(prompts, responses, micro_batch_tokens) if prompts else []
    count = int(all_reduce(torch.tensor([len(local)]), dist.ReduceOp.MAX).item())
    if len(local) < count:
        local = layout(prompts, responses, micro_batch_tokens, min(count, len(prompts))) if prompts else []
    return local + [None] * (count - len(local))


def dummy_forward(policy, device) -> torch.Tensor:
    ids = torch.zeros(1, 2, dtype=torch.long, device=device)
    return policy(ids, torch.arange(2, device=device).view(1, 2), ids)  # (1, 2)


@torch.no_grad()
def sequence_logprobs(policy, prompts: list[list[int]], responses: list[list[int]], device, temperature: float,
                      micro_batch_tokens: int, packed_rows: bool = False,
                      chunk_size: int = 1024) -> list[torch.Tensor]:
    """Log-probs of each response's tokens given its prompt (no gradient): a list of (len(response),) CPU
    tensors. Every rank must call it (FSDP gathers inside)."""
    out = [None] * len(prompts)
    for mb in equal_micro_batches(prompts, responses, micro_batch_tokens, packed_rows):
        if mb is None:
            dummy_forward(policy, device)
            continue
        mb = mb.to(device)
        logp = policy(mb.input_ids, mb.position_ids, mb.targets, temperature=temperature, chunk_size=chunk_size,
                      loss_mask=mb.loss_mask)  # (R, L)
        per_token = logp[mb.loss_mask].float().cpu()
        offsets = [len(responses[i]) for i in mb.sequence_indices]
        for i, values in zip(mb.sequence_indices, per_token.split(offsets)):
            out[i] = values
    return out


def update_policy(policy, optimizer, prompts: list[list[int]], responses: list[list[int]], adv: torch.Tensor,
                  settings: UpdateSettings, device, world_size: int,
                  behavior_logps: list[torch.Tensor] | None = None,
                  ref_logps: list[torch.Tensor] | None = None) -> dict[str, float]:
    """Policy-gradient update(s) on this rank's N sequences; returns step metrics reduced over ranks.

    prompts, responses: N token lists each (the G completions of a context contiguous, as the loop builds them).
    adv: (N,) advantages, one per sequence. behavior_logps: N (len(response),) tensors, the engine's log-probs
    of the sampled tokens (mismatch diagnostics, TIS). ref_logps: same, under the frozen reference policy
    (KL, settings.kl_coef > 0).

    The loss of each micro-batch is normalized by step-global token/sequence counts, so micro-batch losses
    summed over all micro-batches and ranks are the full-batch loss, whatever the split; FSDP averages
    gradients over ranks, hence the `* world_size`. Metrics are accumulated on the device and read once at
    the end (no host sync inside the micro-batch loop)."""
    seq_adv = adv.reshape(-1).float()  # (N,)
    behavior_logps = behavior_logps or [torch.zeros(len(r)) for r in responses]
    num_minibatches = settings.num_minibatches
    # contiguous blocks of sequences (whole groups when N is a multiple of num_minibatches * G): with the
    # loop's interleaved shares of the pooled batch, the ranks' i-th blocks together are one process's i-th
    minibatches = [ids.tolist() for ids in torch.arange(len(prompts)).tensor_split(num_minibatches)]
    # exact on-policy (one update per step, the paper): old log-probs are the detached current ones; with
    # several updates per step they are fixed before the first update, each mini-batch packed as its update
    # will pack it, so the first update's ratios are exactly 1
    old = [sequence_logprobs(policy, [prompts[i] for i in seq_ids], [responses[i] for i in seq_ids], device,
                             settings.temperature, settings.micro_batch_tokens, settings.packed_rows,
                             settings.logprob_chunk_size) for seq_ids in minibatches] if num_minibatches > 1 else None
    sums = {k: torch.zeros((), dtype=torch.float64, device=device) for k in
            ("loss", "pg_loss", "clip_frac", "approx_kl_old", "ratio_mean", "mismatch_mean")}
    sums["update_sequences"] = float(len(prompts))  # summed over ranks: each sequence trained once per step
    if settings.log_entropy or settings.entropy_coef > 0:
        sums["entropy"] = torch.zeros((), dtype=torch.float64, device=device)
    if settings.tis_cap > 0:
        sums["tis_weight"] = torch.zeros((), dtype=torch.float64, device=device)
    if ref_logps is not None:
        sums["kl_ref"] = torch.zeros((), dtype=torch.float64, device=device)
    mismatch_max = torch.zeros((), device=device)
    grad_norms, finite = [], []
    want_entropy = "entropy" in sums
    for minibatch_index, seq_ids in enumerate(minibatches):
        mb_prompts, mb_responses = [prompts[i] for i in seq_ids], [responses[i] for i in seq_ids]
        mb_adv = seq_adv[seq_ids].to(device)  # (n,) indexed like mb_prompts, as MicroBatch.sequence_indices is
        mb_behavior = [behavior_logps[i].to(device) for i in seq_ids]
        mb_old = [values.to(device) for values in old[minibatch_index]] if old else None
        mb_ref = [ref_logps[i].to(device) for i in seq_ids] if ref_logps is not None else None
        counts = all_reduce(torch.tensor([float(sum(map(len, mb_responses))), float(len(seq_ids))]))
        global_tokens, global_seqs = counts[0].item(), counts[1].item()
        for mb in equal_micro_batches(mb_prompts, mb_responses, settings.micro_batch_tokens, settings.packed_rows):
            if mb is None:
                (dummy_forward(policy, device).sum() * 0.0).backward()
                continue
            mb = mb.to(device)
            out = policy(mb.input_ids, mb.position_ids, mb.targets, temperature=settings.temperature,
                         chunk_size=settings.logprob_chunk_size, return_entropy=want_entropy,
                         loss_mask=mb.loss_mask)  # the lm_head runs on response positions only
            logp, entropy = out if want_entropy else (out, None)  # (R, L)
            behavior_logp = mb.place_response_values(mb_behavior)  # (R, L)
            old_logp = mb.place_response_values(mb_old) if mb_old else logp.detach()  # (R, L)
            loss, metrics = policy_loss(
                logp, old_logp, mb.expand_sequence_values(mb_adv), mb.loss_mask, settings.clip_low,
                settings.clip_high, settings.loss_agg, global_tokens=global_tokens, global_seqs=global_seqs,
                response_lengths=mb.response_lengths, max_response_len=settings.max_response_len,
                ref_logp=mb.place_response_values(mb_ref) if mb_ref else None, kl_coef=settings.kl_coef,
                entropy=entropy, entropy_coef=settings.entropy_coef,
                behavior_logp=behavior_logp if settings.tis_cap > 0 else None, tis_cap=settings.tis_cap)
            (loss * world_size).backward()
            gap = torch.where(mb.loss_mask, (logp.detach() - behavior_logp).abs(), 0.0)  # (R, L)
            mismatch_max = torch.maximum(mismatch_max, gap.max())
            sums["mismatch_mean"] += gap.sum() / max(global_tokens, 1) / num_minibatches
            sums["loss"] += loss.detach() / num_minibatches
            for key in sums.keys() & metrics.keys():
                sums[key] += metrics[key] / num_minibatches
        grad_norm = clip_grad_norm(policy, settings.grad_clip)  # the same global norm on every rank
        is_finite = torch.isfinite(grad_norm)
        if is_finite:  # the one host sync of an update: whether to step
            optimizer.step()
        # else a NaN/inf anywhere poisoned the norm: skip this update everywhere, keep the run alive
        optimizer.zero_grad(set_to_none=True)
        grad_norms.append(grad_norm)
        finite.append(is_finite)
    metrics = reduce_metrics(sums)
    metrics["mismatch_max"] = reduce_metrics({"m": mismatch_max}, dist.ReduceOp.MAX)["m"]
    metrics["grad_norm"] = torch.stack(grad_norms).mean().item()
    metrics["skipped_updates"] = int((~torch.stack(finite)).sum().item())
    return metrics
