"""Log-probs of target tokens from hidden states and the lm_head, chunk by chunk.

The policy's log-prob of each response token is log_softmax(h_t W^T / temperature)[x_{t+1}]. Computing the
logits of a whole batch at once costs (N, T, V) floats: at V = 152,064 and T = 4,096 that is 2.5 GB in fp32
per sequence, times ~3 with the softmax and its gradient. Here the flattened tokens are processed in chunks of
`chunk_size` rows, and under autograd each chunk runs inside torch.utils.checkpoint, so the forward keeps only
the chunk's inputs and the backward recomputes one chunk's logits at a time: peak memory O(chunk_size x V).

Temperature: the rollout engine samples from softmax(logits / temperature) (0.8 in the paper), so the
importance ratio and the policy gradient must use the same tempered distribution (verl does the same).

Deviations from the paper: none (the paper does not describe how log-probs are computed).
"""
import torch
from torch.utils.checkpoint import checkpoint


def _chunk_logprobs(
    hidden: torch.Tensor, lm_head_weight: torch.Tensor, targets: torch.Tensor, temperature: float, return_entropy: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """hidden (C, H), lm_head_weight (V, H), targets (C,) -> log-probs (C,) and entropy (C,) or None."""
    # Matmul in the weights' dtype (bf16 at scale), softmax in fp32: only a (C, V) fp32 block ever exists.
    logits = (hidden @ lm_head_weight.T).float() / temperature  # (C, V)
    log_normalizer = torch.logsumexp(logits, dim=-1)  # (C,)
    logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - log_normalizer  # (C,)
    if not return_entropy:
        return logp, None
    probs = torch.softmax(logits, dim=-1)  # (C, V)
    entropy = log_normalizer - (probs * logits).sum(dim=-1)  # (C,) H = log Z - E_p[logit]
    return logp, entropy


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
    Returns log-probs (N, T) float32, and with return_entropy=True also the entropy (N, T) float32 of each
    position's tempered distribution. Both are differentiable w.r.t. hidden and lm_head_weight.
    """
    batch, length, width = hidden.shape
    flat_hidden = hidden.reshape(batch * length, width)  # (N*T, H)
    flat_targets = targets.reshape(batch * length)  # (N*T,)
    # Checkpoint only when a backward will happen: otherwise there is nothing to save and it only adds overhead.
    needs_grad = torch.is_grad_enabled() and (hidden.requires_grad or lm_head_weight.requires_grad)
    logp_chunks, entropy_chunks = [], []
    for start in range(0, batch * length, chunk_size):
        chunk_args = (flat_hidden[start : start + chunk_size], lm_head_weight, flat_targets[start : start + chunk_size],
                      temperature, return_entropy)
        if needs_grad:
            logp, entropy = checkpoint(_chunk_logprobs, *chunk_args, use_reentrant=False)
        else:
            logp, entropy = _chunk_logprobs(*chunk_args)
        logp_chunks.append(logp)
        entropy_chunks.append(entropy)
    logp = torch.cat(logp_chunks).reshape(batch, length)  # (N, T)
    if not return_entropy:
        return logp
    return logp, torch.cat(entropy_chunks).reshape(batch, length)  # (N, T), (N, T)


class PolicyLogprobs(torch.nn.Module):
    """A Hugging Face causal LM whose forward returns token log-probs (chunked) instead of logits.

    Why a module: the decoder runs once, then `token_logprobs` uses the lm_head weight directly, never calling
    the lm_head's forward. Under FSDP2 a module's parameters are unsharded only inside an FSDP module's forward,
    and gradients are reduced only for parameters used there; making this wrapper the FSDP root
    (`fully_shard(PolicyLogprobs(model))` after sharding the blocks) keeps lm_head and the embeddings inside
    the root's forward. Parameter names of `self.model` are unchanged (the wrapper adds a "model." prefix only
    to its own state_dict).
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        targets: torch.Tensor,
        temperature: float = 1.0,
        chunk_size: int = 1024,
        return_entropy: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """input_ids, position_ids, targets: (N, T) or packed (1, total_T) -> log-probs (and entropy) of that shape.

        Packed rows hold several sequences whose position_ids restart at 0; transformers (5.x, sdpa, eager
        and flash_attention_2) then masks attention block-diagonally, but only when attention_mask is None
        and there is no KV cache, hence use_cache=False (the config default would create a cache and silently
        let packed sequences attend to each other).
        """
        decoder_output = self.model.get_decoder()(input_ids=input_ids, position_ids=position_ids, use_cache=False)
        hidden = decoder_output.last_hidden_state  # (N, T, H)
        lm_head_weight = self.model.get_output_embeddings().weight  # (V, H)
        return token_logprobs(hidden, lm_head_weight, targets, temperature, chunk_size, return_entropy)
