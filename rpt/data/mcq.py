r"""Multiple-choice questions for zero-shot evaluation (Section 4.2 of the paper, Table 3, Appendix C): MMLU-Pro
and SuperGPQA in their public schemas, read from local .jsonl/.parquet files (nothing downloads), and their
prompts.

Schemas (field names as published):
- "mmlu_pro" (TIGER-Lab/MMLU-Pro): question, options (list of up to 10 strings), answer (letter "A".."J"),
  answer_index (int), category (one of 14: biology, business, ...).
- "supergpqa" (m-a-p/SuperGPQA): question, options, answer (the option's text), answer_letter, discipline
  (one of 13: Engineering, Science, ...; the per-category unit of Appendix C's Table 6).
A record is bad (skipped and counted, with the corpus readers' `BadRecordReport`) when a field is missing,
there are fewer than 2 or more than 10 options or one is not text, the letter is outside the options, or
two answer fields disagree (`inconsistent_answer`).

Prompts:
- standard mode: the question and the lettered options as plain text after the tokenizer's BOS, ending with
  the answer cue "Answer:"; the prediction is the option letter whose token (" A", " B", ...) is most
  probable next (eval/mcq.py). No chat template: this mode measures next-token prediction.
- reasoning mode: the same question and options in the chat template's user turn with an instruction to
  put the letter in \boxed{}, the assistant turn opened with "<think>\n".

Deviations from the paper: the paper gives no prompts ("following previous work" it uses the
multiple-choice format); these are the common zero-shot forms.
"""
from pathlib import Path
from typing import Iterator

from rpt.data.corpus import BadRecordReport, list_corpus_files, read_records
from rpt.data.prompts import LETTERS
from rpt.data.sample import ChoiceQuestion

SCHEMAS = {
    "mmlu_pro": {"category": "category", "letter": "answer", "index": "answer_index", "text": None},
    "supergpqa": {"category": "discipline", "letter": "answer_letter", "index": None, "text": "answer"},
}


def _parse(record, schema: dict, question_id: int, source: str) -> tuple[str | None, str, ChoiceQuestion | None]:
    if not isinstance(record, dict):
        return "not_an_object", type(record).__name__, None
    needed = ["question", "options", schema["category"], schema["letter"]] + [
        schema[k] for k in ("index", "text") if schema[k]]
    missing = [name for name in needed if name not in record]
    if missing:
        return "missing_field", ",".join(missing), None
    question, options, category = record["question"], record["options"], record[schema["category"]]
    if not isinstance(question, str) or not isinstance(category, str):
        return "field_not_text", "question" if not isinstance(question, str) else schema["category"], None
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        return "field_not_text", "options", None
    if not 2 <= len(options) <= len(LETTERS):
        return "bad_options", f"{len(options)} options", None
    if not question.strip():
        return "empty_text", "question", None
    letter = record[schema["letter"]]
    if not isinstance(letter, str) or letter.strip() not in LETTERS[:len(options)]:
        return "bad_answer", f"{schema['letter']}={letter!r}", None
    index = LETTERS.index(letter.strip())
    if schema["index"] and record[schema["index"]] != index:
        detail = f"{schema['letter']}={letter!r}, {schema['index']}={record[schema['index']]!r}"
        return "inconsistent_answer", detail, None
    if schema["text"] and record[schema["text"]] != options[index]:
        return "inconsistent_answer", f"{schema['letter']}={letter!r} is not {schema['text']}", None
    return None, "", ChoiceQuestion(question_id, question, options, index, category, source)


def read_choice_questions(paths, schema: str, max_record_bytes: int = 1 << 20,
                          report: BadRecordReport | None = None) -> Iterator[ChoiceQuestion]:
    """Stream the good questions of MMLU-Pro- or SuperGPQA-schema files (directories expanded), in order."""
    if schema not in SCHEMAS:
        raise ValueError(f"unknown multiple-choice schema {schema!r} (expected one of {sorted(SCHEMAS)})")
    fields = SCHEMAS[schema]
    report = report if report is not None else BadRecordReport()
    paths = [paths] if isinstance(paths, (str, Path)) else paths
    columns = tuple(name for name in ["question", "options", *fields.values()] if name)
    question_id = 0
    for path in list_corpus_files(paths):
        for source, record, kind, detail in read_records(path, columns, max_record_bytes):
            report.records_read += 1
            if kind is None:
                kind, detail, question = _parse(record, fields, question_id, source)
            if kind is not None:
                report.add(source, kind, detail)
                continue
            yield question
            question_id += 1


def load_choice_questions(paths, schema: str, max_bad_fraction: float = 0.01, max_per_category: int = 0
                          ) -> tuple[list[ChoiceQuestion], BadRecordReport]:
    """All good questions (the first max_per_category of each category when > 0: Appendix C's tables use
    200 per category) and the report; raises when more than max_bad_fraction of the records were bad."""
    report = BadRecordReport()
    questions, per_category = [], {}
    for question in read_choice_questions(paths, schema, report=report):
        if max_per_category and per_category.get(question.category, 0) >= max_per_category:
            continue
        per_category[question.category] = per_category.get(question.category, 0) + 1
        questions.append(question)
    report.check(max_bad_fraction)
    if not questions:
        raise ValueError(f"no questions in {paths}:\n{report.format()}")
    return questions, report


