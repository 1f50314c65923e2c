"""Model and tokenizer loading of both fixtures; a missing path is a clear error, never a download."""
import pytest
import torch

from rpt.model import load_model, load_tokenizer


def test_stories260k_loads_and_continues_a_story(stories_dir, stories_tokenizer):
    model = load_model(stories_dir)
    assert sum(p.numel() for p in model.parameters()) == 292_800
    ids = stories_tokenizer("Once upon a time", return_tensors="pt").input_ids
    out = model.eval().generate(ids, max_new_tokens=12, do_sample=False)
    text = stories_tokenizer.decode(out[0], skip_special_tokens=True)
    assert text.startswith("Once upon a time, there was a little girl named Lily")  # assets/README.md


def test_tiny_qwen2_fixture(tiny_qwen2_dir, qwen2_tokenizer):
    model = load_model(tiny_qwen2_dir)
    tokenizer = load_tokenizer(tiny_qwen2_dir)
    assert model.config.head_dim == 32  # vLLM's CPU attention needs >= 32
    assert tokenizer("Hello world").input_ids == [9707, 1879] == qwen2_tokenizer("Hello world").input_ids
    logits = model(torch.tensor([[9707, 1879]])).logits
    assert logits.shape == (1, 2, len(tokenizer))


def test_dtype_and_meta(stories_dir):
    bf16 = load_model(stories_dir, dtype="bfloat16")
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    meta = load_model(stories_dir, device="meta")
    assert {p.device.type for p in meta.parameters()} == {"meta"}


def test_missing_paths_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        load_model(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="tokenizer directory not found"):
        load_tokenizer("Qwen/Qwen2-7B")  # a hub id is not a local directory
