"""Corpus -> scored, split documents on disk (Section 3.3 of the paper): the pipeline behind launch/prepare_data.py.

1. Read the corpus once to count its good documents and report the bad ones (every rank does this; it is
   cheap next to scoring). Too many bad records is an error before any scoring starts.
2. Choose the held-out documents (a seeded sample of `heldout_docs` doc ids); the rest are for training.
   The paper's "200 held-out samples" is read as 200 documents, every position of which is a validation
   sample (evaluation draws up to N of each split): documents keep held-out text out of training.
3. Cut the documents into chunks of `docs_per_chunk` consecutive doc ids. Chunk c belongs to rank
   c % world_size, which tokenizes it with the policy tokenizer, scores every position with a model's
   top-k entropy (training documents with the proxy, held-out documents with the split proxy, which is the
   proxy unless `split_proxy` names another model), and writes docs/chunk-c.parquet atomically. Chunks
   already on disk are skipped, so a killed run resumes where it stopped; batches are formed inside a chunk
   only, so the output does not depend on the number of ranks.
4. Rank 0 counts the samples of every split and writes manifest.json (no timestamps: a resumed run writes
   the same bytes as an uninterrupted one).

The policy tokenizer's ids go into the samples; the proxy and the split proxy must use the same vocabulary
(the paper's 1.5B proxy and 14B policy share one). Re-tokenizing for a proxy with another vocabulary is out
of scope: a mismatch is an error.

The paper filters training positions with R1-Distill-Qwen-1.5B and buckets the validation positions by the
entropy of R1-Distill-Qwen-14B (Section 4): `split_proxy` is that second model; left out, the proxy
scores everything (a deviation, recorded in the manifest's `split_proxy`).
"""
import hashlib
import json
import math
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from rpt.data.corpus import BadRecordReport, file_digest, list_corpus_files, read_documents
from rpt.data.entropy import DEFAULT_TRAIN_THRESHOLD, DIFFICULTY_THRESHOLDS, TOP_K, score_documents
from rpt.data.prompts import special_prefix_ids
from rpt.data.samples_io import SPLITS, chunk_path, read_docs, split_positions, vocabulary_sha256, write_chunk
from rpt.dist import print0
from rpt.model import load_model, load_tokenizer
from rpt.run_dir import RunDirLock

MAX_REPORTED_RECORDS = 1000  # skipped records listed in the manifest (all are counted)
KILL_AFTER_CHUNKS_ENV = "RPT_PREPARE_KILL_AFTER_CHUNKS"  # test hook: SIGKILL this process after n chunks


def describe_tokenizer(tokenizer) -> dict:
    return {"path": str(Path(tokenizer.name_or_path).resolve()), "class": type(tokenizer).__name__,
            "vocab_size": len(tokenizer), "vocab_sha256": vocabulary_sha256(tokenizer)}


def describe_model(path: str | Path, model) -> dict:
    path = Path(path).resolve()
    weights = {p.name: p.stat().st_size for p in sorted(path.iterdir()) if p.suffix in (".safetensors", ".bin")}
    return {"path": str(path), "model_type": model.config.model_type,
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "config_sha256": hashlib.sha256((path / "config.json").read_bytes()).hexdigest(), "weights": weights}


def load_policy_tokenizer(proxy: str | Path, tokenizer: str | Path | None, split_proxy: str | Path | None = None):
    """The policy tokenizer (default: the proxy's); a proxy or split proxy whose tokenizer has another
    vocabulary is an error."""
    policy_tokenizer = load_tokenizer(tokenizer or proxy)
    for name, scorer in (("proxy", proxy if tokenizer is not None else None), ("split proxy", split_proxy)):
        if scorer is not None and any((Path(scorer) / file).exists() for file in ("tokenizer.json", "vocab.json",
                                                                                   "tokenizer.model")):
            if load_tokenizer(scorer).get_vocab() != policy_tokenizer.get_vocab():
                raise ValueError(f"the {name} {scorer} and the policy tokenizer {tokenizer or proxy} have different "
                                 "vocabularies; scoring re-tokenized text is not supported: use a model of the "
                                 "policy's family")
    return policy_tokenizer


def load_scorer(path: str | Path, policy_tokenizer, max_context: int, prefix_ids: list[int], dtype: str,
                device: torch.device):
    """A proxy model in eval mode and its scoring window: the policy's context length, within the positions
    the model was trained for."""
    model = load_model(path, dtype=dtype, device=device).eval()
    if model.config.vocab_size < len(policy_tokenizer):
        raise ValueError(f"{path}: vocab {model.config.vocab_size} is smaller than the tokenizer's "
                         f"{len(policy_tokenizer)}")
    window = min(max_context, getattr(model.config, "max_position_embeddings", max_context) - len(prefix_ids))
    return model, window


def prepare(corpus: str | Path | list, proxy: str | Path, out: str | Path, tokenizer: str | Path | None = None,
            fields: tuple[str, ...] = ("problem", "solution"), threshold: float = DEFAULT_TRAIN_THRESHOLD,
            heldout_docs: int = 200, max_docs: int | None = None, min_context: int = 32,
            continuation_tokens: int | None = None, max_context: int = 4096, top_k: int = TOP_K,
            docs_per_chunk: int = 64,
            batch_tokens: int = 16384, head_chunk: int = 256, max_record_bytes: int = 1 << 20,
            max_bad_fraction: float = 0.01, seed: int = 0, dtype: str = "float32",
            device: str | torch.device | None = None, progress: bool = True,
            split_proxy: str | Path | None = None) -> dict:
    """Score and split a corpus into `out` (layout: rpt/data/samples_io.py); returns the manifest.

    Runs in one process or under torchrun (each rank scores its share of chunks; an initialised process
    group is used for the barriers). Rerunning with the same arguments resumes an interrupted run, or
    returns at once if the run finished; other arguments on an existing directory are an error.
    `split_proxy` (default: `proxy`) scores the held-out documents, so it sets the easy/medium/hard buckets.
    """
    rank = dist.get_rank() if dist.is_initialized() else 0
    world_size = dist.get_world_size() if dist.is_initialized() else 1
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(out)
    skipped_files = []
    files = list_corpus_files(corpus if isinstance(corpus, (list, tuple)) else [corpus], skipped_files)
    for path, reason in skipped_files:
        print0(f"skipped {path}: {reason}")
    policy_tokenizer = load_policy_tokenizer(proxy, tokenizer, split_proxy)
    prefix_ids = special_prefix_ids(policy_tokenizer)
    model, window = load_scorer(proxy, policy_tokenizer, max_context, prefix_ids, dtype, device)
    split_model, split_window = (model, window) if split_proxy is None else load_scorer(
        split_proxy, policy_tokenizer, max_context, prefix_ids, dtype, device)

    # the content digest, not just path and size: a corpus edited between a killed run and its rerun must not
    # mix stale chunks with new ones
    args = {"corpus": [{"path": str(f.resolve()), "bytes": f.stat().st_size, "blake2b": file_digest(f)}
                       for f in files],
            "fields": list(fields), "threshold": threshold, "heldout_docs": heldout_docs, "max_docs": max_docs,
            "min_context": min_context, "continuation_tokens": continuation_tokens, "max_context": max_context,
            "top_k": top_k, "docs_per_chunk": docs_per_chunk, "batch_tokens": batch_tokens,
            "head_chunk": head_chunk, "max_record_bytes": max_record_bytes, "max_bad_fraction": max_bad_fraction,
            "seed": seed, "dtype": dtype, "tokenizer": describe_tokenizer(policy_tokenizer),
            "proxy": describe_model(proxy, model),
            "split_proxy": describe_model(proxy if split_proxy is None else split_proxy, split_model)}
    args_path = out / "prepare_args.json"
    if args_path.exists():
        saved = json.loads(args_path.read_text())
        if saved != args:
            changed = sorted(key for key in {*saved, *args} if saved.get(key) != args.get(key))
            raise ValueError(f"{out} holds a run with other arguments ({args_path}: {', '.join(changed)} differ); "
                             "use a fresh --out directory")
    if (out / "manifest.json").exists():
        print0(f"{out} is complete; nothing to do")
        return json.loads((out / "manifest.json").read_text())

    # 1. count good documents, report bad ones; a refused run leaves no prepare_args.json behind
    report = BadRecordReport()
    num_docs = sum(1 for _ in _documents(files, fields, max_record_bytes, report, max_docs))
    print0(report.format())
    report.check(max_bad_fraction)
    if num_docs <= heldout_docs:
        raise ValueError(f"{num_docs} documents cannot leave {heldout_docs} held out and any for training")
    lock = None
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        # one job per directory (held for the job's life, dropped by the kernel if it dies): a second job
        # would take the first one's half-written files below for a killed run's and delete them
        lock = RunDirLock(out, setting="--out")
        for stray in [*out.glob("*.tmp[0-9]*"), *out.glob("docs/*.tmp[0-9]*")]:
            stray.unlink()  # a write a kill interrupted (write_chunk, _write_json_atomic)
        _write_json_atomic(args_path, args)
    _barrier()

    # 2. held-out documents (paper: 200 held-out OmniMATH samples)
    heldout = set(random.Random(seed).sample(range(num_docs), heldout_docs))

    # 3. score this rank's chunks that are not on disk yet
    num_chunks = math.ceil(num_docs / docs_per_chunk)
    todo = [c for c in range(rank, num_chunks, world_size) if not chunk_path(out, c).exists()]
    kill_after = int(os.environ.get(KILL_AFTER_CHUNKS_ENV, "0"))
    bar = tqdm(total=len(todo), unit="chunk", desc="scoring", disable=not progress or rank != 0)
    positions_scored, start_time, pending = 0, time.perf_counter(), []
    todo_set = set(todo)
    for document in _documents(files, fields, max_record_bytes, None, max_docs) if todo else ():
        chunk = document.doc_id // docs_per_chunk
        if chunk in todo_set:
            pending.append(document)
        if document.doc_id == min(num_docs, (chunk + 1) * docs_per_chunk) - 1 and pending:
            texts = [d.text for d in pending]
            token_ids = policy_tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
            entropies = _score_chunk(token_ids, [d.doc_id in heldout for d in pending], (model, window),
                                     (split_model, split_window), prefix_ids, top_k, batch_tokens, head_chunk)
            write_chunk(chunk_path(out, chunk), [d.doc_id for d in pending],
                        ["heldout" if d.doc_id in heldout else "train" for d in pending],
                        [d.source for d in pending], token_ids, entropies)
            positions_scored += sum(len(ids) for ids in token_ids)
            pending = []
            todo_set.discard(chunk)
            bar.update(1)
            bar.set_postfix(positions_per_s=f"{positions_scored / (time.perf_counter() - start_time):.0f}")
            if kill_after and bar.n >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            if not todo_set:
                break
    bar.close()
    _barrier()

    # 4. manifest
    if rank == 0:
        manifest = _build_manifest(out, num_chunks, args, report, window, split_window, threshold, min_context,
                                   skipped_files)
        _write_json_atomic(out / "manifest.json", manifest)
        print0(f"wrote {out}: docs {manifest['docs']}, samples {manifest['samples']}")
        lock.release()
    _barrier()
    return json.loads((out / "manifest.json").read_text())


def _documents(files, fields, max_record_bytes, report, max_docs):
    for document in read_documents(files, tuple(fields), max_record_bytes=max_record_bytes, report=report):
        yield document
        if max_docs is not None and document.doc_id + 1 >= max_docs:
            return  # before reading another record, so the report covers exactly what was used


def _score_chunk(token_ids: list[list[int]], is_heldout: list[bool], scorer, split_scorer, prefix_ids: list[int],
                 top_k: int, batch_tokens: int, head_chunk: int) -> list[np.ndarray]:
    """Entropies of one chunk's documents: training documents by `scorer`, held-out ones by `split_scorer`,
    each a (model, window). With one model for both, the chunk is scored in one call (as before there was a
    split proxy), so its batches, and the floating-point results, do not change."""
    if split_scorer[0] is scorer[0]:
        groups = [(scorer, [True] * len(is_heldout))]
    else:
        groups = [(scorer, [not heldout for heldout in is_heldout]), (split_scorer, list(is_heldout))]
    entropies: list[np.ndarray | None] = [None] * len(token_ids)
    for (model, window), members in groups:
        rows = [row for row, member in enumerate(members) if member]
        scored = score_documents(model, [token_ids[row] for row in rows], prefix_ids, k=top_k, window=window,
                                 batch_tokens=batch_tokens, head_chunk=head_chunk) if rows else []
        for row, entropy in zip(rows, scored):
            entropies[row] = entropy
    return entropies


def _build_manifest(out: Path, num_chunks: int, args: dict, report: BadRecordReport, window: int,
                    split_window: int, threshold: float, min_context: int,
                    skipped_files: list[tuple[Path, str]]) -> dict:
    docs = read_docs(out, num_chunks)
    thresholds = {"train": threshold, **DIFFICULTY_THRESHOLDS}
    lengths = np.diff(docs.offsets)
    is_train = np.repeat(docs.splits == "train", lengths)  # (N,) per token
    train_entropy = docs.entropy[is_train & ~np.isnan(docs.entropy)]
    quantiles = (0.1, 0.25, 0.5, 0.75, 0.9)
    bad = report.to_dict()
    bad["entries"] = bad["entries"][:MAX_REPORTED_RECORDS]
    return {
        "format_version": 1,
        "num_chunks": num_chunks,
        "docs": {name: int(np.sum(docs.splits == name)) for name in ("train", "heldout")},
        "docs_without_positions": int(np.sum(lengths <= min_context)),
        "tokens": {"train": int(lengths[docs.splits == "train"].sum()),
                   "heldout": int(lengths[docs.splits == "heldout"].sum())},
        "positions_scored": int(np.sum(~np.isnan(docs.entropy))),
        "samples": {split: len(split_positions(docs, split, thresholds, min_context)[0]) for split in SPLITS},
        "thresholds": thresholds,
        "train_entropy_quantiles": {str(q): round(float(np.quantile(train_entropy, q)), 6) for q in quantiles}
        if len(train_entropy) else {},
        "min_context": min_context,
        "max_context": args["max_context"],
        "continuation_tokens": args["continuation_tokens"],
        "scoring_window": window,
        "split_scoring_window": split_window,
        "top_k": args["top_k"],
        "tokenizer": args["tokenizer"],
        "proxy": args["proxy"],  # scored the training documents (split "train")
        "split_proxy": args["split_proxy"],  # scored the held-out documents (splits easy, medium, hard)
        "skipped_records": bad,
        "skipped_files": [[str(path), reason] for path, reason in skipped_files],
    }


def _write_json_atomic(path: Path, data: dict) -> None:
    temporary = path.with_name(path.name + f".tmp{os.getpid()}")
    temporary.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    os.replace(temporary, path)


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
