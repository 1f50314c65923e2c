"""The first hour on a GPU node: `RPT_GPU_MODEL=/models/DeepSeek-R1-Distill-Qwen-1.5B pytest -m gpu tests/gpu`.

Every test here is marked `gpu` (excluded by default, like `slow`) and skips without CUDA or without
RPT_GPU_MODEL (a local 0.5B-1.5B Qwen2 directory). Nothing here imports vllm at collection time, so a CPU
machine prints skips, not errors. Each check prints the numbers it saw (run with -s to see them on a pass).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none)")


def needs_gpus(count: int):
    return pytest.mark.skipif(torch.cuda.device_count() < count, reason=f"needs {count} CUDA GPUs")


@pytest.fixture(scope="session")
def gpu_model() -> Path:
    path = os.environ.get("RPT_GPU_MODEL", "")
    if not path:
        pytest.skip("set RPT_GPU_MODEL to a local 0.5B-1.5B Qwen2 model directory")
    if not (Path(path) / "config.json").exists():
        pytest.fail(f"RPT_GPU_MODEL={path} is not an HF model directory (no config.json)")
    return Path(path)


@pytest.fixture(scope="session")
def gpu_data(gpu_model, omni_math_path, tmp_path_factory) -> Path:
    """24 OmniMATH documents scored by the GPU model itself as the proxy (the paper used R1-Distill-1.5B)."""
    from rpt.data.prepare import prepare

    out = tmp_path_factory.mktemp("gpu_data")
    prepare(omni_math_path, gpu_model, out, max_docs=24, heldout_docs=4, max_context=256, docs_per_chunk=8,
            dtype="bfloat16", device="cuda", progress=False)
    return out


def run_json(cmd: list[str], out_file: Path, timeout: int, env: dict | None = None) -> dict:
    """Run a check script in its own process (vLLM changes process-global state), return its JSON report."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "VLLM_ENABLE_V1_MULTIPROCESSING": "0", **(env or {})}
    result = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n{result.stdout[-4000:]}\n"
                    f"{result.stderr[-8000:]}")
    report = json.loads(out_file.read_text())
    print(json.dumps(report, indent=1))
    return report


def torchrun(nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone"]
