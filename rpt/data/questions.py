r"""Question/answer data for RLVR and math evaluation (Section 4.1 of the paper, Table 2), and its prompt.

Formats: `.jsonl` (one JSON object per line) or `.parquet`, or a directory of them (sorted by name), read
with the corpus readers' bad-record accounting (corpus.py): a bad record is skipped and counted by kind
with its `file:line` in a `BadRecordReport`, and `check()` turns too many into an error.

Fields: `fields` maps "problem" and "answer" to the record's field names, dotted for nested ones. The
default reads `problem`/`answer` (OmniMATH-Rule, MATH-500); Skywork-OR1's public files are read with
`SKYWORK_OR1_FIELDS` = {"problem": "prompt", "answer": "reward_model.ground_truth"}. Accepted values:
- problem: a string, or a list of chat messages ({"role", "content"}), whose last user message is taken;
- answer: a string, or a list of strings (any of them is correct), or a string holding a JSON list of
  strings (Skywork-OR1 writes its ground truths so); numbers are read as their decimal text.

The prompt is DeepSeek-R1's math prompt in the tokenizer's chat template, with the assistant turn opened by
"<think>\n" as in next-token reasoning (prompts.py): "{problem}\nPlease reason step by step, and put your
final answer within \boxed{}." (the sentence is not repeated when the problem already ends with it).

Deviations from the paper: the paper names its RLVR data (Skywork-OR1, 256 questions) but not its prompt;
this is the prompt the R1-Distill models were evaluated with.
"""
import json
from pathlib import Path
from typing import Iterator

from rpt.data.corpus import BadRecordReport, list_corpus_files, read_records
from rpt.data.prompts import build_question_prompt_ids
from rpt.data.sample import Question
from rpt.data.stream import IndexStream

DEFAULT_FIELDS = {"problem": "problem", "answer": "answer"}
SKYWORK_OR1_FIELDS = {"problem": "prompt", "answer": "reward_model.ground_truth"}
QUESTION_SUFFIXES = (".jsonl", ".parquet")


def _lookup(record: dict, dotted: str):
    """record["a"]["b"] for "a.b"; KeyError naming the missing part."""
    value = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(dotted)
        value = value[part]
    return value


def _problem_text(value) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # chat messages: the last user turn
        users = [m.get("content") for m in value if isinstance(m, dict) and m.get("role") == "user"]
        return users[-1] if users and isinstance(users[-1], str) else None
    return None


def _answer_texts(value) -> list[str] | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return [str(value)]
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith('["'):  # a JSON-encoded list of answers (Skywork-OR1)
            try:
                decoded = json.loads(stripped)
            except json.JSONDecodeError:
                decoded = None
            if isinstance(decoded, list) and decoded and all(isinstance(a, str) for a in decoded):
                return decoded
        return [value]
    if isinstance(value, list) and value and all(isinstance(a, (str, int, float)) for a in value):
        return [str(a) for a in value]
    return None


def check_fields(fields: dict[str, str]) -> dict[str, str]:
    """The mapping with both keys, or a ValueError naming what is wrong."""
    if set(fields) != {"problem", "answer"} or not all(isinstance(v, str) and v for v in fields.values()):
        raise ValueError(f"question fields must map exactly 'problem' and 'answer' to field names, got {fields}")
    return dict(fields)


def read_questions(paths: list[str | Path] | str | Path, fields: dict[str, str] | None = None,
                   max_record_bytes: int = 1 << 20, report: BadRecordReport | None = None) -> Iterator[Question]:
    """Stream the good questions of jsonl/parquet files (directories expanded), in file order.

    Bad records (invalid UTF-8 or JSON, not an object, a missing field, a problem that is not text or
    chat messages, an empty problem or answer, an answer that is not text/number/list of them, oversize)
    are skipped and counted in `report`. Duplicate questions are kept (a question set is small and chosen)."""
    fields = check_fields(fields or DEFAULT_FIELDS)
    report = report if report is not None else BadRecordReport()
    paths = [paths] if isinstance(paths, (str, Path)) else paths
    columns = tuple(dict.fromkeys(name.split(".")[0] for name in fields.values()))
    question_id = 0
    for path in list_corpus_files(paths):
        if path.suffix not in QUESTION_SUFFIXES:
            raise ValueError(f"{path}: questions are read from {QUESTION_SUFFIXES} files")
        for source, record, kind, detail in read_records(path, columns, max_record_bytes):
            report.records_read += 1
            if kind is None:
                kind, detail, question = _parse_question(record, fields, question_id, source, max_record_bytes)
            if kind is not None:
                report.add(source, kind, detail)
                continue
            yield question
            question_id += 1


def _parse_question(record, fields: dict[str, str], question_id: int, source: str, max_record_bytes: int
                    ) -> tuple[str | None, str, Question | None]:
    """-> (bad kind or None, detail, question)."""
    if not isinstance(record, dict):
        return "not_an_object", type(record).__name__, None
    values = {}
    for role, name in fields.items():
        try:
            values[role] = _lookup(record, name)
        except KeyError:
            return "missing_field", name, None
    problem, answers = _problem_text(values["problem"]), _answer_texts(values["answer"])
    if problem is None:
        return "field_not_text", fields["problem"], None
    if answers is None:
        return "field_not_text", fields["answer"], None
    if not problem.strip() or not any(a.strip() for a in answers):
        return "empty_text", fields["problem"] if not problem.strip() else fields["answer"], None
    if len(problem.encode("utf-8")) > max_record_bytes:
        return "oversize", f"> {max_record_bytes} bytes", None
    return None, "", Question(question_id, problem, [a for a in answers if a.strip()], source)


def load_questions(paths, fields: dict[str, str] | None = None, max_bad_fraction: float = 0.01,
                   max_questions: int = 0) -> tuple[list[Question], BadRecordReport]:
    """All good questions (the first max_questions when > 0) and the report; raises when more than
    max_bad_fraction of the records read were bad, or when none is left."""
    report = BadRecordReport()
    questions = []
    for question in read_questions(paths, fields, report=report):
        questions.append(question)
        if max_questions and len(questions) == max_questions:
            break
    report.check(max_bad_fraction)
    if not questions:
        raise ValueError(f"no questions in {paths}:\n{report.format()}")
    return questions, report


def drop_long_questions(questions: list[Question], tokenizer, max_prompt_tokens: int, chat: bool = True,
                        think_prefill: bool = True) -> tuple[list[Question], list[Question]]:
    """-> (questions whose prompt fits in max_prompt_tokens, the others). A question is never cut: a cut
    problem is another problem. Every rank computes the same split, so the stream stays in lockstep."""
    kept, dropped = [], []
    for question in questions:
        fits = len(build_question_prompt_ids(tokenizer, question.problem, chat, think_prefill)) <= max_prompt_tokens
        (kept if fits else dropped).append(question)
    return kept, dropped


class QuestionStream:
    """Epochs over a question list, rank-sharded and resumable (stream.IndexStream): RLVR's data."""

    def __init__(self, questions: list[Question], rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True):
        self.questions = questions
        self.indices = IndexStream(len(questions), rank, world_size, seed, shuffle)

    @property
    def epoch(self) -> int:
        return self.indices.epoch

    def next_batch(self, batch_size: int) -> list[Question]:
        return [self.questions[i] for i in self.indices.next_indices(batch_size)]

    def state_dict(self) -> dict:
        return self.indices.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.indices.load_state_dict(state)
