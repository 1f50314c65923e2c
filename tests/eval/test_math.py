"""Math accuracy (Table 2's column) on scripted responses with hand-computed accuracy and pass@k."""
import pytest

from rpt.data.prompts import build_question_prompt_ids
from rpt.data.sample import Question
from rpt.eval.math import evaluate_math
from tests.eval.test_mcq import ScriptedEngine


def test_accuracy_and_pass_at_k(r1_tokenizer):
    questions = [Question(0, "1/2 as a decimal?", ["0.5"], "q:1"), Question(1, "Roots of x^2=1?", ["1", "-1"], "q:2"),
                 Question(2, "2+2?", ["4"], "q:3")]
    scripts = [["<think>a</think>\\boxed{\\frac{1}{2}}", "<think>a</think>\\boxed{0.4}", "\\boxed{0.5}"],  # 1 of 3
               ["<think>a</think>\\boxed{-1}", "<think>a</think>\\boxed{1}", "<think>a</think>\\boxed{1}"],  # 3 of 3
               ["<think>a</think>\\boxed{5}", "<think>a</think>", "<think>a</think>\\boxed{22}"]]  # 0 of 3
    engine = ScriptedEngine(r1_tokenizer, {tuple(build_question_prompt_ids(r1_tokenizer, q.problem)): s
                                           for q, s in zip(questions, scripts)})
    result, records = evaluate_math(r1_tokenizer, engine, questions, num_samples=3, pass_k=(1, 2, 3))
    assert result["acc"] == pytest.approx((1 / 3 + 1 + 0) / 3)
    assert result["pass@1"] == pytest.approx(result["acc"])
    assert result["pass@2"] == pytest.approx((1 - 1 / 3 + 1 + 0) / 3)  # 1 - C(2,2)/C(3,2) for one correct of 3
    assert result["pass@3"] == pytest.approx(2 / 3)
    assert result["num_questions"] == 3 and result["verify_timeouts"] == 0
    assert [r["rewards"] for r in records] == [[1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="pass@k needs"):
        evaluate_math(r1_tokenizer, engine, questions, num_samples=3, pass_k=(4,))
