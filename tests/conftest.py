"""Fixtures shared by the whole suite: the real tokenizers, stories260K and the OmniMATH slice vendored in
assets/ (RPT_ASSETS points the suite at another folder with the same layout, e.g. one holding the full
OmniMATH file), and a tiny random Qwen2 built once per session with the real Qwen2 tokenizer (head_dim 32, so
vLLM's CPU attention accepts it). A missing asset fails the tests that need it: a skipped test proves
nothing."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    return Path(os.environ.get("RPT_ASSETS", REPO / "assets"))


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"asset missing: {path} (vendored in the repository's assets/; RPT_ASSETS may point "
                    "at another folder of the same layout)", pytrace=False)
    return path


@pytest.fixture(scope="session")
def qwen2_tokenizer(assets_dir):
    from rpt.model import load_tokenizer

    return load_tokenizer(_need(assets_dir / "tokenizers" / "qwen2"))


@pytest.fixture(scope="session")
def r1_tokenizer(assets_dir):
    from rpt.model import load_tokenizer

    return load_tokenizer(_need(assets_dir / "tokenizers" / "deepseek_r1_distill_qwen"))


@pytest.fixture(scope="session")
def stories_dir(assets_dir) -> Path:
    return _need(assets_dir / "models" / "stories260K")


@pytest.fixture(scope="session")
def stories_tokenizer(stories_dir):
    from rpt.model import load_tokenizer

    return load_tokenizer(stories_dir)


@pytest.fixture(scope="session")
def omni_math_path(assets_dir) -> Path:
    return _need(assets_dir / "omni_math_rule" / "omni_math_rule.jsonl")


@pytest.fixture(scope="session")
def tiny_qwen2_dir(assets_dir, tmp_path_factory) -> Path:
    from rpt.model import build_tiny_qwen2

    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny_qwen2"), _need(assets_dir / "tokenizers" / "qwen2"))


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
