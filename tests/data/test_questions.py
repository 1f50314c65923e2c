"""Question/answer readers on the real OmniMATH-Rule and MATH-500 files, Skywork-OR1's schema (jsonl and
parquet written here), bad-record accounting, the R1 math prompt and the resumable question stream."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rpt.data.corpus import BadRecordReport
from rpt.data.prompts import MATH_INSTRUCTION, build_question_prompt_ids
from rpt.data.questions import SKYWORK_OR1_FIELDS, QuestionStream, drop_long_questions, load_questions, read_questions


def test_omni_math_rule_and_math500(omni_math_path, assets_dir):
    questions, report = load_questions(omni_math_path)
    lines = omni_math_path.read_text().splitlines()  # 2,821 in the full file, 301 in the assets/ slice
    assert len(questions) == len(lines) and report.num_bad == 0  # duplicates are kept: a question set is chosen
    assert questions[0].answers == ["115440"] and questions[0].source.endswith("omni_math_rule.jsonl:1")
    first_record = json.loads(omni_math_path.read_text().splitlines()[0])
    assert questions[0].problem == first_record["problem"]
    math500, _ = load_questions(assets_dir / "math500" / "test.jsonl", max_questions=10)
    assert len(math500) == 10 and math500[0].answers == [r"\left( 3, \frac{\pi}{2} \right)"]


def skywork_records():
    return [
        {"data_source": "numina", "prompt": [{"role": "system", "content": "x"}, {"role": "user", "content": "1+1?"}],
         "reward_model": {"ground_truth": json.dumps(["2"]), "style": "rule"}},
        {"prompt": [{"role": "user", "content": "Name two roots."}],
         "reward_model": {"ground_truth": json.dumps(["1", "-1"]), "style": "rule"}},
        {"prompt": "Plain text problem", "reward_model": {"ground_truth": "[1, 2)", "style": "rule"}},
        {"prompt": [{"role": "assistant", "content": "no user turn"}], "reward_model": {"ground_truth": "1"}},
        {"prompt": [{"role": "user", "content": "no answer"}], "reward_model": {"style": "rule"}},
    ]


def test_skywork_schema_jsonl_and_parquet(tmp_path):
    records = skywork_records()
    jsonl = tmp_path / "skywork.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    parquet = tmp_path / "skywork.parquet"
    pq.write_table(pa.Table.from_pylist([{**r, "prompt": json.dumps(r["prompt"])} for r in records[:2]]), parquet)
    report = BadRecordReport()
    questions = list(read_questions([jsonl], SKYWORK_OR1_FIELDS, report=report))
    assert [(q.problem, q.answers) for q in questions] == [
        ("1+1?", ["2"]), ("Name two roots.", ["1", "-1"]), ("Plain text problem", ["[1, 2)"])]
    assert report.entries == [(f"{jsonl}:4", "field_not_text", "prompt"),
                              (f"{jsonl}:5", "missing_field", "reward_model.ground_truth")]
    # a parquet struct column is read as a nested dict; the prompt column here holds JSON text, read verbatim
    from_parquet = list(read_questions(parquet, SKYWORK_OR1_FIELDS))
    assert [q.answers for q in from_parquet] == [["2"], ["1", "-1"]]
    assert from_parquet[0].source == f"{parquet}:1"


def test_bad_records_are_counted_and_too_many_raise(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_bytes(b'{"problem": "p1", "answer": "1"}\n[1, 2]\n{"problem": "p3"}\n{"problem": "", "answer": "1"}\n'
                     b'{"problem": "p5", "answer": 5}\n{"problem": "p6", "answer": true}\nnot json\n\xff\n')
    report = BadRecordReport()
    questions = list(read_questions(path, report=report))
    assert [(q.problem, q.answers) for q in questions] == [("p1", ["1"]), ("p5", ["5"])]
    assert [(source.rsplit(":", 1)[1], kind) for source, kind, _ in report.entries] == [
        ("2", "not_an_object"), ("3", "missing_field"), ("4", "empty_text"), ("6", "field_not_text"),
        ("7", "invalid_json"), ("8", "invalid_utf8")]
    with pytest.raises(ValueError, match="6 of 8 records are bad"):
        load_questions(path)
    with pytest.raises(ValueError, match="must map exactly 'problem' and 'answer'"):
        list(read_questions(path, {"problem": "problem"}))


def test_r1_math_prompt(r1_tokenizer, stories_tokenizer):
    ids = build_question_prompt_ids(r1_tokenizer, "What is 1+1?")
    text = r1_tokenizer.decode(ids)
    assert text == ("<｜begin▁of▁sentence｜><｜User｜>What is 1+1?\n" + MATH_INSTRUCTION + "<｜Assistant｜><think>\n")
    # the instruction is not repeated; without chat: BOS + the text (stories260K has no chat template)
    assert build_question_prompt_ids(r1_tokenizer, "Q?\n" + MATH_INSTRUCTION) == build_question_prompt_ids(
        r1_tokenizer, "Q?")
    plain = build_question_prompt_ids(stories_tokenizer, "Q?", chat=False)
    assert plain == [stories_tokenizer.bos_token_id] + stories_tokenizer.encode(
        "Q?\n" + MATH_INSTRUCTION, add_special_tokens=False)
    with pytest.raises(ValueError, match="no chat template"):
        build_question_prompt_ids(stories_tokenizer, "Q?")


def test_question_stream_shards_epochs_and_resumes(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps({"problem": f"p{i}", "answer": str(i)}) + "\n" for i in range(5)))
    questions, _ = load_questions(path)
    single = QuestionStream(questions, seed=3)
    walk = [q.question_id for q in single.next_batch(10)]
    assert sorted(walk[:5]) == sorted(walk[5:]) == list(range(5)) and walk[:5] != walk[5:]  # two shuffled epochs
    ranks = [QuestionStream(questions, rank=r, world_size=2, seed=3) for r in range(2)]
    batches = [[q.question_id for q in stream.next_batch(2)] for stream in ranks]
    assert [batches[0][0], batches[1][0], batches[0][1], batches[1][1]] == walk[:4]
    resumed = QuestionStream(questions, seed=3)  # a 2-rank checkpoint resumed in one process
    resumed.load_state_dict(ranks[0].state_dict())
    assert [q.question_id for q in resumed.next_batch(6)] == walk[4:10]


def test_long_questions_are_dropped_whole(assets_dir, r1_tokenizer):
    questions, _ = load_questions(assets_dir / "math500" / "test.jsonl", max_questions=20)
    lengths = [len(build_question_prompt_ids(r1_tokenizer, q.problem)) for q in questions]
    limit = sorted(lengths)[10]
    kept, dropped = drop_long_questions(questions, r1_tokenizer, limit)
    assert [q.question_id for q in kept] == [q.question_id for q, n in zip(questions, lengths) if n <= limit]
    assert len(kept) + len(dropped) == 20 and len(kept) >= 11
