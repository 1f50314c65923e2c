"""The GRPO policy loss: PPO clipped surrogate, loss aggregation modes, optional KL (k3) and entropy terms.

Per token t of response i (Section 3.3 and Table 5 of the paper; PPO/GRPO with DAPO's asymmetric "clip-higher"):

    ratio = exp(logp - old_logp)
    pg    = max(-A_i * ratio, -A_i * clip(ratio, 1 - clip_low, 1 + clip_high))
    loss  = pg + kl_coef * k3(ref || current) - entropy_coef * entropy

and the per-token losses are aggregated into one number by `agg`. Every mode is a weighted SUM over this
call's tokens whose normalizer is passed in (`global_tokens`, `global_seqs`): with the normalizer counted over
the whole step (all micro-batches on all ranks), the losses of the micro-batches and ranks add up to exactly
the full-batch loss, so the gradient does not depend on how the batch was split.

Data-parallel contract (be explicit, it is easy to get wrong): call policy_loss once per micro-batch with the
step's global counts, call backward on each micro-batch loss (gradients accumulate = sum), and make the
cross-rank gradient reduction a SUM. FSDP2 and DDP AVERAGE gradients over ranks by default, so under them
multiply each micro-batch loss by world_size before backward (or set the reduction to sum).

Modes (names as in verl's core_algos.agg_loss):
- "token-mean" (default): sum over tokens / global_tokens. Every token weighs the same.
- "seq-mean-token-mean": mean over a sequence's tokens, then mean over sequences (GRPO paper's 1/|o_i|).
- "seq-mean-token-sum": sum over a sequence's tokens, then mean over sequences.
- "seq-mean-token-sum-norm": sum over tokens / (global_seqs * max_response_len), the constant normalizer of
  Dr. GRPO (Liu et al. 2025): no length bias. Equals token-mean when every response has max length.

Deviations from the paper: none in the defaults (the paper's run is exact on-policy with kl_coef = 0 and
entropy_coef = 0, so ratio = 1 and loss = -token-mean(A)). Additions the paper does not use: clip-higher,
the aggregation modes other than token-mean (the paper, built on verl, does not name its mode; verl's default
is token-mean), and truncated importance sampling (TIS) against the rollout engine's own log-probs:
weight = min(exp(old_logp - behavior_logp), tis_cap), detached, multiplying the pg term, to correct for the
mismatch between the engine's and the trainer's numerics. As in verl, the log-ratio is clamped to [-20, 20]
so an absurd ratio cannot overflow to inf (and NaN gradients); this never binds in normal training.
"""
import torch

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
_MAX_LOG_RATIO = 20.0


def aggregation_weights(
    mask: torch.Tensor,
    agg: str = "token-mean",
    global_tokens: torch.Tensor | float | None = None,
    global_seqs: torch.Tensor | float | None = None,
    response_lengths: torch.Tensor | None = None,
    max_response_len: int | None = None,
) -> torch.Tensor:
    """Per-token weights w such that the aggregated loss is sum(w * token_loss); w is 0 off the mask.

    mask: (N, T) or packed (1, total_T) bool/0-1, True where the token is a response token in the loss.
    global_tokens: number of loss tokens in the whole step (all micro-batches, all ranks);
        None = this call's mask.sum() (only right when this call is the whole batch).
    global_seqs: number of sequences with at least one loss token in the whole step; None = this call's count.
    response_lengths: same shape as mask, the number of loss tokens of the sequence each token belongs to.
        None = mask.sum(-1), i.e. each row is one sequence (the (N, T) layout). In the packed layout, where a
        row holds several sequences, it MUST be given (rpt.grpo.packing.MicroBatch.response_lengths).
    max_response_len: the constant of "seq-mean-token-sum-norm" (the rollout's max response length).
    Returns (same shape as mask) float32 weights.
    """
    if agg not in AGG_MODES:
        raise ValueError(f"unknown loss aggregation {agg!r}; choose one of {AGG_MODES}")
    mask = mask.float()  # (N, T)
    if agg == "token-mean":
        tokens = mask.sum() if global_tokens is None else global_tokens
        return mask / tokens  # (N, T)
    if response_lengths is None:
        response_lengths = mask.sum(dim=-1, keepdim=True).expand_as(mask)  # (N, T)
    # Every loss token of a sequence carries 1 / (its sequence's length), so this sums to the sequence count.
    per_token_share = torch.where(mask > 0, mask / response_lengths.float().clamp(min=1), 0.0)  # (N, T)
    seqs = per_token_share.sum() if global_seqs is None else global_seqs
    if agg == "seq-mean-token-mean":
        return per_token_share / seqs  # (N, T)
    if agg == "seq-mean-token-sum":
        return mask / seqs  # (N, T)
    if max_response_len is None:
        raise ValueError("agg='seq-mean-token-sum-norm' needs max_response_len (the Dr. GRPO constant)")
    return mask / (seqs * max_response_len)  # (N, T)


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    agg: str = "token-mean",
    *,
    global_tokens: torch.Tensor | float | None = None,
    global_seqs: torch.Tensor | float | None = None,
    response_lengths: torch.Tensor | None = None,
    max_response_len: int | None = None,
    ref_logp: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
    behavior_logp: torch.Tensor | None = None,
    tis_cap: float = 2.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped policy-gradient loss of one micro-batch, aggregated with `agg`.

    logp: (N, T) or packed (1, total_T), log-probs of the response tokens under the current policy (grad).
    old_logp: same shape, log-probs under the policy that generated the batch (detached; exact on-policy:
        logp.detach()).
    adv: advantages broadcastable to logp's shape: (N, 1) per sequence, or per token (N, T) / (1, total_T).
    mask: same shape as logp, True on tokens that count (response tokens; False on prompt and padding).
    clip_low, clip_high: the ratio is clipped to [1 - clip_low, 1 + clip_high] (DAPO clip-higher: clip_high >
        clip_low).
    agg, global_tokens, global_seqs, response_lengths, max_response_len: see `aggregation_weights`.
    ref_logp: same shape, reference-policy log-probs; with kl_coef > 0 adds kl_coef * k3 per token, where
        k3 = exp(ref_logp - logp) - (ref_logp - logp) - 1 (Schulman's low-variance KL estimator).
    entropy: same shape, per-token entropy of the current policy (token_logprobs(return_entropy=True));
        with entropy_coef > 0 subtracts entropy_coef * entropy per token (a bonus).
    behavior_logp: same shape, the rollout engine's log-probs of the sampled tokens; when given, the pg term
        of each token is multiplied by min(exp(old_logp - behavior_logp), tis_cap) (truncated IS).

    Returns (loss, metrics). loss is a scalar, this micro-batch's share of the step loss. metrics are
    detached scalars: "pg_loss" (aggregated like loss), and, always token-weighted by 1 / global_tokens so
    that summing them over micro-batches and ranks gives the step mean: "clip_frac" (share of tokens whose
    clipped branch was taken), "approx_kl_old" (k3 estimate of KL(old || current)), "ratio_mean", plus
    "kl_ref", "entropy", "tis_weight" when those inputs are given. "ratio_max" / "ratio_min" (over loss
    tokens; -inf / inf when there are none) reduce with max / min instead of sum.
    """
    mask = mask.bool()  # (N, T)
    weights = aggregation_weights(mask, agg, global_tokens, global_seqs, response_lengths, max_response_len)  # (N, T)
    token_mean_weights = aggregation_weights(mask, "token-mean", global_tokens)  # (N, T)

    # torch.where (not a multiply) so garbage on masked positions (padding, -inf) gets neither value nor gradient.
    log_ratio = torch.where(mask, logp - old_logp, 0.0).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)  # (N, T)
    ratio = torch.exp(log_ratio)  # (N, T)
    adv = adv.float()
    pg_unclipped = -adv * ratio  # (N, T)
    pg_clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)  # (N, T)
    pg = torch.maximum(pg_unclipped, pg_clipped)  # (N, T) pessimistic bound of PPO

    metrics = {}
    if behavior_logp is not None:
        log_is = torch.where(mask, old_logp - behavior_logp, 0.0).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)  # (N, T)
        tis_weight = torch.exp(log_is).clamp(max=tis_cap).detach()  # (N, T)
        pg = pg * tis_weight
        metrics["tis_weight"] = (tis_weight * token_mean_weights).sum()

    pg_loss = (torch.where(mask, pg, 0.0) * weights).sum()
    loss = pg_loss
    if ref_logp is not None and kl_coef != 0.0:
        ref_log_ratio = torch.where(mask, ref_logp - logp, 0.0).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)  # (N, T)
        kl_ref = torch.exp(ref_log_ratio) - ref_log_ratio - 1.0  # (N, T)
        loss = loss + kl_coef * (kl_ref * weights).sum()
        metrics["kl_ref"] = (kl_ref.detach() * token_mean_weights).sum()
    if entropy is not None:
        entropy = torch.where(mask, entropy, 0.0)  # (N, T)
        if entropy_coef != 0.0:
            loss = loss - entropy_coef * (entropy * weights).sum()
        metrics["entropy"] = (entropy.detach() * token_mean_weights).sum()

    with torch.no_grad():
        metrics["pg_loss"] = pg_loss.detach()
        metrics["clip_frac"] = ((pg_clipped > pg_unclipped).float() * token_mean_weights).sum()
        # k3 estimate of KL(old || current) from samples of old: (ratio - 1) - log ratio.
        metrics["approx_kl_old"] = ((ratio - 1.0 - log_ratio) * token_mean_weights).sum()
        metrics["ratio_mean"] = (ratio * token_mean_weights).sum()
        metrics["ratio_max"] = torch.where(mask, ratio, -torch.inf).amax()
        metrics["ratio_min"] = torch.where(mask, ratio, torch.inf).amin()
    return loss, metrics
