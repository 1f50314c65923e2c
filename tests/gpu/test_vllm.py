"""vLLM alone on one GPU with the trainer's exact engine arguments (tests/gpu/vllm_check.py): KV cache size,
seeded generation, sleep frees memory, weights-only wake + reload of perturbed weights + prefix reset changes
the outputs, and log-probs vs an HF bf16 forward."""
import sys
from pathlib import Path

import pytest

from tests.gpu.conftest import needs_cuda, run_json

pytestmark = [pytest.mark.gpu, needs_cuda]
BF16_LOGPROB_MAX = 0.5  # vLLM's bf16 kernels vs HF's bf16 forward: a few bf16 ulps of the logits
BF16_LOGPROB_MEAN = 0.05


@pytest.fixture(scope="module")
def report(gpu_model, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("vllm_gpu") / "report.json"
    return run_json([sys.executable, str(Path(__file__).with_name("vllm_check.py")), str(gpu_model), str(out)], out,
                    timeout=600)


def test_kv_cache_is_sized_from_the_utilization(report):
    assert report["kv_cache_tokens"] > 0
    # vLLM's budget 0.5 x GPU holds its weights, workspace and KV cache
    assert report["free_before_engine_gib"] - report["free_awake_gib"] > report["weights_gib"] + report["kv_cache_gib"]


def test_seeded_generation_is_reproducible_and_logprobs_match_hf(report):
    assert report["seeded_reproducible"]
    assert report["distinct_samples"] > 1
    assert report["logprob_max_diff"] < BF16_LOGPROB_MAX and report["logprob_mean_diff"] < BF16_LOGPROB_MEAN


def test_sleep_frees_weights_and_kv_cache_and_weights_only_wake_keeps_the_cache_released(report):
    freed = report["free_asleep_gib"] - report["free_before_sleep_gib"]
    assert freed > 0.9 * (report["weights_gib"] + report["kv_cache_gib"])
    woke_weights = report["free_asleep_gib"] - report["free_weights_only_gib"]
    assert 0.8 * report["weights_gib"] < woke_weights < report["weights_gib"] + 0.5 * report["kv_cache_gib"]
    assert report["free_woken_gib"] < report["free_weights_only_gib"] - 0.8 * report["kv_cache_gib"]


def test_pushed_weights_change_outputs_and_match_hf(report):
    assert report["greedy_changed_after_push"]
    assert report["pushed_logprob_max_diff"] < BF16_LOGPROB_MAX
    assert report["pushed_logprob_mean_diff"] < BF16_LOGPROB_MEAN
