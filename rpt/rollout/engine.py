"""The interface the training loop uses to generate rollouts.

Two engines implement it: `hf_engine.HFEngine` (transformers `generate`, for machines without vLLM and for
tests) and `vllm_engine.VLLMEngine` (co-located vLLM, the paper-scale path). The loop only ever calls the
four methods below, so a new engine is one class.
"""
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True)
class SamplingParams:
    n: int = 8  # G samples per prompt
    temperature: float = 0.8
    top_p: float = 1.0
    max_tokens: int = 8192
    seed: int = 0  # prompt i of a generate() call samples with seed + i, unless seeds are given per prompt


@dataclass
class Completion:
    token_ids: list[int]  # generated tokens only (no prompt), EOS included when it was sampled
    logprobs: list[float] | None  # sampled tokens' log-probs after temperature, when the engine gives them
    finish_reason: str  # "stop" (EOS or stop string) or "length" (hit max_tokens)


class Engine(Protocol):
    def generate(self, prompts: list[list[int]], params: SamplingParams,
                 seeds: list[int] | None = None) -> list[list[Completion]]:
        """prompts: B lists of prompt token ids -> B lists of params.n completions each.

        seeds: one per prompt (default params.seed + i). The trainer derives them from each sample's
        identity, so a context gets the same completions whichever rank or batch it lands in."""

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load full (unsharded) weights, HF parameter names, streamed one tensor at a time."""

    def sleep(self) -> None:
        """Release generation memory (KV cache, and weights at level 2) before the update phase."""

    def wake(self) -> None:
        """Take the memory back before generation."""
