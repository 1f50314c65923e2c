"""Multiple-choice readers (MMLU-Pro and SuperGPQA schemas) on files written here with hand-checked answers,
bad-record accounting, and the two prompts."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rpt.data.corpus import BadRecordReport
from rpt.data.mcq import load_choice_questions, read_choice_questions
from rpt.data.prompts import format_question, reasoning_prompt_ids, standard_prompt_ids
from tests.mcq_files import write_mmlu_pro, write_supergpqa


def test_both_schemas_read_the_same_questions(tmp_path):
    mmlu, _ = load_choice_questions(write_mmlu_pro(tmp_path / "mmlu.jsonl"), "mmlu_pro")
    gpqa, _ = load_choice_questions(write_supergpqa(tmp_path / "gpqa.jsonl"), "supergpqa")
    assert [q.answer_index for q in mmlu] == [q.answer_index for q in gpqa] == [1, 2, 3, 1, 1]
    assert [q.category for q in mmlu] == ["math", "biology", "other", "math", "physics"]
    assert [q.category for q in gpqa] == ["Science", "Science", "History", "Science", "Engineering"]
    assert mmlu[2].options[mmlu[2].answer_index] == "Paris" and mmlu[1].source.endswith("mmlu.jsonl:2")
    first_two_math, _ = load_choice_questions(tmp_path / "mmlu.jsonl", "mmlu_pro", max_per_category=1)
    assert [q.question_id for q in first_two_math] == [0, 1, 2, 4]  # the second math question is dropped


def test_parquet(tmp_path):
    rows = [json.loads(line) for line in write_mmlu_pro(tmp_path / "m.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet")
    from_parquet, _ = load_choice_questions(tmp_path / "m.parquet", "mmlu_pro")
    from_jsonl, _ = load_choice_questions(tmp_path / "m.jsonl", "mmlu_pro")
    assert [(q.question, q.options, q.answer_index) for q in from_parquet] == [
        (q.question, q.options, q.answer_index) for q in from_jsonl]


def test_bad_records(tmp_path):
    good = {"question": "q", "options": ["a", "b"], "answer": "A", "answer_index": 0, "category": "c"}
    rows = [good, {**good, "answer": "C"}, {**good, "answer_index": 1}, {**good, "options": ["a"]},
            {**good, "options": ["a", 2]}, {k: v for k, v in good.items() if k != "category"},
            {**good, "question": " "}]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    report = BadRecordReport()
    assert len(list(read_choice_questions(path, "mmlu_pro", report=report))) == 1
    assert [(source.rsplit(":", 1)[1], kind) for source, kind, _ in report.entries] == [
        ("2", "bad_answer"), ("3", "inconsistent_answer"), ("4", "bad_options"), ("5", "field_not_text"),
        ("6", "missing_field"), ("7", "empty_text")]
    gpqa = {"question": "q", "options": ["a", "b"], "answer": "a", "answer_letter": "B", "discipline": "d"}
    (tmp_path / "g.jsonl").write_text(json.dumps(gpqa) + "\n")
    report = BadRecordReport()
    assert not list(read_choice_questions(tmp_path / "g.jsonl", "supergpqa", report=report))
    assert report.entries[0][1] == "inconsistent_answer"
    with pytest.raises(ValueError, match="unknown multiple-choice schema"):
        list(read_choice_questions(path, "gpqa"))


def test_prompts(tmp_path, r1_tokenizer):
    question = load_choice_questions(write_mmlu_pro(tmp_path / "m.jsonl"), "mmlu_pro")[0][1]
    assert format_question(question) == ("Question: Which gas do plants take in for photosynthesis?\nOptions:\n"
                                         "A. Oxygen\nB. Nitrogen\nC. Carbon dioxide")
    assert r1_tokenizer.decode(standard_prompt_ids(r1_tokenizer, question)) == (
        "<｜begin▁of▁sentence｜>" + format_question(question) + "\nAnswer:")
    text = r1_tokenizer.decode(reasoning_prompt_ids(r1_tokenizer, question))
    assert text.startswith("<｜begin▁of▁sentence｜><｜User｜>Answer the following multiple choice question.")
    assert text.endswith("C. Carbon dioxide<｜Assistant｜><think>\n")
