"""Zero-shot multiple choice (Table 3): answer-letter extraction on hand cases, standard mode against a plain
transformers forward, reasoning-mode scoring with scripted responses, the table layout. Rank invariance:
tests/eval/test_downstream_ranks.py."""
import pytest
import torch

from rpt.data.mcq import load_choice_questions
from rpt.data.prompts import standard_prompt_ids
from rpt.eval.mcq import evaluate_choice, extract_choice, format_choice_table
from rpt.model import load_model, load_tokenizer
from rpt.rollout.engine import Completion
from tests.mcq_files import write_mmlu_pro


@pytest.mark.parametrize("response, num_options, expected", [
    ("<think>it is B</think> The answer is \\boxed{C}.", 4, 2),
    ("<think></think>\\boxed{\\text{(D)}}", 4, 3),
    ("<think></think>\\boxed{B. 4}", 4, 1),
    ("<think></think>\\boxed{A} no wait \\boxed{J}", 10, 9),
    ("<think></think>\\boxed{J}", 4, None),  # not one of the options
    ("<think></think>\\boxed{Bob}", 4, None),  # a word, not a letter
    ("<think>x</think>\nSo the choice is clear.\nAnswer: C\n", 4, 2),
    ("<think>x</think>\n**Answer: (A)**", 4, 0),
    ("<think>x</think>\nAnswer: B\nActually, Answer: C is tempting", 4, 1),  # the last *line* that is an answer
    ("Answer: B", 4, None),  # no </think>
    ("<think>\\boxed{B}</think> I pick none", 4, None),  # the box is inside the thinking
])
def test_extract_choice(response, num_options, expected):
    assert extract_choice(response, num_options) == expected


@pytest.fixture(scope="module")
def mmlu_questions(tmp_path_factory):
    path = write_mmlu_pro(tmp_path_factory.mktemp("mcq") / "mmlu.jsonl")
    return path, load_choice_questions(path, "mmlu_pro")[0]


def test_standard_mode_matches_a_plain_forward(tiny_qwen2_dir, mmlu_questions):
    _, questions = mmlu_questions
    tokenizer, model = load_tokenizer(tiny_qwen2_dir), load_model(tiny_qwen2_dir)
    result, records = evaluate_choice(model, tokenizer, None, questions, "standard", batch_size=3)  # padded batches
    letter_ids = [tokenizer.convert_tokens_to_ids("Ġ" + letter) for letter in "ABCDEFGHIJ"]
    expected = []
    with torch.no_grad():
        for question in questions:  # one unpadded forward each, full logits
            logits = model(torch.tensor([standard_prompt_ids(tokenizer, question)])).logits[0, -1]  # (V,)
            expected.append("ABCDEFGHIJ"[int(logits[letter_ids[:len(question.options)]].argmax())])
    assert [r["predicted"] for r in records] == expected
    correct = [letter == "ABCDEFGHIJ"[q.answer_index] for letter, q in zip(expected, questions)]
    assert result["overall"] == pytest.approx(sum(correct) / 5) and result["num_questions"] == 5
    math = [c for c, q in zip(correct, questions) if q.category == "math"]
    assert result["categories"]["math"] == {"acc": pytest.approx(sum(math) / 2), "num_questions": 2}


class ScriptedEngine:
    """An engine whose completions are given texts (tokenized), to score known responses."""

    def __init__(self, tokenizer, texts_by_prompt: dict[tuple, list[str]]):
        self.tokenizer, self.texts_by_prompt = tokenizer, texts_by_prompt

    def generate(self, prompts, params, seeds=None):
        return [[Completion(self.tokenizer.encode(text, add_special_tokens=False), None, "length")
                 for text in self.texts_by_prompt[tuple(prompt)][:params.n]] for prompt in prompts]


def test_reasoning_mode_scores_scripted_responses(r1_tokenizer, mmlu_questions):
    from rpt.data.prompts import reasoning_prompt_ids

    _, questions = mmlu_questions
    scripts = [["<think>a</think>\\boxed{B}", "<think>a</think>\\boxed{C}"],  # answer B: 1/2
               ["<think>a</think>\nAnswer: C", "<think>a</think>\\boxed{C}"],  # answer C: 2/2
               ["no think \\boxed{D}", "<think>a</think>\\boxed{D}"],  # answer D: 1/2
               ["<think>a</think>\\boxed{A}", "<think>a</think>"],  # answer B: 0/2
               ["<think>a</think>\\boxed{B}", "<think>a</think>\\boxed{B}"]]  # answer B: 2/2
    engine = ScriptedEngine(r1_tokenizer, {tuple(reasoning_prompt_ids(r1_tokenizer, q)): s
                                           for q, s in zip(questions, scripts)})
    result, records = evaluate_choice(None, r1_tokenizer, engine, questions, "reasoning", num_samples=2)
    assert result["overall"] == pytest.approx((0.5 + 1 + 0.5 + 0 + 1) / 5)
    assert result["categories"]["math"]["acc"] == pytest.approx(0.25)  # questions 0 and 3
    assert records[3]["predicted"] == ["A", None]


def test_table_layout():
    table = format_choice_table([("standard", "R1-Distill-Qwen-14B", {"SuperGPQA": 0.32, "MMLU-Pro": 0.484}),
                                 ("reasoning", "RPT-14B", {"SuperGPQA": 0.39, "MMLU-Pro": 0.711})],
                                ["SuperGPQA", "MMLU-Pro"])
    assert table.splitlines() == [
        "|                                     | SuperGPQA | MMLU-Pro |",
        "|-------------------------------------|-----------|----------|",
        "| Standard next-token prediction mode |           |          |",
        "| R1-Distill-Qwen-14B                 | 32.0      | 48.4     |",
        "| Reasoning mode                      |           |          |",
        "| RPT-14B                             | 39.0      | 71.1     |"]
