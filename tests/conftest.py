"""Fixtures shared by the whole suite: the real tokenizers and stories260K from ../shared/data, and a tiny
random Qwen2 built once per session with the real Qwen2 tokenizer (head_dim 32, so vLLM's CPU attention
accepts it). Tests that need shared data skip with a clear reason where it is absent."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = Path(os.environ.get("RPT_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set RPT_SHARED_DATA to the shared/data directory)")
    return path


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared asset missing: {path}")
    return path


@pytest.fixture(scope="session")
def qwen2_tokenizer(shared_data):
    from rpt.model import load_tokenizer

    return load_tokenizer(_need(shared_data / "tokenizers" / "qwen2"))


@pytest.fixture(scope="session")
def r1_tokenizer(shared_data):
    from rpt.model import load_tokenizer

    return load_tokenizer(_need(shared_data / "tokenizers" / "deepseek_r1_distill_qwen"))


@pytest.fixture(scope="session")
def stories_dir(shared_data) -> Path:
    return _need(shared_data / "models" / "stories260K")


@pytest.fixture(scope="session")
def stories_tokenizer(stories_dir):
    from rpt.model import load_tokenizer

    return load_tokenizer(stories_dir)


@pytest.fixture(scope="session")
def omni_math_path(shared_data) -> Path:
    return _need(shared_data / "omni_math_rule" / "omni_math_rule.jsonl")


@pytest.fixture(scope="session")
def tiny_qwen2_dir(shared_data, tmp_path_factory) -> Path:
    from rpt.model import build_tiny_qwen2

    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny_qwen2"), _need(shared_data / "tokenizers" / "qwen2"))


def run_torchrun(script: str | Path, args: list[str], nproc: int = 2, timeout: int = 300, env: dict | None = None):
    """Run `torchrun --nproc_per_node=nproc script args` on CPU/gloo; fail the test with its output."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **(env or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
           str(script), *args]
    result = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if result.returncode != 0:
        pytest.fail(f"torchrun failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}")
    return result


@pytest.fixture(scope="session")
def tiny_data_dir(omni_math_path, stories_dir, tmp_path_factory) -> Path:
    """A small prepared samples directory: 24 OmniMATH documents scored by stories260K (the tiny default's
    pipeline, cut down)."""
    from rpt.data.prepare import prepare

    out = tmp_path_factory.mktemp("tiny_data")
    prepare(omni_math_path, stories_dir, out, max_docs=24, heldout_docs=4, max_context=64, docs_per_chunk=8,
            progress=False)
    return out
