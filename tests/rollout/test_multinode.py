"""Multi-node on one CPU machine: two torchrun agents (`--nnodes=2 --nproc_per_node=2 --rdzv_backend=c10d`),
4 ranks, each "node" one vLLM replica of tensor_parallel_size 2 (external_launcher carves TP groups of
consecutive ranks, and torchrun gives each agent consecutive ranks). 3 steps of launch/train.py with the
tiny Qwen2 (tests/rollout/test_vllm_trainer.py's settings) must keep engine and trainer log-probs equal
(< 1e-4) and reproduce a 2-rank single-agent run: the same rollouts at step 1 (per-sample seeds, data split
by replica), the same losses and gradient norms up to FSDP's summation order.

Slow: two vLLM jobs, 6 processes in all (513 s on 2 CPU cores shared with other jobs)."""
import importlib.util
import json
import math
import os
import socket
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO, run_torchrun

pytestmark = [pytest.mark.slow, pytest.mark.vllm,
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")]
TRAIN = REPO / "launch/train.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def write_config(tmp_path, name, model_dir, data_dir) -> str:
    config = {
        "model": {"path": str(model_dir), "param_dtype": "float32", "activation_checkpointing": True},
        "data": {"path": str(data_dir), "template": "v0", "chat": True, "think_prefill": False,
                 "response_prefill": "</think>\n\\boxed{", "max_prompt_tokens": 256},
        "rollout": {"engine": "vllm", "n": 4, "max_response_tokens": 4, "kv_cache_memory_bytes": 64 << 20,
                    "enforce_eager": True, "tensor_parallel_size": 2},
        "reward": {"kind": "dense", "extraction": "raw"},
        "train": {"output_dir": str(tmp_path / name), "steps": 3, "batch_size": 4, "mini_batch_size": 4,
                  "lr": 1e-3, "grad_clip": 1.0, "save_every": 0, "micro_batch_tokens": 4096, "export_hf": False},
        "logging": {"tensorboard": False, "samples_every": 0},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def read_metrics(out_dir) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_agents_four_ranks_tp2_match_two_ranks(tiny_qwen2_dir, omni_math_path, tmp_path):
    from rpt.data.prepare import prepare

    data_dir = tmp_path / "data"
    prepare(omni_math_path, tiny_qwen2_dir, data_dir, max_docs=8, heldout_docs=2, max_context=48,
            docs_per_chunk=8, progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
           "VLLM_LOGGING_LEVEL": "WARNING", "VLLM_CACHE_ROOT": str(tmp_path / "vllm_cache")}
    port = free_port()
    agent = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=2", "--rdzv_backend=c10d",
             f"--rdzv_endpoint=localhost:{port}", "--rdzv_id=rpt-multinode", str(TRAIN),
             "--config", write_config(tmp_path, "four", tiny_qwen2_dir, data_dir)]
    agents = [subprocess.Popen(agent, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
              for _ in range(2)]
    outputs = []
    for process in agents:
        try:
            outputs.append(process.communicate(timeout=900)[0])
        except subprocess.TimeoutExpired:
            for other in agents:
                other.kill()
            pytest.fail("the two-agent run did not finish in 15 minutes")
    if any(process.returncode for process in agents):
        pytest.fail("\n\n".join(f"agent {i} exit {p.returncode}:\n{out[-6000:]}"
                                for i, (p, out) in enumerate(zip(agents, outputs))))
    run_torchrun(TRAIN, ["--config", write_config(tmp_path, "two", tiny_qwen2_dir, data_dir)], nproc=2, env=env,
                 timeout=900)

    four, two = read_metrics(tmp_path / "four"), read_metrics(tmp_path / "two")
    for name, records in (("four", four), ("two", two)):  # shown when an assertion fails
        print(name, [(r["step"], r["rollout/reward_mean"], r["train/loss"], r["train/grad_norm"],
                      r["train/mismatch_max"]) for r in records])
    assert [r["step"] for r in four] == [r["step"] for r in two] == [1, 2, 3]
    for record in four:
        assert record["train/mismatch_max"] < 1e-4, record["train/mismatch_max"]  # engine == trainer
        assert record["train/grad_norm"] > 0
    # the same contexts, per-sample seeds and weights give the same samples; the dense reward is a policy
    # forward and the loss a sum over ranks, so they agree up to 4- vs 2-way FSDP reduction order
    for a, b in zip(four, two):
        assert math.isclose(a["rollout/reward_mean"], b["rollout/reward_mean"], rel_tol=1e-4), a["step"]
        assert math.isclose(a["train/loss"], b["train/loss"], rel_tol=1e-4, abs_tol=1e-7), a["step"]
        assert math.isclose(a["train/grad_norm"], b["train/grad_norm"], rel_tol=1e-4), a["step"]
