"""Load a causal LM and its tokenizer from a local directory, and build the tiny models the tests use.

Nothing here downloads: a path that is not a local directory is an error (HF_HUB_OFFLINE is set as well).
"""
import os
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.disable_progress_bar()  # per-shard bars on every rank drown the training log

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _require_dir(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what} directory not found: '{path}' (rpt loads local HF directories only)")
    if not (path / "config.json").exists() and what == "model":
        raise FileNotFoundError(f"'{path}' has no config.json: not an HF model directory")
    return path


def load_tokenizer(path: str | Path):
    return AutoTokenizer.from_pretrained(_require_dir(path, "tokenizer"))


def load_model(path: str | Path, dtype: str = "float32", attn_implementation: str = "sdpa",
               device: str | torch.device = "cpu"):
    """An HF causal LM in train mode with weights in `dtype`; device="meta" builds the structure only
    (for big models: rank 0 loads, the others receive the weights by broadcast, see rpt/fsdp.py)."""
    path = _require_dir(path, "model")
    if str(device) == "meta":
        config = AutoConfig.from_pretrained(path)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=DTYPES[dtype],
                                                     attn_implementation=attn_implementation)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype],
                                                     attn_implementation=attn_implementation).to(device)
    model.train()
    return model


def build_tiny_qwen2(out_dir: str | Path, tokenizer_dir: str | Path, seed: int = 0, hidden_size: int = 64,
                     num_layers: int = 2, num_heads: int = 2, num_kv_heads: int = 1) -> Path:
    """A randomly initialised Qwen2ForCausalLM with the real Qwen2 tokenizer, saved as an HF directory.

    head_dim = hidden_size / num_heads = 32 by default: vLLM's CPU attention accepts head_dim >= 32, so the
    same fixture serves the transformers and vLLM engines."""
    from transformers import Qwen2Config

    out_dir = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
        head_dim=hidden_size // num_heads,
        max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir

