r"""The reward step of the loop: all N = B*G responses of a step scored at once (Sections 3.1-3.2, Appendix A).

Two extraction modes:
- "boxed" (the paper): the prediction is the content of the last `\boxed{}` after the last `</think>`
  (extract.py). The response may start with a prefill the loop put in the assistant turn (e.g.
  "</think>\n\\boxed{"); pass prefill + generated text.
- "raw" (not in the paper; README "Quick start"): the prediction is the response
  text itself, for models too small to write `</think> \boxed{}`. Pass the generated tokens' exact text,
  EOS stripped and without any prefill: build it with `tokens.token_text`, because `decode()` drops the
  leading space of a SentencePiece `▁` token (stories260K: `▁the` decodes to "the") and that prediction
  would never match " the".
"""
from typing import Sequence

import torch

from rpt.reward.extract import THINK_END, extract_prediction
from rpt.reward.prefix_match import (conditional_dense_rewards, count_matched_tokens, dense_rewards, encode_utf8,
                                     first_token_match)
from rpt.reward.tokens import first_token_id

REWARD_KINDS = ("prefix_match", "first_token", "dense", "conditional_dense")
EXTRACTIONS = ("boxed", "raw")


def compute_rewards(responses: list[str], continuation_token_bytes: list[Sequence[bytes]], *,
                    kind: str = "prefix_match", extraction: str = "boxed", group_size: int,
                    first_token_ids: list[int | None] | None = None, target_token_ids: list[int] | None = None,
                    first_token_probs: list[float] | None = None, penalty: float = 0.0,
                    tokenizer=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    r"""Score N = B*G responses, the G responses of each context contiguous.

    responses: N texts (see the module doc for what each extraction mode expects).
    continuation_token_bytes: N sequences, the bytes of the ground-truth tokens x_t, x_t+1, ... of each
        response's context (`tokens.token_bytes(tokenizer, sample.continuation_ids)`, repeated G times).
    kind: "prefix_match" (Eq. 3, default) or an Appendix A variant: "first_token", "dense",
        "conditional_dense".
    extraction: "boxed" or "raw".
    group_size: G; N must be a multiple of it (conditional_dense decides per group).
    first_token_ids: N first tokens of the predictions (None where there is none), for the first-token
        kinds. Left out, they are computed from the extracted predictions with `tokenizer`
        (`tokens.first_token_id`); in raw mode the loop can pass the first generated token instead.
    target_token_ids: N ids of x_t; required by the first-token kinds.
    first_token_probs: N values of P(y[0] | x_<t) under the policy; required by dense and
        conditional_dense. Entries of samples without a first token are ignored (they score 0).
    penalty: conditional_dense gives -penalty to every sample of a group with no correct first token.
    tokenizer: the policy tokenizer, only needed to compute first_token_ids.

    Returns rewards (N,) float32 and diagnostics, each (N,) float32: had_think (the response contains
    `</think>`), had_box (a closed `\boxed{}` after the last `</think>`), prediction_bytes (UTF-8 length of
    the prediction, 0 without one), matched_tokens (leading continuation tokens the prediction reproduces
    in full, whatever the kind). Never raises on response content.
    """
    n = len(responses)
    if kind not in REWARD_KINDS:
        raise ValueError(f"unknown reward kind {kind!r}; choose one of {REWARD_KINDS}")
    if extraction not in EXTRACTIONS:
        raise ValueError(f"unknown extraction {extraction!r}; choose one of {EXTRACTIONS}")
    if len(continuation_token_bytes) != n:
        raise ValueError(f"{n} responses but {len(continuation_token_bytes)} continuations")
    if group_size < 1 or n % group_size:
        raise ValueError(f"{n} responses do not split into groups of {group_size}")

    boxed = [extract_prediction(response) for response in responses]
    predictions = boxed if extraction == "boxed" else responses
    prediction_bytes = [encode_utf8(prediction) if prediction else b"" for prediction in predictions]
    matches = [count_matched_tokens(encoded, pieces) for encoded, pieces in
               zip(prediction_bytes, continuation_token_bytes)]
    diagnostics = {
        # a box was only looked for after </think>; scanning 2,000 characters again would double the cost
        "had_think": torch.tensor([prediction is not None or THINK_END in response
                                   for prediction, response in zip(boxed, responses)], dtype=torch.float32),
        "had_box": torch.tensor([prediction is not None for prediction in boxed], dtype=torch.float32),
        "prediction_bytes": torch.tensor([len(encoded) for encoded in prediction_bytes], dtype=torch.float32),
        "matched_tokens": torch.tensor([matched for matched, _ in matches], dtype=torch.float32),
    }
    if kind == "prefix_match":
        return torch.tensor([exact for _, exact in matches], dtype=torch.float32), diagnostics  # (N,)

    if target_token_ids is None or len(target_token_ids) != n:
        raise ValueError(f"reward kind {kind!r} needs target_token_ids: the N ids of x_t")
    if first_token_ids is None:
        if tokenizer is None:
            raise ValueError(f"reward kind {kind!r} needs first_token_ids or a tokenizer to compute them")
        first_token_ids = [first_token_id(tokenizer, prediction) for prediction in predictions]
    match = first_token_match(first_token_ids, target_token_ids)  # (N,) bool
    if kind == "first_token":
        return match.float(), diagnostics
    if first_token_probs is None or len(first_token_probs) != n:
        raise ValueError(f"reward kind {kind!r} needs first_token_probs: P(y[0] | x_<t) for the N samples")
    probs = torch.tensor([prob if first is not None else 0.0 for prob, first in
                          zip(first_token_probs, first_token_ids, strict=True)], dtype=torch.float32)  # (N,)
    if kind == "dense":
        return dense_rewards(match, probs), diagnostics
    return conditional_dense_rewards(match, probs, group_size, penalty), diagnostics
