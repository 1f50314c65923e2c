"""The byte-level prefix-matching reward (Eq. 3, Section 3.2) and the Appendix A variants.

Eq. 3: with ȳ the UTF-8 bytes of the prediction, x̄ the concatenated bytes of the ground-truth tokens
x_t, x_t+1, ... and L_gt their cumulative byte lengths, r = 1 iff ȳ == x̄[0:len(ȳ)] and len(ȳ) ∈ L_gt.
It is computed by walking the continuation's tokens and comparing each token's bytes in place, so the work
is proportional to the prediction's length, not the continuation's.

Appendix A variants (all reported comparable to Eq. 3), as tensor functions over N = B*G samples:
- first_token: 1 iff the first token of the prediction equals x_t.
- dense: 1 if it does, else the policy's probability P(y[0] | x_<t) of that first token (the loop supplies
  it).
- conditional_dense: dense inside groups of G where at least one sample's first token is x_t; in the other
  groups every sample gets -penalty (0 by default: "all zero, or a small uniform penalty").

Deviations from the paper: the empty prediction scores 0 (the paper's L_gt never contains 0, so Eq. 3
agrees unless a token has no bytes). A prediction holding lone surrogates (from `tokens.token_text`) is
encoded with its escaped bytes restored, any other surrogate as its UTF-8-style bytes, so encoding never
raises. Samples without a prediction get 0 in the dense variants (there is no first token to score).
"""
import codecs
from typing import Sequence

import torch


def _encode_surrogates(error: UnicodeEncodeError) -> tuple[bytes, int]:
    """U+DC80..U+DCFF back to the raw byte they escape (errors="surrogateescape"); other surrogates as
    their 3-byte form ("surrogatepass"), which never occurs in valid UTF-8 text."""
    restored = bytearray()
    for char in error.object[error.start:error.end]:
        code_point = ord(char)
        restored += bytes([code_point - 0xDC00]) if 0xDC80 <= code_point <= 0xDCFF else char.encode(
            "utf-8", "surrogatepass")
    return bytes(restored), error.end


codecs.register_error("rpt_reward_surrogates", _encode_surrogates)


def encode_utf8(text: str) -> bytes:
    """The UTF-8 bytes of `text`; never raises (lone surrogates handled as described in the module doc)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "rpt_reward_surrogates")


def count_matched_tokens(prediction_bytes: bytes, continuation_token_bytes: Sequence[bytes]) -> tuple[int, bool]:
    """How many leading continuation tokens the prediction reproduces in full, and whether the prediction
    ends exactly there (the Eq. 3 condition: ȳ is a prefix of x̄ ending on a token boundary)."""
    if not prediction_bytes:
        return 0, False
    position = 0
    for matched, piece in enumerate(continuation_token_bytes):
        # False for a differing byte and for a prediction that stops inside this token
        if not prediction_bytes.startswith(piece, position):
            return matched, False
        position += len(piece)
        if position == len(prediction_bytes):
            return matched + 1, True
    return len(continuation_token_bytes), False  # the prediction runs past the continuation


def prefix_match_reward(prediction: str | None, continuation_token_bytes: Sequence[bytes]) -> float:
    """Eq. 3: 1.0 iff the prediction's UTF-8 bytes equal a prefix of the concatenated continuation bytes that
    ends on a token boundary, else 0.0. None (no prediction) and "" score 0.0."""
    if not prediction:
        return 0.0
    return 1.0 if count_matched_tokens(encode_utf8(prediction), continuation_token_bytes)[1] else 0.0


def first_token_match(first_token_ids: Sequence[int | None], target_token_ids: Sequence[int]) -> torch.Tensor:
    """(N,) bool: the prediction's first token equals x_t; False where there is no prediction (None)."""
    return torch.tensor([first is not None and first == target
                         for first, target in zip(first_token_ids, target_token_ids, strict=True)], dtype=torch.bool)


def dense_rewards(match: torch.Tensor, first_token_probs: torch.Tensor) -> torch.Tensor:
    """Appendix A dense reward. match (N,) bool, first_token_probs (N,) P(y[0] | x_<t) -> (N,) float32:
    1 where the first token is x_t, else its probability."""
    return torch.where(match, 1.0, first_token_probs.float())  # (N,)


def conditional_dense_rewards(match: torch.Tensor, first_token_probs: torch.Tensor, group_size: int,
                              penalty: float = 0.0) -> torch.Tensor:
    """Appendix A conditional dense reward. match (N,) bool, first_token_probs (N,), N = B*G with the G
    samples of a context contiguous -> (N,) float32: the dense reward in groups with at least one correct
    first token, -penalty for every sample of the other groups."""
    dense = dense_rewards(match, first_token_probs).view(-1, group_size)  # (B, G)
    group_has_correct = match.view(-1, group_size).any(dim=1, keepdim=True)  # (B, 1)
    return torch.where(group_has_correct, dense, -float(penalty)).reshape(-1)  # (N,)
