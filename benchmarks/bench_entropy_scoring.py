"""Proxy scoring (rpt.data.entropy.score_documents): positions scored per second with the tiny proxy on CPU,
and the peak memory of scoring one 4,096-token document at the Qwen2 vocabulary (V = 151,665) against the
naive topk_entropy(model(ids).logits), which holds (T, V) fp32 logits (2.5 GB).

    python benchmarks/bench_entropy_scoring.py                 # ~1 minute on 2 cores
    python benchmarks/bench_entropy_scoring.py --tokens 1024   # smaller memory case

Throughput: stories260K (292,800 parameters) on the first --docs OmniMATH documents, one thread, at a
128-token window (the tiny default) and at the model's full 2,047-token window.
Memory: a random tiny Qwen2 (hidden 64, 2 layers; the LM head dominates), each variant in its own
subprocess with MALLOC_MMAP_THRESHOLD_=65536 so that the resident-set peak (getrusage ru_maxrss) shows what
the computation holds. Prints peak RSS above the loaded model, and the ratio chunked / naive.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from rpt.data.corpus import read_documents  # noqa: E402
from rpt.data.entropy import score_documents, topk_entropy  # noqa: E402
from rpt.data.prompts import special_prefix_ids  # noqa: E402
from rpt.model import build_tiny_qwen2, load_model, load_tokenizer  # noqa: E402


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure_memory(variant: str, model_dir: str, tokens: int, head_chunk: int) -> dict:
    model = load_model(model_dir).eval()
    ids = torch.randint(0, model.config.vocab_size, (tokens,), generator=torch.Generator().manual_seed(0)).tolist()
    baseline_mb = current_rss_mb()
    start = time.perf_counter()
    if variant == "naive":
        with torch.no_grad():
            topk_entropy(model(torch.tensor([ids])).logits[0], 16)  # (T, V) logits at once
    else:
        score_documents(model, [ids], [], window=tokens, batch_tokens=tokens, head_chunk=head_chunk)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return {"variant": variant, "peak_above_model_mb": round(peak_mb - baseline_mb, 1), "seconds": round(seconds, 2)}


def measure_throughput(corpus: Path, proxy: Path, num_docs: int) -> None:
    tokenizer, model = load_tokenizer(proxy), load_model(proxy).eval()
    texts = [d.text for d, _ in zip(read_documents([corpus]), range(num_docs))]
    documents = tokenizer(texts, add_special_tokens=False)["input_ids"]
    positions = sum(len(ids) for ids in documents)
    for window in (128, model.config.max_position_embeddings - 1):
        start = time.perf_counter()
        score_documents(model, documents, special_prefix_ids(tokenizer), window=window)
        seconds = time.perf_counter() - start
        print(f"stories260K, {num_docs} docs, {positions} positions, window {window}: "
              f"{positions / seconds:,.0f} positions/s ({seconds:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--assets", default=str(REPO / "assets"), help="assets/ or a folder of the same layout")
    parser.add_argument("--docs", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--head-chunk", type=int, default=256)
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one memory variant
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.variant:
        print(json.dumps(measure_memory(args.variant, args.model_dir, args.tokens, args.head_chunk)))
        return
    assets = Path(args.assets)
    measure_throughput(assets / "omni_math_rule" / "omni_math_rule.jsonl", assets / "models" / "stories260K",
                       args.docs)
    with tempfile.TemporaryDirectory() as model_dir:
        build_tiny_qwen2(model_dir, assets / "tokenizers" / "qwen2")
        results = {}
        for variant in ("chunked", "naive"):
            command = [sys.executable, __file__, "--variant", variant, "--model-dir", model_dir,
                       "--tokens", str(args.tokens), "--head-chunk", str(args.head_chunk)]
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
            output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
            results[variant] = json.loads(output.strip().splitlines()[-1])
            print(f"T={args.tokens}, V=151665: {results[variant]}")
        ratio = results["chunked"]["peak_above_model_mb"] / results["naive"]["peak_above_model_mb"]
        print(f"peak memory chunked / naive: {ratio:.3f}")


if __name__ == "__main__":
    main()
