"""Environment: a CUDA build of torch the driver can run, bf16, NCCL, and vllm importable."""
import ctypes
import importlib.util

import pytest
import torch

from tests.gpu.conftest import needs_cuda

pytestmark = [pytest.mark.gpu, needs_cuda]


def driver_cuda_version() -> int:
    """The newest CUDA the installed driver supports, e.g. 12040 (the driver API's cuDriverGetVersion;
    torch exposes only the CUDA it was built with)."""
    version = ctypes.c_int()
    assert ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(version)) == 0
    return version.value


def test_torch_cuda_build_runs_on_this_driver():
    driver = driver_cuda_version()
    runtime = torch.version.cuda  # the CUDA torch was built with, e.g. "12.8"
    major, minor = (int(x) for x in runtime.split(".")[:2])
    print(f"torch {torch.__version__} built for CUDA {runtime}, driver supports {driver // 1000}."
          f"{driver % 1000 // 10}, {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}")
    assert driver >= major * 1000 + minor * 10, "the driver is older than torch's CUDA: update the driver or torch"
    x = torch.randn(256, 256, device="cuda")
    assert torch.allclose((x @ x).cpu(), x.cpu() @ x.cpu(), atol=1e-3, rtol=1e-3)


def test_bf16_and_nccl_available():
    print(f"bf16 supported: {torch.cuda.is_bf16_supported()}, nccl: {torch.distributed.is_nccl_available()}, "
          f"nccl version {torch.cuda.nccl.version()}")
    assert torch.cuda.is_bf16_supported(), "model.param_dtype=bfloat16 needs an Ampere or newer GPU"
    assert torch.distributed.is_nccl_available()


def test_vllm_imports_for_this_torch():
    assert importlib.util.find_spec("vllm") is not None, "pip install -e .[vllm]"
    import vllm
    from vllm import LLM  # noqa: F401  (the import that breaks on mismatched torchvision/torch builds)

    print(f"vllm {vllm.__version__} with torch {torch.__version__}")
    assert vllm.__version__.startswith("0.32"), "rpt/rollout/vllm_engine.py is written against vLLM 0.32"


def test_flash_attention_if_configured():
    if importlib.util.find_spec("flash_attn") is None:
        pytest.skip("flash-attn not installed: model.attn_implementation stays sdpa (docs/gpu.md)")
    import flash_attn

    print(f"flash-attn {flash_attn.__version__}")
    q = torch.randn(1, 16, 4, 64, device="cuda", dtype=torch.bfloat16)
    out = flash_attn.flash_attn_func(q, q, q, causal=True)
    reference = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), q.transpose(1, 2),
                                                                 q.transpose(1, 2), is_causal=True).transpose(1, 2)
    assert (out - reference).abs().max().item() < 2e-2
