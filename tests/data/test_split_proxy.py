"""`split_proxy`: held-out documents (the easy/medium/hard buckets) scored by a second model of the policy's
vocabulary, training documents by the proxy, as the paper (1.5B filters training positions, 14B buckets the
validation ones). Each pair shares a tokenizer and differs in weights; every stored entropy must be the one
its own model gives on a direct `score_documents` call, and the manifest must name both models."""
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from rpt.data.entropy import score_documents
from rpt.data.prepare import prepare
from rpt.data.prompts import special_prefix_ids
from rpt.data.samples_io import describe_split_scorer, read_manifest
from rpt.model import build_tiny_qwen2, load_model, load_tokenizer


@pytest.fixture(scope="module")
def short_corpus(omni_math_path, tmp_path_factory):
    """The first 10 OmniMATH records cut to 200 characters of problem and of solution (~100 tokens a
    document: longer than the scoring windows below, cheap at Qwen2's vocabulary)."""
    records = [json.loads(line) for line in omni_math_path.read_text().splitlines()[:10]]
    path = tmp_path_factory.mktemp("corpus") / "omni_short.jsonl"
    path.write_text("".join(json.dumps({"problem": r["problem"][:200], "solution": r["solution"][:200]}) + "\n"
                            for r in records))
    return path


def perturbed_copy(model_dir, out_dir, seed: int = 1, scale: float = 0.5):
    """The model of `model_dir` with Gaussian noise of `scale` x each tensor's std added, saved with the same
    tokenizer: same vocabulary, different entropies."""
    model = load_model(model_dir)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * parameter.std() * scale)
    model.save_pretrained(out_dir)
    load_tokenizer(model_dir).save_pretrained(out_dir)
    return out_dir


def check_scored_by(out, proxy_dir, split_dir, tokenizer):
    """Every document's stored entropies equal its own scorer's, and differ from the other model's."""
    manifest = read_manifest(out)
    prefix_ids = special_prefix_ids(tokenizer)
    models = {"train": load_model(proxy_dir).eval(), "heldout": load_model(split_dir).eval()}
    windows = {"train": manifest["scoring_window"], "heldout": manifest["split_scoring_window"]}
    rows = [row for path in sorted((out / "docs").glob("chunk-*.parquet")) for row in pq.read_table(path).to_pylist()]
    assert {row["split"] for row in rows} == {"train", "heldout"}
    for row in rows:
        stored = np.array(row["entropy"], dtype=np.float32)
        own, other = (row["split"], "heldout" if row["split"] == "train" else "train")
        expected = score_documents(models[own], [row["token_ids"]], prefix_ids, window=windows[own])[0]
        np.testing.assert_allclose(stored, expected, atol=1e-5, equal_nan=True)
        by_other = score_documents(models[other], [row["token_ids"]], prefix_ids, window=windows[other])[0]
        assert np.nanmax(np.abs(stored - by_other)) > 1e-3, row["doc_id"]  # 100x the tolerance above
    assert manifest["proxy"]["path"] == str(proxy_dir.resolve())
    assert manifest["split_proxy"]["path"] == str(split_dir.resolve())
    for key in ("model_type", "num_parameters"):  # the same architecture with other weights
        assert manifest["proxy"][key] == manifest["split_proxy"][key]
    assert describe_split_scorer(manifest).startswith(f"held-out splits scored by {split_dir.resolve()} (")
    assert f"training proxy: {proxy_dir.resolve()}" in describe_split_scorer(manifest)
    return manifest


def test_stories_proxy_with_a_second_stories_model(short_corpus, stories_dir, stories_tokenizer, tmp_path):
    split_dir = perturbed_copy(stories_dir, tmp_path / "stories_perturbed")
    out = tmp_path / "data"
    prepare(short_corpus, stories_dir, out, split_proxy=split_dir, heldout_docs=3, min_context=8, max_context=48,
            docs_per_chunk=4, progress=False)
    manifest = check_scored_by(out, stories_dir, split_dir, stories_tokenizer)
    assert manifest["docs"] == {"train": 7, "heldout": 3}
    args = json.loads((out / "prepare_args.json").read_text())
    assert args["split_proxy"] == manifest["split_proxy"]  # a rerun with another split proxy is refused
    with pytest.raises(ValueError, match="other arguments"):
        prepare(short_corpus, stories_dir, out, heldout_docs=3, min_context=8, max_context=48, docs_per_chunk=4,
                progress=False)


def test_tiny_qwen2_proxy_with_a_second_tiny_qwen2(short_corpus, tiny_qwen2_dir, assets_dir, qwen2_tokenizer,
                                                    tmp_path):
    split_dir = build_tiny_qwen2(tmp_path / "tiny_qwen2_seed1", assets_dir / "tokenizers" / "qwen2", seed=1)
    out = tmp_path / "data"
    prepare(short_corpus, tiny_qwen2_dir, out, split_proxy=split_dir, max_docs=4, heldout_docs=2, min_context=8,
            max_context=64, docs_per_chunk=4, progress=False)
    check_scored_by(out, tiny_qwen2_dir, split_dir, qwen2_tokenizer)


def test_split_proxy_with_another_vocabulary_is_refused_before_scoring(short_corpus, stories_dir, tiny_qwen2_dir,
                                                                        tmp_path):
    with pytest.raises(ValueError, match="split proxy .* different vocabularies"):
        prepare(short_corpus, stories_dir, tmp_path / "out", split_proxy=tiny_qwen2_dir, heldout_docs=3,
                progress=False)
    assert not (tmp_path / "out").exists()


def test_without_split_proxy_the_proxy_scores_every_split(tiny_data_dir):
    manifest = read_manifest(tiny_data_dir)
    assert manifest["split_proxy"] == manifest["proxy"]
    assert manifest["split_scoring_window"] == manifest["scoring_window"]
    assert describe_split_scorer(manifest).endswith("(the training proxy)")
