"""One next-token-reasoning sample: a context x_<t and its ground-truth continuation x_>=t (Section 3.1)."""
from dataclasses import dataclass


@dataclass
class Sample:
    doc_id: int  # index of the source document in corpus order
    position: int  # t: index in the document's token ids of the first continuation token
    context_ids: list[int]  # x_<t, left-truncated to the max prompt length
    continuation_ids: list[int]  # x_>=t to the end of the document (or a cap), what the reward compares against
    entropy: float | None = None  # proxy model's top-16 entropy at position t (nats), None if unscored
