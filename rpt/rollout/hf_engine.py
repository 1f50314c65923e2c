"""Rollouts with transformers `generate`: the engine for machines without vLLM, for tiny models whose
head_dim vLLM's CPU attention rejects (stories260K), and for tests.

The engine owns a plain (unsharded) copy of the policy that `update_weights` refreshes from the trainer's
FSDP shards every step, exactly like the vLLM engine. Generation is then local to each rank: no per-token
all-gathers, and ranks that stop at different lengths cannot deadlock (the reason transformers forces
`synced_gpus=True` on FSDP models).

Each prompt is generated on its own with its own seed (see Engine.generate), so a sample depends only on its prompt and
seed, never on how prompts are batched or split over ranks (the 1-rank vs 2-rank equality rests on this).
Log-probs are those of the sampled tokens after temperature and top-p, like vLLM's processed_logprobs.

The decode loop is written out rather than transformers' `generate`, for two costs `generate` pays at a real
vocabulary (measured at V = 151,646, 8 samples of 64 tokens per prompt, one CPU thread): its
`torch.multinomial` took half of the generation time (37 ms per (8, V) draw; the inverse CDF here, a cumsum
and a binary search, takes a few), and `num_return_sequences` runs the prompt's prefill once per sample,
where here it runs once and the KV cache is repeated for the n samples. Sampling order is transformers':
temperature, then top-p (its TopPLogitsWarper's rule: drop the tokens whose cumulative probability in
ascending order is <= 1 - top_p, keeping at least the most likely).

Lifecycle (rpt/rollout/engine.py), enforced like vLLM's: on CUDA `sleep()` moves the copy to the CPU and
`update_weights` / `wake()` bring it back (this engine has no KV cache to keep apart, so WEIGHTS_ONLY and
AWAKE hold the same memory); on CPU nothing moves, but a sleeping engine refuses to generate all the same.
"""
from collections.abc import Iterable

import torch
from transformers import DynamicCache

from rpt.rollout.engine import Completion, EngineState, Lifecycle, SamplingParams


def processed_logprobs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """(n, V) logits -> (n, V) fp32 log-probs of the distribution sampled from: temperature, then top-p (tokens
    whose cumulative probability in ascending order is <= 1 - top_p get -inf; the most likely token stays).
    Temperature 0 is greedy decoding (the caller takes the argmax), scored like vLLM: the untempered
    log-softmax."""
    scores = logits.float() / temperature if temperature > 0 else logits.float()  # (n, V)
    if top_p < 1.0:
        sorted_scores, order = scores.sort(dim=-1)  # ascending
        drop_sorted = sorted_scores.softmax(dim=-1).cumsum(dim=-1) <= 1 - top_p  # (n, V)
        drop_sorted[:, -1] = False
        scores = scores.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
    return scores.log_softmax(dim=-1)


def sample_inverse_cdf(logp: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token per row of (n, V) log-probs: the first index whose cumulative probability exceeds a uniform
    draw (one draw per row from `generator`). A draw that rounds to the total takes the row's last token of
    nonzero probability (the first index where the cumulative sum is largest)."""
    cdf = logp.exp().cumsum(dim=-1)  # (n, V)
    draw = torch.rand(logp.shape[0], 1, generator=generator, device=logp.device, dtype=cdf.dtype) * cdf[:, -1:]
    token = torch.searchsorted(cdf, draw, right=True).squeeze(-1)  # (n,)
    overflow = token >= logp.shape[-1]
    return torch.where(overflow, cdf.argmax(dim=-1), token) if bool(overflow.any()) else token


class HFEngine:
    def __init__(self, model: torch.nn.Module, eos_token_id: int | list[int], pad_token_id: int | None = None):
        """model: a plain HF causal LM the engine owns (e.g. loaded from the same directory as the policy)."""
        self.model = model.eval()
        self.device = next(model.parameters()).device  # where generation runs; sleep() moves off a GPU
        self.lifecycle = Lifecycle("HFEngine")
        self.eos_ids = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id)
        self.pad_token_id = pad_token_id if pad_token_id is not None else min(self.eos_ids)

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: SamplingParams,
                 seeds: list[int] | None = None) -> list[list[Completion]]:
        self.lifecycle.check_generate()
        seeds = seeds if seeds is not None else [params.seed + i for i in range(len(prompts))]
        return [self._sample_group(prompt, params, seed) for prompt, seed in zip(prompts, seeds)]

    def _sample_group(self, prompt: list[int], params: SamplingParams, seed: int) -> list[Completion]:
        """params.n samples of one prompt: one prefill, the KV cache repeated n times, then one decode step per
        token for all n rows until every row has sampled an EOS or max_tokens are reached."""
        device, n = self.device, params.n
        generator = torch.Generator(device=device).manual_seed(seed)
        cache = DynamicCache(config=self.model.config)
        logits = self.model(input_ids=torch.tensor([prompt], device=device), past_key_values=cache,
                            use_cache=True, logits_to_keep=1).logits[:, -1]  # (1, V)
        cache.batch_repeat_interleave(n)
        logits = logits.expand(n, -1)  # (n, V)
        eos = torch.tensor(sorted(self.eos_ids), device=device)
        finished = torch.zeros(n, dtype=torch.bool, device=device)  # (n,)
        tokens, logprobs = [], []
        for position in range(len(prompt), len(prompt) + params.max_tokens):
            logp = processed_logprobs(logits, params.temperature, params.top_p)  # (n, V)
            token = sample_inverse_cdf(logp, generator) if params.temperature > 0 else logp.argmax(dim=-1)  # (n,)
            token = token.masked_fill(finished, self.pad_token_id)  # rows done: padding, cut in _completion
            tokens.append(token)
            logprobs.append(logp.gather(-1, token[:, None]).squeeze(-1))  # (n,)
            finished |= torch.isin(token, eos)
            if bool(finished.all()) or position + 1 == len(prompt) + params.max_tokens:
                break
            logits = self.model(input_ids=token[:, None], position_ids=torch.full((n, 1), position, device=device),
                                past_key_values=cache, use_cache=True).logits[:, -1]  # (n, V)
        new_tokens, new_logprobs = torch.stack(tokens, dim=1), torch.stack(logprobs, dim=1)  # (n, T_new) each
        return [self._completion(row, lps) for row, lps in zip(new_tokens.tolist(), new_logprobs.float().tolist())]

    def _completion(self, tokens: list[int], logprobs: list[float]) -> Completion:
        for end, token in enumerate(tokens):
            if token in self.eos_ids:  # keep the EOS (it was sampled and is trained on), drop the padding
                return Completion(tokens[: end + 1], logprobs[: end + 1], "stop")
        return Completion(tokens, logprobs, "length")

    @torch.no_grad()
    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        if self.lifecycle.begin_update_weights():
            self.model.to(self.device)
        params = dict(self.model.named_parameters())
        for name, tensor in named_tensors:
            params[name].copy_(tensor)

    def sleep(self) -> None:
        if self.lifecycle.begin_sleep() and self.device.type == "cuda":
            self.model.to("cpu")

    def wake(self) -> None:
        if self.lifecycle.begin_wake() is EngineState.ASLEEP and self.device.type == "cuda":
            self.model.to(self.device)
