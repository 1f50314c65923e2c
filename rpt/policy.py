"""The policy as the trainer sees it: a Hugging Face causal LM whose forward returns the chunked log-probs of
given target tokens (rpt.grpo.logprobs.token_logprobs) instead of (N, T, V) logits.

It lives next to the model, not in rpt/grpo/: it knows the FSDP entry points (rpt/fsdp.py makes it the FSDP
root and registers `next_token_logits` as a second forward method), while rpt/grpo/ holds functions of
tensors only.
"""
import torch

from rpt.grpo.logprobs import token_logprobs


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
        loss_mask: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """input_ids, position_ids, targets: (N, T) or packed (1, total_T) -> log-probs (and entropy) of that shape.

        loss_mask: same shape, bool; when given, the lm_head runs on the masked positions only (the response
        tokens: prompts are most of a packed row) and the other positions hold 0.

        Packed rows hold several sequences whose position_ids restart at 0; transformers (5.x, sdpa, eager
        and flash_attention_2) then masks attention block-diagonally, but only when attention_mask is None
        and there is no KV cache, hence use_cache=False (the config default would create a cache and silently
        let packed sequences attend to each other).
        """
        decoder_output = self.model.get_decoder()(input_ids=input_ids, position_ids=position_ids, use_cache=False)
        hidden = decoder_output.last_hidden_state  # (N, T, H)
        lm_head_weight = self.model.get_output_embeddings().weight  # (V, H)
        if loss_mask is None:
            return token_logprobs(hidden, lm_head_weight, targets, temperature, chunk_size, return_entropy)
        selected = token_logprobs(hidden[loss_mask][None], lm_head_weight, targets[loss_mask][None], temperature,
                                  chunk_size, return_entropy)  # (1, M) each, M = loss positions
        selected = selected if return_entropy else (selected,)
        placed = [torch.zeros(loss_mask.shape, dtype=v.dtype, device=v.device).masked_scatter(loss_mask, v[0])
                  for v in selected]  # (N, T) each, differentiable
        return tuple(placed) if return_entropy else placed[0]

    def next_token_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                          position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(N, T) left-padded contexts -> (N, V) logits of the token after each one (standard-mode
        evaluation: argmax of one forward). rpt.fsdp registers it as an FSDP forward method, so it gathers
        the parameters like forward does."""
        hidden = self.model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                          position_ids=position_ids, use_cache=False).last_hidden_state  # (N, T, H)
        return hidden[:, -1] @ self.model.get_output_embeddings().weight.T  # (N, V)
