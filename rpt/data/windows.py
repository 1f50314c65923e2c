"""Token windows of the prepared documents for the continual next-token-prediction baseline (Table 2,
"+ Continual NTP training"): the same corpus as RPT, read from the same prepared-data directory.

What NTP trains on: every token of the train documents (the tokenizer's BOS, if any, then the document's
tokens), cut into consecutive windows of `window_tokens` predicted tokens. A window holds window_tokens + 1
ids: the first is context only, each later one is the target of the one before, and the next window starts
at the last id of this one, so every token after the first of a document is predicted exactly once per
epoch. Why documents and not RPT's filtered positions: the paper's baseline is continual pre-training "with
the standard next-token prediction objective" on the same corpus, i.e. cross-entropy on all tokens; the
entropy filter selects positions worth reasoning about, while NTP costs one forward for all positions of a
window. The budget is matched in tokens instead (launch/configs/ntp_14b.yaml).

Train windows come from "train" documents, held-out windows from "heldout" documents (the evaluator's),
so the held-out loss is measured on text the NTP run never saw.
"""
from pathlib import Path

import numpy as np

from rpt.data.samples_io import PreparedDocs, read_docs, read_manifest
from rpt.data.stream import IndexStream


def document_windows(docs: PreparedDocs, doc_split: str, window_tokens: int, prefix_length: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(document rows, window starts), both (W,), over the documents of `doc_split` ("train" or "heldout").
    Starts index the document with its prefix_length prefix ids in front; a window covers
    [start, start + window_tokens] (at most window_tokens + 1 ids) and has at least one target."""
    if window_tokens < 1:
        raise ValueError(f"window_tokens must be >= 1, got {window_tokens}")
    rows, starts = [], []
    for row in np.flatnonzero(docs.splits == doc_split):
        length = prefix_length + int(docs.offsets[row + 1] - docs.offsets[row])
        doc_starts = np.arange(0, length - 1, window_tokens, dtype=np.int64)  # each window predicts >= 1 token
        rows.append(np.full(len(doc_starts), row, dtype=np.int64))
        starts.append(doc_starts)
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(rows), np.concatenate(starts)


class WindowStream:
    """Epochs over the train (or held-out) windows of a prepared-data directory, rank-sharded and resumable
    (stream.IndexStream); items are lists of up to window_tokens + 1 token ids."""

    def __init__(self, data_dir: str | Path, window_tokens: int, prefix_ids: list[int], doc_split: str = "train",
                 rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True):
        manifest = read_manifest(data_dir)
        self.docs = read_docs(data_dir, manifest["num_chunks"])
        self.window_tokens, self.prefix_ids = window_tokens, [int(i) for i in prefix_ids]
        self.rows, self.starts = document_windows(self.docs, doc_split, window_tokens, len(self.prefix_ids))
        if len(self.rows) == 0:
            raise ValueError(f"{data_dir} has no '{doc_split}' documents to cut windows from")
        self.indices = IndexStream(len(self.rows), rank, world_size, seed, shuffle)

    @property
    def num_windows(self) -> int:
        return len(self.rows)

    @property
    def epoch(self) -> int:
        return self.indices.epoch

    def window(self, index: int) -> list[int]:
        """The token ids of window `index` (corpus order)."""
        tokens = self.prefix_ids + self.docs.tokens(int(self.rows[index])).tolist()
        start = int(self.starts[index])
        return tokens[start:start + self.window_tokens + 1]

    def next_batch(self, batch_size: int) -> list[list[int]]:
        return [self.window(i) for i in self.indices.next_indices(batch_size)]

    def state_dict(self) -> dict:
        return {"window_tokens": self.window_tokens, **self.indices.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state["window_tokens"] != self.window_tokens:
            raise ValueError(f"data state was saved with window_tokens={state['window_tokens']}, this stream has "
                             f"{self.window_tokens}")
        self.indices.load_state_dict(state)
