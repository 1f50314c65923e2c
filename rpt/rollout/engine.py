"""The interface the training loop uses to generate rollouts, and the engine lifecycle every engine enforces.

Two engines implement it: `hf_engine.HFEngine` (transformers `generate`, for machines without vLLM and for
tests) and `vllm_engine.VLLMEngine` (co-located vLLM, the paper-scale path). The loop only ever calls the
four methods of `Engine`, so a new engine is one class.

Lifecycle. A co-located engine shares each GPU with the trainer, so it gives its memory back while the policy
updates. Three states, the same in every engine (vLLM 0.32's sleep mode, `v1/engine/core.py` sleep/wake_up):

    AWAKE         weights and KV cache resident: every call is legal
    ASLEEP        after sleep(): KV cache released, weights offloaded (sleep level 1) or dropped (level 2)
    WEIGHTS_ONLY  after update_weights() on a sleeping engine: weights resident and fresh, KV cache still
                  released; vLLM keeps its scheduler paused until all memory is resident, so a generate
                  here hangs (in-process) or faults on a GPU

    call             AWAKE      ASLEEP              WEIGHTS_ONLY
    generate         ok         EngineStateError    EngineStateError
    update_weights   ok         -> WEIGHTS_ONLY     ok
    sleep            -> ASLEEP  no-op               EngineStateError (sleeping again would re-release
                                                    half-resident memory; wake first)
    wake             no-op      -> AWAKE            -> AWAKE (the KV cache only)

The loop's order per step is therefore: wake -> generate (rollouts, evaluation) -> sleep -> update ->
update_weights (weights only) -> next step's wake. Every engine tracks the state even where nothing is
released (vLLM on CPU has no sleep mode, the HF engine on CPU keeps its copy), so a loop that calls
`generate` on a sleeping engine fails on CPU exactly where it would hang on a GPU.
"""
import enum
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
        """prompts: B lists of prompt token ids -> B lists of params.n completions each. Legal when AWAKE only.

        seeds: one per prompt (default params.seed + i). The trainer derives them from each sample's
        identity, so a context gets the same completions whichever rank or batch it lands in."""

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load full (unsharded) weights, HF parameter names, streamed one tensor at a time. On a sleeping
        engine it brings back the weights only (WEIGHTS_ONLY)."""

    def sleep(self) -> None:
        """Release generation memory (KV cache, and weights) before the update phase (ASLEEP)."""

    def wake(self) -> None:
        """Take the memory back before generation (AWAKE)."""


class EngineState(enum.Enum):
    AWAKE = "awake"
    ASLEEP = "asleep"
    WEIGHTS_ONLY = "weights-only awake"


class EngineStateError(RuntimeError):
    pass


class Lifecycle:
    """The state machine of the table above, shared by every engine. Each `begin_*` method checks that the
    call is legal, names what the engine must do to its memory, and moves to the next state; the engine does
    the release or restore it is capable of."""

    def __init__(self, engine_name: str):
        self.engine_name = engine_name
        self.state = EngineState.AWAKE

    def _illegal(self, call: str, why: str) -> EngineStateError:
        return EngineStateError(f"{self.engine_name}.{call}() while the engine is {self.state.value}: {why} "
                                "(lifecycle: rpt/rollout/engine.py)")

    def check_generate(self) -> None:
        if self.state is not EngineState.AWAKE:
            raise self._illegal("generate", "call wake() first; vLLM keeps its scheduler paused until the KV "
                                            "cache is resident, so this would hang or fault on a GPU")

    def begin_update_weights(self) -> bool:
        """-> whether the engine must first bring its weights back (it was ASLEEP)."""
        if self.state is EngineState.ASLEEP:
            self.state = EngineState.WEIGHTS_ONLY
            return True
        return False

    def begin_sleep(self) -> bool:
        """-> whether the engine must release its memory (it was AWAKE)."""
        if self.state is EngineState.WEIGHTS_ONLY:
            raise self._illegal("sleep", "its weights were just brought back; call wake() before sleeping again")
        released = self.state is EngineState.AWAKE
        self.state = EngineState.ASLEEP
        return released

    def begin_wake(self) -> EngineState:
        """-> the state the engine wakes from (AWAKE: nothing to do; WEIGHTS_ONLY: the KV cache only)."""
        previous, self.state = self.state, EngineState.AWAKE
        return previous

