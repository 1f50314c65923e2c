import math

import numpy as np
import pytest
import torch

from rpt.data.entropy import plan_windows, score_documents, select_positions, topk_entropy
from rpt.data.prompts import special_prefix_ids
from rpt.model import load_model


def entropy_by_hand(values):
    weights = [math.exp(v) for v in values]
    total = sum(weights)
    return -sum(w / total * math.log(w / total) for w in weights)


def test_topk_entropy_matches_hand_computation():
    logits = torch.tensor([[3.0, 1.0, 0.0, -2.0], [0.5, 0.5, 0.5, 0.5]])
    # k = 2: softmax over {3, 1} -> p = (e^2, 1) / (e^2 + 1)
    p = math.exp(2) / (math.exp(2) + 1)
    expected_first = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    result = topk_entropy(logits, k=2)
    assert result.shape == (2,)
    assert result[0].item() == pytest.approx(expected_first, abs=1e-6)
    assert result[1].item() == pytest.approx(math.log(2), abs=1e-6)
    # k >= V: all logits; uniform over 4 -> ln 4
    assert topk_entropy(logits, k=16)[1].item() == pytest.approx(math.log(4), abs=1e-6)
    assert topk_entropy(logits, k=16)[0].item() == pytest.approx(entropy_by_hand([3.0, 1.0, 0.0, -2.0]), abs=1e-6)


def test_topk_entropy_ignores_masked_logits_and_keeps_leading_shape():
    logits = torch.tensor([0.0, 0.0, float("-inf"), float("-inf")])
    assert topk_entropy(logits, k=4).item() == pytest.approx(math.log(2), abs=1e-6)
    generator = torch.Generator().manual_seed(0)
    batch = torch.randn(2, 3, 50, generator=generator)
    result = topk_entropy(batch, k=16)
    assert result.shape == (2, 3)
    top = sorted(batch[1, 2].tolist(), reverse=True)[:16]
    assert result[1, 2].item() == pytest.approx(entropy_by_hand(top), abs=1e-5)


def test_select_positions_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(0, 40))
        entropy = rng.uniform(0, 2.5, n).astype(np.float32)
        entropy[rng.random(n) < 0.1] = np.nan
        threshold, min_context = float(rng.uniform(0, 2)), int(rng.integers(0, 10))
        expected = [t for t in range(n) if t >= max(min_context, 1) and not math.isnan(entropy[t])
                    and entropy[t] > threshold]
        assert select_positions(entropy, threshold, min_context).tolist() == expected


def test_plan_windows_tiles_every_position_once_with_enough_context():
    for window in (2, 3, 8, 9):
        for n in range(0, 40):
            covered = []
            for start, keep_start, keep_stop in plan_windows(n, window):
                assert keep_stop - start <= window  # the window holds its kept positions' tokens
                for t in range(keep_start, keep_stop):
                    assert t - start >= min(t, window // 2)  # context of at least window // 2 tokens
                covered += range(keep_start, keep_stop)
            assert covered == list(range(n))


@pytest.fixture(scope="module")
def stories_model(stories_dir):
    return load_model(stories_dir).eval()


def naive_entropy(model, prefix, ids, t):
    """Brute force: entropy of the prediction of ids[t] from prefix + ids[:t], one full forward."""
    inputs = torch.tensor([prefix + ids[:t]])
    with torch.no_grad():
        return topk_entropy(model(inputs).logits[0, -1], 16).item()


def test_score_documents_matches_full_forward(stories_model, stories_tokenizer):
    prefix = special_prefix_ids(stories_tokenizer)
    assert prefix == [stories_tokenizer.bos_token_id]
    texts = ["Once upon a time, there was a little girl named Lily.", "The cat sat.", "Tom had a big red ball."]
    documents = [stories_tokenizer.encode(text, add_special_tokens=False) for text in texts]
    result = score_documents(stories_model, documents, prefix, window=64, batch_tokens=40, head_chunk=5)
    for ids, entropy in zip(documents, result):
        with torch.no_grad():
            full = topk_entropy(stories_model(torch.tensor([prefix + ids])).logits[0, :-1], 16)  # (n,)
        np.testing.assert_allclose(entropy, full.numpy(), atol=1e-5)


def test_score_documents_windows_match_brute_force(stories_model, stories_tokenizer):
    ids = stories_tokenizer.encode("Once upon a time, there was a little girl named Lily. She loved to play "
                                   "outside in the park with her dog.", add_special_tokens=False)
    window = 8
    prefix = [stories_tokenizer.bos_token_id]
    result = score_documents(stories_model, [ids], prefix, window=window)[0]
    for start, keep_start, keep_stop in plan_windows(len(ids), window):
        for t in range(keep_start, keep_stop):
            assert result[t] == pytest.approx(naive_entropy(stories_model, prefix, ids[start:], t - start), abs=1e-5)
    # without a prefix token nothing predicts token 0
    no_prefix = score_documents(stories_model, [ids], [], window=window)[0]
    assert np.isnan(no_prefix[0]) and not np.isnan(no_prefix[1:]).any()
    assert no_prefix[1] == pytest.approx(naive_entropy(stories_model, [], ids, 1), abs=1e-5)


def test_score_documents_with_qwen2_vocab(tiny_qwen2_dir, qwen2_tokenizer):
    model = load_model(tiny_qwen2_dir).eval()
    documents = [qwen2_tokenizer.encode("Let $x^2 + 1 = 0$. Then", add_special_tokens=False), [9707, 1879]]
    result = score_documents(model, documents, [], batch_tokens=8, head_chunk=3)
    for ids, entropy in zip(documents, result):
        with torch.no_grad():
            full = topk_entropy(model(torch.tensor([ids])).logits[0, :-1], 16).numpy()  # (n - 1,)
        np.testing.assert_allclose(entropy[1:], full, atol=1e-5)
