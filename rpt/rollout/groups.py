"""One path from a context to its rewards, shared by training (rpt.train) and evaluation (rpt.eval):

    sample (context ids, continuation ids) -> prompt ids (template + chat template + prefill, the context cut
    from the left to fit max_prompt_tokens) -> engine.generate with a seed per sample -> response text ->
    reward (Eq. 3, or an Appendix A variant)

and, for RLVR (Section 4.1), question -> R1 math prompt -> the same seeded generate -> response text ->
answer reward (math-verify, rpt/reward/answer.py); zero-shot multiple choice in reasoning mode (Table 3)
takes the same path up to the response text (rpt/eval/mcq.py reads the chosen letter from it). An item of a
batch is a `Sample`, a `Question` or a `ChoiceQuestion`.

so a context gets the same prompt, the same samples and the same score whether the trainer or an evaluation
meets it (they used to build prompts, seeds and response text each their own way, and differed).

The seed of a sample's generation is fixed by (seed, step, round, document, position): the completions of a
context do not depend on the rank, batch or position it lands in, which is what makes 1 process and N ranks
give identical rollouts.

Deviations from the paper: none (the paper does not describe prompt truncation; cutting the context from the
left keeps the tokens next to the position being predicted).
"""
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from rpt.data.prompts import PromptSettings, item_prompt, special_prefix_ids
from rpt.data.sample import ChoiceQuestion, Question, Sample
from rpt.reward import answer_rewards, compute_rewards, extract_prediction, first_token_id, token_bytes, token_text
from rpt.reward.answer import shared_verifier
from rpt.rollout.engine import Completion, Engine, SamplingParams

Item = Sample | Question | ChoiceQuestion  # what a batch item can be (see above)


@dataclass(frozen=True)
class RewardSettings:
    """How a response is scored (the reward.* fields of rpt.config)."""
    kind: str = "prefix_match"  # or "answer" (RLVR: the items are Questions)
    extraction: str = "boxed"
    penalty: float = 0.0
    verify_timeout_s: float = 5.0  # answer: time limit per math-verify comparison


@dataclass
class Group:
    """One context and its G completions: the unit that dynamic sampling keeps or drops."""
    sample: Item
    prompt_ids: list[int]
    completions: list[Completion]
    responses: list[str]  # what the reward sees: prefill (boxed extraction) + generated text
    diagnostics: dict[str, torch.Tensor] = field(default_factory=dict)  # (G,) each, filled by score_groups


def flatten_groups(groups: list[Group]) -> tuple[list[list[int]], list[list[int]], list[torch.Tensor]]:
    """b groups of G -> the update's N = b * G sequences: prompt ids (each group's, G times), response ids, and
    the engine's log-probs of the sampled tokens (zeros for an engine that returns none)."""
    prompts = [group.prompt_ids for group in groups for _ in group.completions]
    responses = [c.token_ids for group in groups for c in group.completions]
    behavior_logps = [torch.tensor(c.logprobs or [0.0] * len(c.token_ids)) for group in groups
                      for c in group.completions]  # N x (T_i,)
    return prompts, responses, behavior_logps


def sample_seed(seed: int, sample: Item, step: int = 0, round_index: int = 0) -> int:
    """A 32-bit generation seed fixed by the sample's identity (document, position; a question's id) and
    (seed, step, round), not by the rank or batch position it lands in; SeedSequence keeps nearby identities'
    streams unrelated."""
    identity = [sample.doc_id, sample.position] if isinstance(sample, Sample) else [sample.question_id]
    return int(np.random.SeedSequence([seed, step, round_index, *identity]).generate_state(1)[0])


def response_text(tokenizer, completion: Completion, prefill: str = "") -> str:
    """`prefill` + the generated tokens without the final EOS, read from token bytes (`token_text`) so that a
    SentencePiece `▁` keeps its space and special tokens such as `</think>` stay in the text. Engines stop at
    EOS, so only the last token can be one."""
    ids = completion.token_ids
    if ids and completion.finish_reason == "stop" and ids[-1] == tokenizer.eos_token_id:
        ids = ids[:-1]
    return prefill + token_text(tokenizer, ids)


def generate_groups(engine: Engine, tokenizer, samples: list[Item], prompt: PromptSettings,
                    params: SamplingParams, extraction: str, seed: int, step: int = 0,
                    round_index: int = 0) -> list[Group]:
    """B samples -> B groups of params.n completions each, every sample with its own seed.

    The boxed extraction reads the response prefill as part of the response (the prefill opens the answer,
    e.g. "</think>\\n\\boxed{"); raw reads the generated text alone."""
    prompts = [item_prompt(tokenizer, sample, prompt) for sample in samples]
    seeds = [sample_seed(seed, sample, step, round_index) for sample in samples]
    prefill = prompt.response_prefill if extraction == "boxed" else ""
    outputs = engine.generate(prompts, params, seeds=seeds)
    return [Group(sample, prompt_ids, completions, [response_text(tokenizer, c, prefill) for c in completions])
            for sample, prompt_ids, completions in zip(samples, prompts, outputs)]


FirstTokenLogprobs = Callable[[list[list[int]], list[list[int]]], list[torch.Tensor]]


def score_groups(groups: list[Group], tokenizer, reward: RewardSettings,
                 first_token_logprobs: FirstTokenLogprobs | None = None) -> torch.Tensor:
    """-> rewards (B, G); fills each group's diagnostics (G,) tensors.

    first_token_logprobs(contexts, targets) -> log-probs, one (1,) tensor per context: the policy's
    log P(y[0] | x_<t), needed by the dense kinds (Appendix A) only."""
    if not groups:
        return torch.empty(0, 0)
    g = len(groups[0].completions)
    responses = [r for group in groups for r in group.responses]  # N = B * G
    if reward.kind == "answer":  # RLVR: the final answer verified against the question's references
        rewards, diagnostics = answer_rewards(responses, [group.sample.answers for group in groups for _ in range(g)],
                                              shared_verifier(reward.verify_timeout_s))
        for i, group in enumerate(groups):
            group.diagnostics = {k: v[i * g:(i + 1) * g] for k, v in diagnostics.items()}
        return rewards.view(len(groups), g)  # (B, G)
    pieces = [token_bytes(tokenizer, group.sample.continuation_ids) for group in groups]  # once per context
    continuations = [group_pieces for group_pieces in pieces for _ in range(g)]  # N, shared by the G samples
    extra = {}
    if reward.kind != "prefix_match":
        if reward.extraction == "raw":  # the first generated token is the prediction's first token
            first_ids = [c.token_ids[0] if c.token_ids else None for group in groups for c in group.completions]
        else:
            first_ids = [first_token_id(tokenizer, extract_prediction(r)) for r in responses]
        extra = {"first_token_ids": first_ids,
                 "target_token_ids": [group.sample.continuation_ids[0] for group in groups for _ in range(g)]}
        if reward.kind in ("dense", "conditional_dense"):
            if first_token_logprobs is None:
                raise ValueError(f"reward.kind={reward.kind} needs the policy's first-token log-probs")
            # on the context as the proxy scored it: the tokenizer's BOS, if any, in front
            bos = special_prefix_ids(tokenizer)
            contexts = [bos + group.sample.context_ids for group in groups for _ in range(g)]
            targets = [[t if t is not None else 0] for t in first_ids]
            extra["first_token_probs"] = [math.exp(lp[0].item()) for lp in first_token_logprobs(contexts, targets)]
    rewards, diagnostics = compute_rewards(responses, continuations, kind=reward.kind,
                                           extraction=reward.extraction, group_size=g,
                                           penalty=reward.penalty, tokenizer=tokenizer, **extra)
    for i, group in enumerate(groups):
        group.diagnostics = {k: v[i * g:(i + 1) * g] for k, v in diagnostics.items()}
    return rewards.view(len(groups), g)  # (B, G)
