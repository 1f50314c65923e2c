"""The prepared-data directory: shards of scored documents, a manifest, and the readers the trainer and the
evaluator use.

Layout written by `rpt.data.prepare.prepare` (launch/prepare_data.py):
    manifest.json           written last: counts, thresholds, lengths, tokenizer identity, the identity of
                            the models that scored the training (`proxy`) and held-out (`split_proxy`)
                            documents, the skipped-record report. Its presence means the directory is complete.
    prepare_args.json       the arguments of the run, checked when a killed run is resumed
    docs/chunk-NNNNNN.parquet   one row per document: doc_id, split ("train" or "heldout"), source
                            ("file:line"), token_ids list<int32>, entropy list<float32> (one per token)

Samples are not stored one by one (a context of up to 4,096 tokens per position would make the data
quadratic in document length); they are cut from the documents on read, at the positions that
`select_positions` keeps: split "train" = train documents with entropy > the training threshold;
"easy" / "medium" / "hard" = held-out documents with entropy > 0.5 / 1.0 / 1.5 (nested, Section 4 of the
paper). A sample's continuation is the rest of its document (Eq. 3's x_>=t) unless the data was prepared with
a cap (`continuation_tokens` in the manifest).
Readers hold the token ids and entropies of all documents in memory (8 bytes per corpus token).
"""
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rpt.data.corpus import make_sample
from rpt.data.entropy import select_positions
from rpt.data.sample import Sample

SPLITS = ("train", "easy", "medium", "hard")
CHUNK_SCHEMA = pa.schema([("doc_id", pa.int64()), ("split", pa.string()), ("source", pa.string()),
                          ("token_ids", pa.list_(pa.int32())), ("entropy", pa.list_(pa.float32()))])


def chunk_path(data_dir: str | Path, chunk_index: int) -> Path:
    return Path(data_dir) / "docs" / f"chunk-{chunk_index:06d}.parquet"


def write_chunk(path: Path, doc_ids: list[int], splits: list[str], sources: list[str],
                token_ids: list[list[int]], entropies: list[np.ndarray]) -> None:
    """Write one shard atomically (temporary file, then rename): a killed run leaves no half-written shard."""
    table = pa.table({"doc_id": doc_ids, "split": splits, "source": sources, "token_ids": token_ids,
                      "entropy": [e.tolist() for e in entropies]}, schema=CHUNK_SCHEMA)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + f".tmp{os.getpid()}")
    pq.write_table(table, temporary)
    os.replace(temporary, path)


@dataclass
class PreparedDocs:
    """All scored documents of a prepared directory, flattened. D documents, N tokens in all."""

    doc_ids: np.ndarray  # (D,) int64
    splits: np.ndarray  # (D,) str: "train" or "heldout"
    offsets: np.ndarray  # (D + 1,) int64: document d's tokens are [offsets[d], offsets[d + 1])
    token_ids: np.ndarray  # (N,) int32
    entropy: np.ndarray  # (N,) float32

    def tokens(self, row: int) -> np.ndarray:
        return self.token_ids[self.offsets[row]:self.offsets[row + 1]]

    def entropies(self, row: int) -> np.ndarray:
        return self.entropy[self.offsets[row]:self.offsets[row + 1]]


def read_manifest(data_dir: str | Path) -> dict:
    path = Path(data_dir) / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {data_dir} is not a finished prepared-data directory "
                                "(run launch/prepare_data.py, or rerun it to finish an interrupted run)")
    return json.loads(path.read_text())


def vocabulary_sha256(tokenizer) -> str:
    """SHA-256 of the tokenizer's (token, id) pairs: the identity of what the data's token ids mean."""
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    return hashlib.sha256(vocab.encode("utf-8")).hexdigest()


def check_vocabulary(data_dir: str | Path, tokenizer) -> None:
    """The prepared data's token ids are the policy tokenizer's: compare the vocabulary hash the manifest
    recorded with `tokenizer`'s, so a mismatch fails before a model is loaded (it would otherwise train on
    meaningless ids, or fail later on an id past the embedding)."""
    recorded = read_manifest(data_dir)["tokenizer"]
    actual = vocabulary_sha256(tokenizer)
    if recorded["vocab_sha256"] != actual:
        raise ValueError(
            f"{data_dir} was tokenized with {recorded['path']} ({recorded['vocab_size']} tokens, vocabulary sha256 "
            f"{recorded['vocab_sha256'][:16]}), but the policy tokenizer {tokenizer.name_or_path} has "
            f"{len(tokenizer)} tokens, vocabulary sha256 {actual[:16]}: prepare the data with the policy's "
            "tokenizer (launch/prepare_data.py --tokenizer) or use the policy the data was made for")


class EmptySplitError(ValueError):
    pass


def check_splits_have_samples(data_dir: str | Path, splits_by_setting: dict[str, list[str]]) -> None:
    """Every split a run reads has samples in the manifest, named by the setting that chose it: an empty or
    misspelt held-out split would otherwise stop a run at its first evaluation, possibly hours in."""
    manifest = Path(data_dir) / "manifest.json"
    counts = json.loads(manifest.read_text()).get("samples", {})
    for setting, splits in splits_by_setting.items():
        empty = [split for split in splits if not counts.get(split)]
        if empty:
            raise EmptySplitError(f"{setting}: split(s) {empty} have no samples in {manifest} "
                                  f"(its sample counts: {counts})")


def read_docs(data_dir: str | Path, num_chunks: int) -> PreparedDocs:
    """Concatenate the shards of chunks 0 .. num_chunks-1 (chunk i holds a block of consecutive doc ids)."""
    doc_ids, splits, lengths, token_ids, entropy = [], [], [], [], []
    for index in range(num_chunks):
        path = chunk_path(data_dir, index)
        if not path.exists():
            raise FileNotFoundError(f"shard {path} is missing")
        table = pq.read_table(path, schema=CHUNK_SCHEMA).combine_chunks()
        doc_ids.append(table.column("doc_id").to_numpy())
        splits += table.column("split").to_pylist()
        lengths.append(pc.list_value_length(table.column("token_ids")).to_numpy())
        token_ids.append(pc.list_flatten(table.column("token_ids")).to_numpy())
        entropy.append(pc.list_flatten(table.column("entropy")).to_numpy())
    doc_ids = np.concatenate([np.zeros(0, np.int64), *doc_ids])
    if np.any(np.diff(doc_ids) <= 0):
        raise ValueError(f"shards of {data_dir} are not in doc_id order")
    offsets = np.zeros(len(doc_ids) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(np.concatenate([np.zeros(0, np.int64), *lengths]))
    return PreparedDocs(doc_ids=doc_ids, splits=np.asarray(splits, dtype=str), offsets=offsets,
                        token_ids=np.concatenate([np.zeros(0, np.int32), *token_ids]).astype(np.int32),
                        entropy=np.concatenate([np.zeros(0, np.float32), *entropy]).astype(np.float32))


def split_positions(docs: PreparedDocs, split: str, thresholds: dict[str, float],
                    min_context: int) -> tuple[np.ndarray, np.ndarray]:
    """The samples of a split as (document rows, positions), both (S,), ordered by (doc_id, position)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}' (expected one of {SPLITS})")
    doc_split = "train" if split == "train" else "heldout"
    rows, positions = [], []
    for row in np.flatnonzero(docs.splits == doc_split):
        kept = select_positions(docs.entropies(row), thresholds[split], min_context)
        rows.append(np.full(len(kept), row, dtype=np.int64))
        positions.append(kept)
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(rows), np.concatenate(positions)


def cut_sample(docs: PreparedDocs, manifest: dict, row: int, position: int) -> Sample:
    """The sample at `position` of document row `row`, with the lengths the data was prepared with."""
    return make_sample(docs.tokens(row), position, manifest["max_context"], manifest["continuation_tokens"],
                       doc_id=int(docs.doc_ids[row]), entropy=float(docs.entropies(row)[position]))


class SampleStream:
    """An endless, deterministic, rank-sharded stream of one split's samples, resumable from a checkpoint.

    The stream is the concatenation of epochs; epoch e visits every sample once, in an order shuffled with
    (seed, e) (or in corpus order when shuffle=False). Every rank walks the same global sequence: a call to
    next_batch(k) on all ranks consumes the next k * world_size samples, rank r taking those at offsets
    r, r + world_size, ... so ranks get disjoint shares. All ranks must call next_batch with the same k.
    The state is the global position in the sequence, so a checkpoint resumes exactly, even with another
    world size."""

    def __init__(self, data_dir: str | Path, split: str = "train", rank: int = 0, world_size: int = 1,
                 seed: int = 0, shuffle: bool = True):
        self.manifest = read_manifest(data_dir)
        self.split, self.rank, self.world_size, self.seed, self.shuffle = split, rank, world_size, seed, shuffle
        self.docs = read_docs(data_dir, self.manifest["num_chunks"])
        self.rows, self.positions = split_positions(self.docs, split, self.manifest["thresholds"],
                                                    self.manifest["min_context"])
        self.num_samples = len(self.rows)
        if self.num_samples == 0:
            raise ValueError(f"split '{split}' of {data_dir} has no samples (manifest counts: "
                             f"{self.manifest['samples']})")
        self.position = 0  # global index into the endless sequence of epochs
        self._orders: dict[int, np.ndarray] = {}

    @property
    def epoch(self) -> int:
        return self.position // self.num_samples

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            if self.shuffle:
                order = np.random.Generator(np.random.PCG64([self.seed, epoch])).permutation(self.num_samples)
            else:
                order = np.arange(self.num_samples)
            self._orders = {e: o for e, o in self._orders.items() if e >= epoch - 1}  # keep at most two
            self._orders[epoch] = order
        return self._orders[epoch]

    def sample_at(self, index: int) -> Sample:
        """The sample at a split index in [0, num_samples), in corpus order."""
        return cut_sample(self.docs, self.manifest, int(self.rows[index]), int(self.positions[index]))

    def next_batch(self, batch_size: int) -> list[Sample]:
        """This rank's next batch_size samples (the global batch is batch_size * world_size)."""
        batch = []
        for step in range(batch_size):
            global_index = self.position + step * self.world_size + self.rank
            epoch, offset = divmod(global_index, self.num_samples)
            batch.append(self.sample_at(int(self._order(epoch)[offset])))
        self.position += batch_size * self.world_size
        return batch

    def state_dict(self) -> dict:
        return {"split": self.split, "seed": self.seed, "shuffle": self.shuffle, "num_samples": self.num_samples,
                "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        for key in ("split", "seed", "shuffle", "num_samples"):
            if state[key] != getattr(self, key):
                raise ValueError(f"data state was saved with {key}={state[key]!r}, this stream has "
                                 f"{getattr(self, key)!r}: not the same data or stream settings")
        self.position = int(state["position"])


def read_samples(data_dir: str | Path, split: str) -> list[Sample]:
    """All samples of a split (possibly none), ordered by (doc_id, position): the evaluator's reader."""
    manifest = read_manifest(data_dir)
    docs = read_docs(data_dir, manifest["num_chunks"])
    rows, positions = split_positions(docs, split, manifest["thresholds"], manifest["min_context"])
    return [cut_sample(docs, manifest, int(row), int(position)) for row, position in zip(rows, positions)]


def describe_split_scorer(manifest: dict) -> str:
    """Which model scored the held-out documents, and so drew the easy/medium/hard buckets, in one line for
    evaluation output. Directories prepared before `split_proxy` existed were scored by the proxy alone."""
    scorer = manifest.get("split_proxy", manifest["proxy"])
    same = " (the training proxy)" if scorer == manifest["proxy"] else f" (training proxy: {manifest['proxy']['path']})"
    return (f"held-out splits scored by {scorer['path']} ({scorer['model_type']}, "
            f"{scorer['num_parameters'] / 1e6:,.2f}M parameters){same}")
