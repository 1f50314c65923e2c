"""compute_rewards: every kind and extraction mode on hand-computed batches, the diagnostics, the argument
checks, and no exception on arbitrary responses."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rpt.reward import compute_rewards, token_bytes, token_text

CONTINUATION = [b" integers", b" to", b" itself"]


def test_prefix_match_batch_and_diagnostics():
    responses = [
        "<think>hmm</think>\n\\boxed{ integers}",  # 1 token, correct
        "</think>\\boxed{ integers to}",  # 2 tokens, correct
        "</think>\\boxed{ integ}",  # ends inside a token
        "\\boxed{ integers}",  # no </think>
        "</think> I think it is integers",  # no box
        "</think>\\boxed{ integers to itself and}",  # past the end: 3 tokens matched, then more
    ]
    rewards, diagnostics = compute_rewards(responses, [CONTINUATION] * 6, group_size=3)
    assert rewards.dtype == torch.float32 and rewards.shape == (6,)
    assert rewards.tolist() == [1, 1, 0, 0, 0, 0]
    assert diagnostics["had_think"].tolist() == [1, 1, 1, 0, 1, 1]
    assert diagnostics["had_box"].tolist() == [1, 1, 1, 0, 0, 1]
    assert diagnostics["prediction_bytes"].tolist() == [9, 12, 6, 0, 0, 23]
    assert diagnostics["matched_tokens"].tolist() == [1, 2, 0, 0, 0, 3]
    assert all(value.dtype == torch.float32 and value.shape == (6,) for value in diagnostics.values())


def test_prefill_plus_generation_is_read_as_one_response():
    prefill = "</think>\n\\boxed{"
    rewards, _ = compute_rewards([prefill + " integers}", prefill + " integers"], [CONTINUATION] * 2, group_size=2)
    assert rewards.tolist() == [1, 0]  # the second box never closes


def test_raw_mode_scores_the_text_itself(stories_tokenizer):
    continuation = token_bytes(stories_tokenizer, [265, 280, 294])  # '▁the', '▁c', 'at'
    assert continuation == [b" the", b" c", b"at"]
    responses = [token_text(stories_tokenizer, [265]), token_text(stories_tokenizer, [265, 280]),
                 stories_tokenizer.decode([265]), " the ca", "</think>\\boxed{ the}"]
    rewards, diagnostics = compute_rewards(responses, [continuation] * 5, extraction="raw", group_size=5)
    # decode() writes "the" for '▁the': the reason the loop must pass token_text in raw mode.
    assert responses[2] == "the"
    assert rewards.tolist() == [1, 1, 0, 0, 0]
    assert diagnostics["had_box"].tolist() == [0, 0, 0, 0, 1]
    assert diagnostics["matched_tokens"].tolist() == [1, 2, 0, 2, 0]  # " the ca": " the", " c", then inside "at"


def test_first_token_kind_tokenizes_the_prediction(qwen2_tokenizer):
    integers_id = qwen2_tokenizer.encode(" integers", add_special_tokens=False)[0]
    responses = ["</think>\\boxed{ integers to}", "</think>\\boxed{ integ}", "</think>\\boxed{ integers}", "none"]
    rewards, _ = compute_rewards(responses, [CONTINUATION] * 4, kind="first_token", group_size=2,
                                 target_token_ids=[integers_id] * 4, tokenizer=qwen2_tokenizer)
    # Unlike Eq. 3, " integers to" scores through its first token only; " integ" is a different token.
    assert rewards.tolist() == [1, 0, 1, 0]


def test_first_token_kind_on_sentencepiece_raw_text(stories_tokenizer):
    responses = [" the cat", "ing", " a"]
    rewards, _ = compute_rewards(responses, [[b" the"]] * 3, kind="first_token", extraction="raw", group_size=1,
                                 target_token_ids=[265, 299, 265], tokenizer=stories_tokenizer)
    assert rewards.tolist() == [1, 1, 0]  # 'ing' is 299 mid-document, not '▁' + 'ing'


def test_dense_kind():
    rewards, _ = compute_rewards(["a", "b", "c", "d"], [[b"x"]] * 4, kind="dense", extraction="raw", group_size=2,
                                 first_token_ids=[7, 8, None, 9], target_token_ids=[7, 7, 7, 7],
                                 first_token_probs=[0.9, 0.25, 0.5, 0.125])
    # correct -> 1; wrong -> P(y[0]); no prediction -> 0 whatever probability was passed
    assert rewards.tolist() == [1.0, 0.25, 0.0, 0.125]


def test_conditional_dense_kind_with_penalty():
    first = [7, 8, 8, 9, None, 8]  # group 1 (G=3) has a correct first token, group 2 none
    probs = [0.5, 0.25, 0.75, 0.5, 0.5, 0.375]
    rewards, _ = compute_rewards(["a"] * 6, [[b"x"]] * 6, kind="conditional_dense", extraction="raw", group_size=3,
                                 first_token_ids=first, target_token_ids=[7] * 6, first_token_probs=probs,
                                 penalty=0.1)
    assert torch.allclose(rewards, torch.tensor([1.0, 0.25, 0.75, -0.1, -0.1, -0.1]))
    rewards, _ = compute_rewards(["a"] * 6, [[b"x"]] * 6, kind="conditional_dense", extraction="raw", group_size=3,
                                 first_token_ids=first, target_token_ids=[7] * 6, first_token_probs=probs)
    assert rewards.tolist() == [1.0, 0.25, 0.75, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("arguments, message", [
    (dict(kind="exact"), "unknown reward kind"),
    (dict(extraction="json"), "unknown extraction"),
    (dict(group_size=3), "do not split into groups of 3"),
    (dict(kind="first_token", first_token_ids=[1, 2]), "needs target_token_ids"),
    (dict(kind="first_token", target_token_ids=[1, 2]), "needs first_token_ids or a tokenizer"),
    (dict(kind="dense", first_token_ids=[1, 2], target_token_ids=[1, 2]), "needs first_token_probs"),
])
def test_argument_errors(arguments, message):
    with pytest.raises(ValueError, match=message):
        compute_rewards(["a", "b"], [[b"a"], [b"b"]], **{"group_size": 2, **arguments})
    with pytest.raises(ValueError, match="2 responses but 1 continuations"):
        compute_rewards(["a", "b"], [[b"a"]], group_size=1)


ANY_CHARACTER = st.characters(exclude_categories=()) | st.characters(categories=["Cs"])  # lone surrogates too
RESPONSE = st.lists(st.sampled_from(["</think>", "\\boxed{", "}", "{", "\\", " a", "日"]) | st.text(ANY_CHARACTER,
                                                                                                   max_size=5),
                    max_size=10).map("".join)


@settings(max_examples=500, deadline=None)
@given(st.lists(RESPONSE, min_size=2, max_size=2), st.lists(st.binary(min_size=1, max_size=4), max_size=4),
       st.sampled_from(["boxed", "raw"]), st.sampled_from(["prefix_match", "first_token"]))
def test_never_raises_on_any_response(qwen2_tokenizer, responses, continuation, extraction, kind):
    rewards, diagnostics = compute_rewards(responses, [continuation] * 2, kind=kind, extraction=extraction,
                                           group_size=2, target_token_ids=[220, 220], tokenizer=qwen2_tokenizer)
    assert set(rewards.tolist()) <= {0.0, 1.0}
    assert (diagnostics["matched_tokens"] <= len(continuation)).all()
