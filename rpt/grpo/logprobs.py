"""Log-probs of target tokens from hidden states and the lm_head, chunk by chunk (rpt.policy.PolicyLogprobs
runs the decoder and calls `token_logprobs`).

The policy's log-prob of each response token is log_softmax(h_t W^T / temperature)[x_{t+1}]. Computing the
logits of a whole batch at once costs (N, T, V) floats: at V = 152,064 and T = 4,096 that is 2.5 GB in fp32
per sequence, times ~3 with the softmax and its gradient (7.4 GB measured). Here the flattened tokens are
processed in chunks of `chunk_size` rows, and the backward recomputes each chunk's logits (activation
checkpointing per chunk) instead of keeping them: peak memory O(chunk_size x V), plus in the backward one
fp32 (V, H) buffer accumulating the lm_head gradient over the chunks when the weight is bf16/fp16 (1.5 GB more
than a bf16 gradient at V = 152,064, H = 5,120; the alternative, a bf16 running sum, loses precision with
every chunk).

The checkpointing is written out as one autograd.Function rather than torch.utils.checkpoint around autograd
ops: the backward of log_softmax + gather + entropy is a closed form on the (C, V) block, computed in place,
so a chunk needs one (C, V) fp32 buffer (two with the entropy), reused by every chunk of a pass, where
torch.utils.checkpoint around autograd ops needs ~5 (measured: at T = 512 a checkpointed 512-row chunk peaked at 1.86x the naive computation).

Gradients, per row with z = logits / temperature, p = softmax(z), target y, upstream g (log-prob) and e
(entropy):  d logp_y / dz = onehot(y) - p,  d H / dz = -p * (z - E_p[z]),  then d/dlogits = (.) / temperature.

Temperature: the rollout engine samples from softmax(logits / temperature) (0.8 in the paper), so the
importance ratio and the policy gradient must use the same tempered distribution (verl does the same).

Deviations from the paper: none (the paper does not describe how log-probs are computed).
"""
import torch


def _chunk_logits(hidden: torch.Tensor, lm_head_weight: torch.Tensor, temperature: float,
                  workspace: torch.Tensor) -> torch.Tensor:
    """hidden (C, H), lm_head_weight (V, H) -> tempered logits (C, V) in fp32 (fp64 for fp64 inputs), written
    into the first C rows of `workspace` (>= C, V), which every chunk of a pass reuses: a fresh (C, V) block
    per chunk costs page faults on CPU (0.37 s for a 1,024 x 151,646 fp32 block, 10x filling it; CUDA's
    caching allocator reuses blocks anyway, so both devices run this one path)."""
    logits = workspace[: hidden.shape[0]]  # (C, V)
    if hidden.dtype == lm_head_weight.dtype == logits.dtype:
        torch.matmul(hidden, lm_head_weight.T, out=logits)
    else:  # matmul in the weights' dtype (bf16 at scale), softmax in fp32: only (C, V) fp32 blocks persist
        logits.copy_(hidden @ lm_head_weight.T)
    return logits.div_(temperature)


class _ChunkedTokenLogprobs(torch.autograd.Function):
    """flat hidden (M, H), weight (V, H), flat targets (M,) -> log-probs (M,), entropy (M,) (zeros unless asked)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, chunk_size, with_entropy):
        compute_dtype = torch.promote_types(hidden.dtype, torch.float32)
        rows = hidden.shape[0]
        logp = torch.empty(rows, dtype=compute_dtype, device=hidden.device)  # (M,)
        entropy = torch.zeros(rows, dtype=compute_dtype, device=hidden.device)  # (M,)
        log_normalizer = torch.empty(rows, dtype=compute_dtype, device=hidden.device)  # (M,)
        workspace = hidden.new_empty(min(chunk_size, rows), weight.shape[0], dtype=compute_dtype)  # (C, V)
        exp_workspace = torch.empty_like(workspace) if with_entropy else None  # (C, V)
        for start in range(0, rows, chunk_size):
            chunk = slice(start, start + chunk_size)
            logits = _chunk_logits(hidden[chunk], weight, temperature, workspace)  # (C, V)
            target_logit = logits.gather(-1, targets[chunk, None]).squeeze(-1)  # (C,)
            row_max = logits.amax(dim=-1, keepdim=True)  # (C, 1)
            shifted = logits.sub_(row_max)  # (C, V) z - max, in place
            if with_entropy:
                exp_shifted = torch.exp(shifted, out=exp_workspace[: shifted.shape[0]])  # (C, V)
                sum_exp = exp_shifted.sum(dim=-1)  # (C,)
                # E_p[z - max], in place (a sum, not a batched dot: its fp32 accumulation over V drifts ~1e-5)
                expected_shifted = exp_shifted.mul_(shifted).sum(dim=-1) / sum_exp  # (C,)
                log_normalizer[chunk] = sum_exp.log() + row_max.squeeze(-1)
                entropy[chunk] = sum_exp.log() - expected_shifted  # H = log Z - E_p[z], both shifted by max
            else:
                # log Z = max + log sum exp(z - max), in place: one (C, V) block in all
                log_normalizer[chunk] = shifted.exp_().sum(dim=-1).log_() + row_max.squeeze(-1)
            logp[chunk] = target_logit - log_normalizer[chunk]
        del workspace, exp_workspace  # the pass's blocks go before the backward allocates its own
        ctx.save_for_backward(hidden, weight, targets, log_normalizer)
        ctx.temperature, ctx.chunk_size, ctx.with_entropy = temperature, chunk_size, with_entropy
        ctx.mark_non_differentiable(log_normalizer)
        # An output the loss does not use gets None, not zeros: entropy logged as a metric (detached) then costs
        # no backward work, and the backward needs one (C, V) block instead of two.
        ctx.set_materialize_grads(False)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):
        hidden, weight, targets, log_normalizer = ctx.saved_tensors
        if grad_logp is None:
            grad_logp = torch.zeros_like(log_normalizer)  # (M,)
        grad_hidden = torch.zeros_like(hidden) if ctx.needs_input_grad[0] else None  # (M, H)
        # The lm_head gradient sums over all chunks: accumulated in fp32 (fp64 for fp64) whatever the weight's
        # dtype, since bf16 running sums lose precision with every chunk added (grad_W relative error vs fp64
        # measured at chunk 256: 5.4e-3 in bf16, vs 2.3e-3 for one bf16 matmul; tests/grpo/test_logprobs.py).
        accumulate_dtype = torch.promote_types(weight.dtype, torch.float32)
        grad_weight = torch.zeros_like(weight, dtype=accumulate_dtype) if ctx.needs_input_grad[1] else None  # (V, H)
        # The one place CUDA and CPU differ: CUDA's bf16/fp16 GEMM can write fp32 straight into the buffer
        # (addmm out_dtype, tensor cores, no (V, H) temporary); CPU has no such kernel and no bf16 units, so it
        # multiplies the fp32 block by the upcast hidden chunk, its fast path anyway.
        gemm_writes_fp32 = weight.is_cuda and weight.dtype in (torch.bfloat16, torch.float16)
        workspace = hidden.new_empty(min(ctx.chunk_size, hidden.shape[0]), weight.shape[0],
                                     dtype=log_normalizer.dtype)  # (C, V)
        probs_workspace = torch.empty_like(workspace) if grad_entropy is not None else None  # (C, V)
        for start in range(0, hidden.shape[0], ctx.chunk_size):
            chunk = slice(start, start + ctx.chunk_size)
            logits = _chunk_logits(hidden[chunk], weight, ctx.temperature, workspace)  # (C, V) recomputed: the checkpoint
            if grad_entropy is not None:
                probs = torch.sub(logits, log_normalizer[chunk, None],
                                  out=probs_workspace[: logits.shape[0]]).exp_()  # (C, V)
                expected_logit = (probs.unsqueeze(1) @ logits.unsqueeze(2)).squeeze(2)  # (C, 1) E_p[z], no (C, V) temp
                # -p * (g + e * (z - E_p[z])), built in place in the logits buffer
                grad_logits = logits.sub_(expected_logit).mul_(grad_entropy[chunk, None])
                grad_logits.add_(grad_logp[chunk, None]).mul_(probs).neg_()  # (C, V)
            else:
                # -g * p, built in place in the logits buffer: one (C, V) block in all
                grad_logits = logits.sub_(log_normalizer[chunk, None]).exp_().mul_(-grad_logp[chunk, None])
            grad_logits.scatter_add_(-1, targets[chunk, None], grad_logp[chunk, None])  # + g * onehot(y)
            grad_logits = grad_logits.div_(ctx.temperature)  # (C, V) d/d(h W^T), fp32
            if grad_weight is not None and not gemm_writes_fp32:
                grad_weight.addmm_(grad_logits.T, hidden[chunk].to(grad_weight.dtype))  # (V, H) fp32 GEMM
            grad_logits = grad_logits.to(weight.dtype)  # (C, V): the workspace itself when the weight is fp32
            if grad_hidden is not None:
                grad_hidden[chunk] = grad_logits @ weight
            if grad_weight is not None and gemm_writes_fp32:
                torch.addmm(grad_weight, grad_logits.T, hidden[chunk], out_dtype=grad_weight.dtype, out=grad_weight)
            del grad_logits  # a bf16 copy: free it before the next chunk makes its own
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)  # one rounding at the end, not one per chunk
        return grad_hidden, grad_weight, None, None, None, None


def token_logprobs(
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    return_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of `targets` under softmax(hidden @ lm_head_weight.T / temperature), chunked.

    hidden: (N, T, H) final hidden states (after the last norm), any float dtype.
    lm_head_weight: (V, H) output embedding.
    targets: (N, T) long, the token each position predicts (the next token); every entry must be a valid id
        (put any id, e.g. 0, where there is nothing to predict and mask it out in the loss).
    temperature: sampling temperature of the rollout; logits are divided by it.
    chunk_size: rows of the flattened (N * T) token dimension per chunk; memory O(chunk_size * V).
    Returns log-probs (N, T) float32 (float64 for float64 inputs), and with return_entropy=True also the
    entropy (N, T) of each position's tempered distribution. Both are differentiable w.r.t. hidden and
    lm_head_weight; the backward recomputes each chunk's logits.
    """
    batch, length, width = hidden.shape
    logp, entropy = _ChunkedTokenLogprobs.apply(
        hidden.reshape(batch * length, width), lm_head_weight, targets.reshape(batch * length), temperature,
        chunk_size, return_entropy)
    if not return_entropy:
        return logp.reshape(batch, length)  # (N, T)
    return logp.reshape(batch, length), entropy.reshape(batch, length)  # (N, T), (N, T)
