"""Rollouts with transformers `generate`: the engine for machines without vLLM, for tiny models whose
head_dim vLLM's CPU attention rejects (stories260K), and for tests.

The engine owns a plain (unsharded) copy of the policy that `update_weights` refreshes from the trainer's
FSDP shards every step, exactly like the vLLM engine. Generation is then local to each rank: no per-token
all-gathers, and ranks that stop at different lengths cannot deadlock (the reason transformers forces
`synced_gpus=True` on FSDP models).

Each prompt is generated on its own with its own seed (see Engine.generate), so a sample depends only on its prompt and
seed, never on how prompts are batched or split over ranks (the 1-rank vs 2-rank equality rests on this).
Log-probs are those of the sampled tokens after temperature and top-p, like vLLM's processed_logprobs.

Lifecycle (rpt/rollout/engine.py), enforced like vLLM's: on CUDA `sleep()` moves the copy to the CPU and
`update_weights` / `wake()` bring it back (this engine has no KV cache to keep apart, so WEIGHTS_ONLY and
AWAKE hold the same memory); on CPU nothing moves, but a sleeping engine refuses to generate all the same.
"""
from collections.abc import Iterable

import torch

from rpt.rollout.engine import Completion, EngineState, Lifecycle, SamplingParams


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
        device = self.device
        seeds = seeds if seeds is not None else [params.seed + i for i in range(len(prompts))]
        results = []
        for prompt, seed in zip(prompts, seeds):
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed)
                out = self.model.generate(
                    torch.tensor([prompt], device=device), attention_mask=torch.ones(1, len(prompt), device=device,
                                                                                      dtype=torch.long),
                    do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0,
                    max_new_tokens=params.max_tokens, num_return_sequences=params.n,
                    eos_token_id=sorted(self.eos_ids), pad_token_id=self.pad_token_id,
                    output_scores=True, return_dict_in_generate=True,
                )
            new_tokens = out.sequences[:, len(prompt):]  # (n, T_new)
            scores = torch.stack(out.scores, dim=1).float()  # (n, T_new, V), after temperature and top-p
            logprobs = torch.log_softmax(scores, dim=-1).gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
            results.append([self._completion(tokens, lps) for tokens, lps in zip(new_tokens.tolist(),
                                                                               logprobs.tolist())])
        return results

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
