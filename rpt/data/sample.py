"""One next-token-reasoning sample: a context x_<t and its ground-truth continuation x_>=t (Section 3.1)."""
from dataclasses import dataclass


@dataclass
class Sample:
    doc_id: int  # index of the source document in corpus order
    position: int  # t: index in the document's token ids of the first continuation token
    context_ids: list[int]  # x_<t, left-truncated to the max prompt length
    continuation_ids: list[int]  # x_>=t to the end of the document (or a cap), what the reward compares against
    entropy: float | None = None  # proxy model's top-16 entropy at position t (nats), None if unscored


@dataclass
class Question:
    question_id: int  # index among the kept questions, in file order
    problem: str
    answers: list[str]  # reference answers; a response matching any of them is correct
    source: str  # "file:line"


@dataclass
class ChoiceQuestion:
    question_id: int  # index among the kept questions, in file order
    question: str
    options: list[str]
    answer_index: int  # 0-based: the correct option
    category: str
    source: str  # "file:line"
