"""End to end: corpus -> scored shards -> manifest, with the real stories260K proxy on a slice of OmniMATH.

One in-process run is the reference; a 2-rank torchrun run and a killed-then-resumed run must reproduce it
bit for bit (every process uses one thread, so the kernels and batch shapes are the same)."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from tests.conftest import REPO, run_torchrun

from rpt.data.prepare import KILL_AFTER_CHUNKS_ENV, prepare
from rpt.data.samples_io import read_samples

SCRIPT = REPO / "launch" / "prepare_data.py"
OPTIONS = {"heldout_docs": 4, "min_context": 16, "continuation_tokens": 4, "max_context": 48,
           "docs_per_chunk": 3, "batch_tokens": 1024, "threshold": 1.0}
BAD_LINES = [b'{"problem": "broken', b'{"problem": "no solution field"}', b'{"problem": "\xff", "solution": "x"}']


def cli_args(corpus, proxy, out):
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in OPTIONS.items()]
    return ["--corpus", str(corpus), "--proxy", str(proxy), "--out", str(out), "--max-bad-fraction=0.3", *flags]


@pytest.fixture(scope="module")
def corpus(omni_math_path, tmp_path_factory):
    """The first 16 OmniMATH records with three bad records planted at lines 3, 8 and 13."""
    lines = omni_math_path.read_bytes().splitlines()[:16]
    for line_number, bad in zip((3, 8, 13), BAD_LINES):
        lines.insert(line_number - 1, bad)
    path = tmp_path_factory.mktemp("corpus") / "omni_slice.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def prepare_single_threaded(corpus, proxy, out, **overrides):
    """prepare() in this process with one thread, as each torchrun worker runs (OMP_NUM_THREADS=1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return prepare(corpus, proxy, out, max_bad_fraction=0.3, progress=False, **{**OPTIONS, **overrides})
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(corpus, stories_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    return out, prepare_single_threaded(corpus, stories_dir, out)


def read_output(out):
    shards = sorted((out / "docs").glob("chunk-*.parquet"))
    return [pq.read_table(path).to_pylist() for path in shards], json.loads((out / "manifest.json").read_text())


def test_manifest_counts_match_brute_force(reference, corpus):
    out, manifest = reference
    shards, written = read_output(out)
    assert written == manifest
    docs = [row for shard in shards for row in shard]
    assert [d["doc_id"] for d in docs] == list(range(16)) and len(shards) == math.ceil(16 / 3)
    assert sum(d["split"] == "heldout" for d in docs) == 4 == manifest["docs"]["heldout"]
    thresholds = {"train": 1.0, "easy": 0.5, "medium": 1.0, "hard": 1.5}
    for split, threshold in thresholds.items():
        wanted = "train" if split == "train" else "heldout"
        count = sum(1 for d in docs if d["split"] == wanted for t, e in enumerate(d["entropy"])
                    if t >= 16 and e is not None and not math.isnan(e) and e > threshold)
        assert manifest["samples"][split] == count == len(read_samples(out, split)), split
    assert manifest["positions_scored"] == sum(len(d["token_ids"]) for d in docs)
    for sample in read_samples(out, "hard")[::50]:
        ids = next(d["token_ids"] for d in docs if d["doc_id"] == sample.doc_id)
        assert sample.context_ids == ids[max(0, sample.position - 48):sample.position]  # left-truncated
        assert sample.continuation_ids == ids[sample.position:sample.position + 4]


def test_bad_records_are_named_in_the_manifest(reference, corpus):
    _, manifest = reference
    skipped = manifest["skipped_records"]
    assert skipped["records_read"] == 19
    assert [entry[:2] for entry in skipped["entries"]] == [
        [f"{corpus}:3", "invalid_json"], [f"{corpus}:8", "missing_field"], [f"{corpus}:13", "invalid_utf8"]]


def test_two_ranks_write_the_same_output_as_one(reference, corpus, stories_dir, tmp_path):
    out = tmp_path / "two_ranks"
    run_torchrun(SCRIPT, cli_args(corpus, stories_dir, out), nproc=2)
    assert read_output(out) == read_output(reference[0])


def test_killed_run_resumes_to_the_same_output(reference, corpus, stories_dir, tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", KILL_AFTER_CHUNKS_ENV: "2"}
    command = [sys.executable, str(SCRIPT), *cli_args(corpus, stories_dir, out)]
    killed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert len(list((out / "docs").glob("chunk-*.parquet"))) == 2 and not (out / "manifest.json").exists()
    (out / "docs" / "chunk-000002.parquet.tmp999").write_bytes(b"half-written")  # as a kill mid-write leaves
    (out / "manifest.json.tmp998").write_text("{")
    prepare_single_threaded(corpus, stories_dir, out)  # the rerun, in this process to save a launch
    assert read_output(out) == read_output(reference[0])
    assert not list(out.glob("**/*.tmp[0-9]*")), "stray temporary files of the killed run were left behind"


def test_rerun_is_a_no_op_and_other_arguments_are_refused(reference, corpus, stories_dir):
    out, manifest = reference
    assert prepare_single_threaded(corpus, stories_dir, out) == manifest
    with pytest.raises(ValueError, match="other arguments"):
        prepare_single_threaded(corpus, stories_dir, out, threshold=0.7)


def test_too_many_bad_records_stop_the_run_before_scoring(reference, corpus, stories_dir, tmp_path):
    with pytest.raises(ValueError, match="3 of 19 records are bad"):
        prepare(corpus, stories_dir, tmp_path / "out", max_bad_fraction=0.1, progress=False, **OPTIONS)
    assert not (tmp_path / "out" / "docs").exists()
    assert not (tmp_path / "out" / "prepare_args.json").exists()  # or the relaxed rerun would be refused
    prepare_single_threaded(corpus, stories_dir, tmp_path / "out")  # max_bad_fraction 0.3
    assert read_output(tmp_path / "out") == read_output(reference[0])


def test_corpus_edited_between_a_killed_run_and_its_rerun_is_refused(corpus, stories_dir, tmp_path):
    edited = tmp_path / "corpus.jsonl"
    edited.write_bytes(corpus.read_bytes())
    out = tmp_path / "out"
    prepare_single_threaded(edited, stories_dir, out)
    (out / "manifest.json").unlink()  # as a kill before the manifest leaves it
    (out / "docs" / "chunk-000005.parquet").unlink()
    text = edited.read_bytes()
    edited.write_bytes(text.replace(b"Let", b"LET", 1))  # same path, same size, other content
    assert edited.stat().st_size == len(text)
    with pytest.raises(ValueError, match=r"other arguments \(.*prepare_args.json: corpus differ\)"):
        prepare_single_threaded(edited, stories_dir, out)


PREPARE_LOCK_HOLDER = """
import sys, time
from rpt.run_dir import RunDirLock
lock = RunDirLock(sys.argv[1], setting="--out")
print("locked", flush=True)
time.sleep(60)
"""


def test_second_prepare_into_a_directory_in_use_is_refused_and_deletes_nothing(corpus, stories_dir, tmp_path):
    """A job writing `out` holds its lock; a second prepare must stop before it takes the first job's
    half-written files for a killed run's strays and deletes them."""
    out = tmp_path / "out"
    (out / "docs").mkdir(parents=True)
    in_flight = out / "docs" / "chunk-000000.parquet.tmp4242"  # the first job's write in progress
    in_flight.write_bytes(b"being written")
    holder = subprocess.Popen([sys.executable, "-c", PREPARE_LOCK_HOLDER, str(out)], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RuntimeError, match=rf"in use by another job \(pid {holder.pid} .*choose another --out"):
            prepare_single_threaded(corpus, stories_dir, out)
        assert in_flight.read_bytes() == b"being written"
        assert not (out / "prepare_args.json").exists()
    finally:
        holder.kill()  # the kernel drops the flock with the process
        holder.wait()


@pytest.mark.parametrize("flag, value", [("--docs-per-chunk", "0"), ("--top-k", "0"), ("--threshold", "nan"),
                                         ("--threshold", "inf"), ("--continuation-tokens", "0"),
                                         ("--max-bad-fraction", "1.5"), ("--max-context", "-1"),
                                         ("--heldout-docs", "-3")])
def test_cli_refuses_out_of_range_values_naming_the_flag(flag, value, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("prepare_data_cli", SCRIPT)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    required = ["--corpus", "c.jsonl", "--proxy", "p", "--out", "o"]
    assert cli.parse_args(required).top_k == 16
    with pytest.raises(SystemExit):
        cli.parse_args(required + [flag, value])
    assert f"argument {flag}: must be" in capsys.readouterr().err


def test_entropies_on_disk_are_the_proxy_scores(reference, stories_dir, stories_tokenizer):
    from rpt.data.entropy import topk_entropy
    from rpt.model import load_model

    shards, _ = read_output(reference[0])
    doc = shards[0][1]
    model = load_model(stories_dir).eval()
    ids = doc["token_ids"][:48]  # inside the first scoring window: the full left context
    with torch.no_grad():
        expected = topk_entropy(model(torch.tensor([[1] + ids])).logits[0, :-1], 16).numpy()
    np.testing.assert_allclose(np.array(doc["entropy"][:48]), expected, atol=1e-5)
    assert stories_tokenizer.decode(doc["token_ids"]).startswith(doc_text_start(doc["source"]))


def doc_text_start(source):
    path, line = source.rsplit(":", 1)
    with open(path, "rb") as file:
        record = json.loads(file.read().splitlines()[int(line) - 1])
    return record["problem"][:20]


def test_proxy_with_another_vocabulary_is_refused(corpus, stories_dir, assets_dir, tmp_path):
    with pytest.raises(ValueError, match="different vocabularies"):
        prepare(corpus, stories_dir, tmp_path / "out", tokenizer=assets_dir / "tokenizers" / "qwen2", **OPTIONS)
