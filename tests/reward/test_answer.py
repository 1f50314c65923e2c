r"""The math-verify answer reward on hand cases (issue 15): equivalent forms, sets and intervals, units and
text, wrong answers, missing box or </think>, unbalanced braces, a 100 KB response, and a pathological
expression that must time out (reward 0, counted) without breaking the verifier, also from a thread."""
import threading

import pytest

from rpt.reward import MathVerifier, answer_reward, answer_rewards


@pytest.fixture(scope="module")
def verifier():
    verifier = MathVerifier(timeout_s=20.0)  # generous: the CI machine is shared; the timeout test uses its own
    yield verifier
    verifier.close()


def respond(answer: str) -> str:
    return f"<think>\nsome reasoning {{with braces}}\n</think>\nThe answer is \\boxed{{{answer}}}."


@pytest.mark.parametrize("prediction, reference, expected", [
    (r"\frac{1}{2}", "0.5", 1.0),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\pi/2)", 1.0),
    (r"[1, 2)", r"[1,2)", 1.0),
    (r"(1, 2]", r"[1,2)", 0.0),
    (r"\{2,1\}", r"\{1,2\}", 1.0),
    (r"\{1,3\}", r"\{1,2\}", 0.0),
    ("10", r"10\text{ cm}", 1.0),
    (r"\text{Evelyn}", r"\text{Evelyn}", 1.0),
    (r"\text{Ezra}", r"\text{Evelyn}", 0.0),
    (r"(x+1)^2", "x^2+2x+1", 1.0),
    ("4", "3", 0.0),
    (r"\frac{1}{3}", "0.5", 0.0),
])
def test_hand_cases(verifier, prediction, reference, expected):
    assert answer_reward(respond(prediction), reference, verifier) == expected


def test_extraction_failures_score_zero(verifier):
    assert answer_reward(r"The answer is \boxed{3}", "3", verifier) == 0.0  # no </think>
    assert answer_reward("<think>\nx\n</think> 3", "3", verifier) == 0.0  # no box
    assert answer_reward(r"<think>\boxed{3}</think> so 4", "3", verifier) == 0.0  # the box is before </think>
    assert answer_reward(r"<think></think> \boxed{\frac{1}{2}", "0.5", verifier) == 0.0  # unbalanced braces
    assert answer_reward(r"<think></think> \boxed{3} then \boxed{4}", "3", verifier) == 0.0  # the last box counts
    assert answer_reward(r"<think></think> \boxed{ }", " ", verifier) == 0.0  # an empty answer is no answer


def test_large_response(verifier):
    response = "<think>\n" + "Let me think about it again. " * 3500 + "\n</think>\n" + r"\boxed{\dfrac{3}{4}}"
    assert len(response) > 100_000
    assert answer_reward(response, "0.75", verifier) == 1.0
    assert answer_reward(response[:50_000], "0.75", verifier) == 0.0  # cut inside the reasoning


def test_pathological_expression_times_out_and_verifier_recovers():
    verifier = MathVerifier(timeout_s=1.0)
    try:
        answer_reward(respond("1"), "2", verifier)  # start the worker outside the measured calls
        rewards, diagnostics = answer_rewards([respond(r"9^{9^{9^{9}}}"), respond(r"\frac{2}{4}")], ["1", "0.5"],
                                              verifier)
        assert rewards.tolist() == [0.0, 1.0]  # the worker was replaced after the timeout
        assert diagnostics["verify_timeout"].tolist() + diagnostics["verify_error"].tolist() == [1.0, 0.0, 0.0, 0.0]
        assert verifier.counts["timeouts"] == 1 and verifier.counts["restarts"] == 1

        # from a non-main thread, where math-verify's signal.alarm timeout cannot work
        results = []
        thread = threading.Thread(target=lambda: results.append(
            [answer_reward(respond(r"\sum_{n=1}^{10^{9}} n^{n}"), "1", verifier),
             answer_reward(respond("0.25"), r"\frac14", verifier)]))
        thread.start()
        thread.join(timeout=120)
        assert results == [[0.0, 1.0]]
        assert verifier.counts["timeouts"] == 2
    finally:
        verifier.close()


def test_diagnostics(verifier):
    rewards, diagnostics = answer_rewards([respond("2"), "no think", r"<think></think> \boxed{2", respond("3")],
                                          ["2", "2", "2", "2"], verifier)
    assert rewards.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert diagnostics["had_think"].tolist() == [1.0, 0.0, 1.0, 1.0]
    assert diagnostics["had_box"].tolist() == [1.0, 0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="2 responses but 1 answers"):
        answer_rewards(["a", "b"], ["a"], verifier)


def test_any_of_several_reference_answers(verifier):
    rewards, _ = answer_rewards([respond("7"), respond("8"), respond("7")], [["6", "7"], ["6", "7"], "7"], verifier)
    assert rewards.tolist() == [1.0, 0.0, 1.0]
