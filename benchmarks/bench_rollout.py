"""Rollout throughput: generated tokens per second of VLLMEngine vs HFEngine on the same model and prompts.

One process, the same thread count for both engines. The model is a random Qwen2 of ~100M parameters (the
real Qwen2 vocabulary, hidden 512, 12 layers, head_dim 64); the prompts are --prompts random token
sequences of --prompt-tokens, each sampled --n times at temperature 0.8 for up to --max-tokens tokens (a
random model almost never samples EOS, so both engines generate the same number of tokens). Each engine gets
one untimed warm-up call, then --repeats timed calls on fresh prompts (the same ones for both engines).
Prints the median tokens/s of each and the ratio vLLM / HF (issue 7's goal: >= 3).

    OMP_NUM_THREADS=1 python benchmarks/bench_rollout.py     # ~2 minutes; 1 thread keeps it robust on a busy machine

HF runs first: once vLLM's CPU worker has bound its threads, it turns torch.set_num_threads into a no-op.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from rpt.model import build_tiny_qwen2, load_model  # noqa: E402
from rpt.rollout.engine import SamplingParams  # noqa: E402
from rpt.rollout.hf_engine import HFEngine  # noqa: E402


def tokens_per_second(engine, prompt_sets: list[list[list[int]]], params: SamplingParams) -> float:
    """Median generated tokens/s over prompt_sets[1:]; prompt_sets[0] warms up. Fresh prompts every call, so
    vLLM's prefix cache cannot skip a prefill that HF has to do."""
    engine.generate(prompt_sets[0], SamplingParams(n=params.n, temperature=params.temperature, max_tokens=4))
    rates = []
    for repeat, prompts in enumerate(prompt_sets[1:]):
        start = time.perf_counter()
        groups = engine.generate(prompts, SamplingParams(n=params.n, temperature=params.temperature,
                                                         max_tokens=params.max_tokens, seed=repeat))
        seconds = time.perf_counter() - start
        rates.append(sum(len(c.token_ids) for group in groups for c in group) / seconds)
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", default=str(REPO / "assets" / "tokenizers" / "qwen2"))
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    os.environ.setdefault("VLLM_CACHE_ROOT", str(Path(tempfile.gettempdir()) / "rpt_bench_vllm_cache"))
    model_dir = build_tiny_qwen2(tempfile.mkdtemp(prefix="bench_rollout_"), args.tokenizer,
                                 hidden_size=args.hidden, num_layers=args.layers, num_heads=args.hidden // 64,
                                 num_kv_heads=2)
    model = load_model(model_dir, "float32")
    config = model.config
    generator = torch.Generator().manual_seed(0)
    prompt_sets = torch.randint(0, config.vocab_size, (1 + args.repeats, args.prompts, args.prompt_tokens),
                                generator=generator).tolist()
    params = SamplingParams(n=args.n, temperature=0.8, max_tokens=args.max_tokens)
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, {args.prompts} prompts x "
          f"{args.prompt_tokens} tokens, n={args.n}, up to {args.max_tokens} new tokens, "
          f"{torch.get_num_threads()} threads")

    hf_rate = tokens_per_second(HFEngine(model, config.eos_token_id, config.pad_token_id), prompt_sets, params)
    print(f"HF generate: {hf_rate:.0f} tokens/s")
    del model

    from rpt.rollout.vllm_engine import VLLMEngine

    engine = VLLMEngine(str(model_dir), eos_token_id=config.eos_token_id, dtype="float32",
                        max_model_len=args.prompt_tokens + args.max_tokens, kv_cache_memory_bytes=256 << 20,
                        enforce_eager=True, sleep_level=0)
    vllm_rate = tokens_per_second(engine, prompt_sets, params)
    print(f"vLLM:        {vllm_rate:.0f} tokens/s ({torch.get_num_threads()} threads after vLLM's CPU binding)")
    print(f"ratio vLLM / HF: {vllm_rate / hf_rate:.1f}  (goal >= 3)")


if __name__ == "__main__":
    main()
