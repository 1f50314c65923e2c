"""Eq. 3 on the real Qwen2 tokenizer and OmniMATH text (hand cases), and against a brute-force reference
that enumerates the token boundaries (property tests)."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpt.reward import extract_prediction, prefix_match_reward, token_bytes
from rpt.reward.prefix_match import count_matched_tokens, encode_utf8


def reference_reward(prediction: bytes, pieces: list[bytes]) -> float:
    """Eq. 3 read literally: L_gt = cumulative byte lengths; r = 1 iff ȳ == x̄[0:l] and l ∈ L_gt."""
    concatenated = b"".join(pieces)
    boundaries = {len(b"".join(pieces[:k])) for k in range(1, len(pieces) + 1)}
    length = len(prediction)
    return float(length > 0 and length in boundaries and concatenated[:length] == prediction)


def reference_matched_tokens(prediction: bytes, pieces: list[bytes]) -> int:
    """The largest k whose first k tokens are all a prefix of the prediction."""
    if not prediction:
        return 0
    return max(k for k in range(len(pieces) + 1) if prediction.startswith(b"".join(pieces[:k])))


@pytest.fixture(scope="module")
def omni_continuation(qwen2_tokenizer, omni_math_path):
    """The tokens after 'Consider pairs \\((f, g)\\) of functions from the set of nonnegative' in the first
    OmniMATH solution."""
    solution = json.loads(open(omni_math_path).readline())["solution"]
    context = "of functions from the set of nonnegative"
    start = solution.index(context) + len(context)
    ids = qwen2_tokenizer.encode(solution[start:start + 30], add_special_tokens=False)
    pieces = token_bytes(qwen2_tokenizer, ids[:3])
    assert pieces == [b" integers", b" to", b" itself"]  # read off the tokenizer by hand
    return pieces


@pytest.mark.parametrize("prediction, reward", [
    (" integers", 1.0),  # exactly the next token
    (" integers to", 1.0),  # the next 2 tokens
    (" integers to itself", 1.0),  # the next 3 tokens, all of the continuation
    ("integers", 0.0),  # the leading space is part of the token
    (" integ", 0.0),  # ends in the middle of a token
    (" integers ", 0.0),  # one byte too long: a prefix of the bytes, but not on a boundary
    (" integers t", 0.0),
    (" integers to itself such", 0.0),  # runs past the end of the continuation
    (" Integers", 0.0),  # one byte differs
    ("", 0.0),
    (None, 0.0),
])
def test_hand_cases_on_omnimath(omni_continuation, prediction, reward):
    assert prefix_match_reward(prediction, omni_continuation) == reward


def test_latex_with_nested_braces(qwen2_tokenizer, omni_math_path):
    solutions = [json.loads(line)["solution"] for line in open(omni_math_path)]
    text = solutions[3][solutions[3].index(r"\frac{64 \cdot 63}{2}"):][:40]
    pieces = token_bytes(qwen2_tokenizer, qwen2_tokenizer.encode(text, add_special_tokens=False))
    # \frac{64 \cdot 63}{2} + ... is read as '\', 'frac', '{', '6', '4', ' \', 'cdot', ' ', '6', '3', '}{', '2', '}'
    assert pieces[:13] == [b"\\", b"frac", b"{", b"6", b"4", b" \\", b"cdot", b" ", b"6", b"3", b"}{", b"2", b"}"]
    box = r"</think> The next tokens are \boxed{\frac{64 \cdot 63}{2}}"
    assert extract_prediction(box) == r"\frac{64 \cdot 63}{2}"
    assert prefix_match_reward(extract_prediction(box), pieces) == 1.0
    # `}{` is one token, so stopping after `63}` ends inside it.
    assert prefix_match_reward(extract_prediction(r"</think>\boxed{\frac{64 \cdot 63}}"), pieces) == 0.0


def test_cjk_and_emoji_split_across_tokens(qwen2_tokenizer):
    # 龘 (E9 BE 98) and 🦜 (F0 9F A6 9C) are each split over three Qwen2 tokens.
    pieces = token_bytes(qwen2_tokenizer, qwen2_tokenizer.encode(" 龘 🦜 is", add_special_tokens=False))
    assert pieces == [b" \xe9", b"\xbe", b"\x98", b" \xf0\x9f", b"\xa6", b"\x9c", b" is"]
    assert prefix_match_reward(" 龘", pieces) == 1.0  # three tokens, one character
    assert prefix_match_reward(" 龘 🦜", pieces) == 1.0
    assert prefix_match_reward(" 鱻", pieces) == 0.0  # shares the first token (E9) only
    assert prefix_match_reward(" \udce9", pieces) == 1.0  # the first token alone, as token_text writes it
    assert prefix_match_reward(" \udce9\udcbe\udc98", pieces) == 1.0  # the same bytes as " 龘"


def test_real_cjk_from_omnimath(qwen2_tokenizer, omni_math_path):
    row = next(row for row in map(json.loads, open(omni_math_path)) if 'red packet "' in row["problem"])
    start = row["problem"].index('red packet "') + len("red packet")
    pieces = token_bytes(qwen2_tokenizer, qwen2_tokenizer.encode(row["problem"][start:start + 12],
                                                                 add_special_tokens=False))
    assert pieces[:3] == [b' "', "虎".encode(), b'"(']
    assert prefix_match_reward(' "虎', pieces) == 1.0
    assert prefix_match_reward(' "虎"', pieces) == 0.0  # `"(` is one token


def test_right_answer_without_think_scores_zero(omni_continuation):
    assert prefix_match_reward(extract_prediction(r"So the answer is \boxed{ integers}"), omni_continuation) == 0.0
    assert prefix_match_reward(extract_prediction(r"</think>\boxed{ integers}"), omni_continuation) == 1.0


def test_empty_prediction_scores_zero_even_against_an_empty_token():
    assert count_matched_tokens(b"", [b"", b"a"]) == (0, False)
    assert prefix_match_reward("", [b""]) == 0.0


def test_encode_utf8_restores_escaped_bytes_and_never_raises():
    assert encode_utf8("a 龘") == "a 龘".encode()
    assert encode_utf8(" \udce9\udcbe") == b" \xe9\xbe"  # surrogate escapes of raw bytes (token_text)
    assert encode_utf8("\udc41\ud800") == b"\xed\xb1\x81\xed\xa0\x80"  # other lone surrogates: 3-byte form


@st.composite
def continuation_and_prediction(draw):
    """Random token bytes (a small alphabet, so tokens repeat and collide) and a prediction that is often
    an adversarial near-miss: a prefix ending anywhere, a prefix plus extra bytes, a prefix with one byte
    changed, or random bytes."""
    byte_tokens = st.binary(min_size=1, max_size=5) | st.lists(
        st.sampled_from([b"a", b" ", b"\xe9", b"\xbe", b"{"]), min_size=1, max_size=4).map(b"".join)
    pieces = draw(st.lists(byte_tokens, max_size=8))
    concatenated = b"".join(pieces)
    cut = draw(st.integers(0, len(concatenated)))
    kind = draw(st.sampled_from(["prefix", "longer", "changed", "random"]))
    if kind == "prefix":
        prediction = concatenated[:cut]
    elif kind == "longer":
        prediction = concatenated[:cut] + draw(st.binary(min_size=1, max_size=3))
    elif kind == "changed" and cut > 0:
        at = draw(st.integers(0, cut - 1))
        prediction = concatenated[:at] + bytes([(concatenated[at] + 1) % 256]) + concatenated[at + 1:cut]
    else:
        prediction = draw(st.binary(max_size=12))
    return pieces, prediction


def adversarial_predictions(pieces: list[bytes]) -> list[bytes]:
    """Every prefix of the true bytes (each boundary and each point inside a token), each one byte longer,
    and each with its last byte changed."""
    concatenated = b"".join(pieces)
    predictions = []
    for cut in range(len(concatenated) + 1):
        predictions += [concatenated[:cut], concatenated[:cut] + b"a", concatenated[:cut] + b"\xe9"]
        if cut:
            predictions.append(concatenated[:cut - 1] + bytes([(concatenated[cut - 1] + 1) % 256]))
    return predictions


@settings(max_examples=1500, deadline=None)
@given(continuation_and_prediction())
def test_agrees_with_brute_force_on_bytes(case):
    pieces, prediction = case
    for candidate in [prediction, *adversarial_predictions(pieces)]:  # ~50 cases per example on average
        matched, exact = count_matched_tokens(candidate, pieces)
        assert float(exact) == reference_reward(candidate, pieces)
        assert matched == reference_matched_tokens(candidate, pieces)


@settings(max_examples=1500, deadline=None)
@given(continuation_and_prediction())
def test_agrees_with_brute_force_through_text(case):
    pieces, prediction = case
    for candidate in [prediction, *adversarial_predictions(pieces)]:
        # Any bytes reach the public function as text the way token_text writes them, and come back intact.
        text = candidate.decode("utf-8", errors="surrogateescape")
        assert encode_utf8(text) == candidate
        assert prefix_match_reward(text, pieces) == reference_reward(candidate, pieces)


ANY_CHARACTER = st.characters(exclude_categories=()) | st.characters(categories=["Cs"])  # lone surrogates too


@settings(max_examples=1000, deadline=None)
@given(st.text(ANY_CHARACTER, max_size=30), st.lists(st.binary(max_size=4), max_size=6))
def test_any_text_never_raises(prediction, pieces):
    pieces = [piece for piece in pieces if piece]  # real tokens have at least one byte
    assert prefix_match_reward(prediction, pieces) == reference_reward(encode_utf8(prediction), pieces)
