import json
import numpy as np
import pytest

from rpt.data.samples_io import SampleStream, chunk_path, read_samples, write_chunk

MIN_CONTEXT, MAX_CONTEXT, CONTINUATION = 2, 3, 2
THRESHOLDS = {"train": 0.5, "easy": 0.5, "medium": 1.0, "hard": 1.5}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Two shards of synthetic documents with known entropies, and a manifest as prepare writes it."""
    out = tmp_path_factory.mktemp("prepared")
    rng = np.random.default_rng(0)
    docs = []
    for doc_id in range(7):
        n = int(rng.integers(3, 12))
        entropy = rng.uniform(0, 2, n).astype(np.float32)
        entropy[0] = np.nan
        docs.append((doc_id, "heldout" if doc_id in (2, 5) else "train", list(range(1000 * doc_id, 1000 * doc_id + n)),
                     entropy))
    for chunk, members in enumerate((docs[:4], docs[4:])):
        write_chunk(chunk_path(out, chunk), [d[0] for d in members], [d[1] for d in members],
                    [f"corpus.jsonl:{d[0] + 1}" for d in members], [d[2] for d in members], [d[3] for d in members])
    manifest = {"num_chunks": 2, "thresholds": THRESHOLDS, "min_context": MIN_CONTEXT, "max_context": MAX_CONTEXT,
                "continuation_tokens": CONTINUATION, "samples": {}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out, docs


def brute_force_samples(docs, split):
    wanted = "train" if split == "train" else "heldout"
    return [(doc_id, t, ids[max(0, t - MAX_CONTEXT):t], ids[t:t + CONTINUATION])
            for doc_id, doc_split, ids, entropy in docs if doc_split == wanted
            for t in range(len(ids)) if t >= MIN_CONTEXT and entropy[t] > THRESHOLDS[split]]


@pytest.mark.parametrize("split", ["train", "easy", "medium", "hard"])
def test_read_samples_matches_brute_force(data_dir, split):
    out, docs = data_dir
    samples = read_samples(out, split)
    expected = brute_force_samples(docs, split)
    assert len(expected) > 0
    assert [(s.doc_id, s.position, s.context_ids, s.continuation_ids) for s in samples] == expected
    entropy_of = {(d[0], t): d[3][t] for d in docs for t in range(len(d[2]))}
    assert all(s.entropy == pytest.approx(float(entropy_of[(s.doc_id, s.position)])) for s in samples)


def test_difficulty_splits_are_nested(data_dir):
    out, _ = data_dir
    easy, medium, hard = ({(s.doc_id, s.position) for s in read_samples(out, split)}
                          for split in ("easy", "medium", "hard"))
    assert hard < medium < easy


def keys(batch):
    return [(s.doc_id, s.position) for s in batch]


def test_stream_epochs_cover_every_sample_once_across_ranks(data_dir):
    out, docs = data_dir
    total = len(brute_force_samples(docs, "train"))
    world_size, batch_size = 2, 3
    streams = [SampleStream(out, "train", rank=r, world_size=world_size, seed=7) for r in range(world_size)]
    seen = []
    for _ in range(4 * total):  # enough steps for several epochs
        for stream in streams:
            seen += keys(stream.next_batch(batch_size))
    # the global sequence, rank-interleaved per step, visits each sample once per epoch
    steps = [seen[i:i + world_size * batch_size] for i in range(0, len(seen), world_size * batch_size)]
    global_sequence = []
    for step in steps:
        per_rank = [step[r * batch_size:(r + 1) * batch_size] for r in range(world_size)]
        global_sequence += [per_rank[r][j] for j in range(batch_size) for r in range(world_size)]
    expected = set(keys(read_samples(out, "train")))
    for epoch in range(3):
        part = global_sequence[epoch * total:(epoch + 1) * total]
        assert len(set(part)) == total and set(part) == expected
    assert global_sequence[:total] != global_sequence[total:2 * total]  # reshuffled per epoch


def test_stream_is_deterministic_and_seeded(data_dir):
    out, _ = data_dir
    first = [keys(SampleStream(out, seed=3).next_batch(5)) for _ in range(2)]
    assert first[0] == first[1]
    assert keys(SampleStream(out, seed=4).next_batch(5)) != first[0]
    assert keys(SampleStream(out, shuffle=False).next_batch(5)) == keys(read_samples(out, "train"))[:5]


def test_stream_resumes_exactly_from_its_state(data_dir):
    out, _ = data_dir
    stream = SampleStream(out, rank=1, world_size=2, seed=1)
    for _ in range(5):
        stream.next_batch(4)
    state = stream.state_dict()
    expected = [keys(stream.next_batch(4)) for _ in range(6)]
    restored = SampleStream(out, rank=1, world_size=2, seed=1)
    restored.load_state_dict(json.loads(json.dumps(state)))  # survives serialisation
    assert [keys(restored.next_batch(4)) for _ in range(6)] == expected
    # another world size continues the same global sequence
    single = SampleStream(out, rank=0, world_size=1, seed=1)
    single.load_state_dict(state)
    continued = keys(single.next_batch(8))
    replay = [SampleStream(out, rank=r, world_size=2, seed=1) for r in range(2)]
    for s in replay:
        s.load_state_dict(state)
    pair = [keys(s.next_batch(4)) for s in replay]
    assert continued == [pair[j % 2][j // 2] for j in range(8)]
    with pytest.raises(ValueError, match="seed"):
        SampleStream(out, seed=2).load_state_dict(state)


def test_validation_split_stream_in_corpus_order(data_dir):
    out, docs = data_dir
    stream = SampleStream(out, "hard", shuffle=False)
    expected = [(d, t) for d, t, _, _ in brute_force_samples(docs, "hard")]
    assert keys(stream.next_batch(len(expected))) == expected
    assert stream.epoch == 1


def test_vocabulary_check_names_both_tokenizers(tiny_data_dir, stories_tokenizer, qwen2_tokenizer):
    from rpt.data.prepare import describe_tokenizer
    from rpt.data.samples_io import check_vocabulary, read_manifest, vocabulary_sha256

    assert read_manifest(tiny_data_dir)["tokenizer"]["vocab_sha256"] == vocabulary_sha256(stories_tokenizer)
    assert describe_tokenizer(qwen2_tokenizer)["vocab_sha256"] == vocabulary_sha256(qwen2_tokenizer)
    check_vocabulary(tiny_data_dir, stories_tokenizer)  # the tokenizer the data was made with
    with pytest.raises(ValueError) as error:
        check_vocabulary(tiny_data_dir, qwen2_tokenizer)
    message = str(error.value)
    assert "stories260K (512 tokens" in message and f"{qwen2_tokenizer.name_or_path} has {len(qwen2_tokenizer)}" in message
    assert vocabulary_sha256(stories_tokenizer)[:16] in message and vocabulary_sha256(qwen2_tokenizer)[:16] in message
