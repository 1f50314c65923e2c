"""Peak memory and time of token_logprobs (chunked, checkpointed) vs the naive log_softmax(logits).gather,
forward + backward, at the paper's vocabulary (Qwen2, V = 152,064) and an 4,096-token sequence.

Each variant runs in its own subprocess (fresh allocator, its own peak), on CPU with
MALLOC_MMAP_THRESHOLD_=65536 so that freed blocks return to the OS and the resident-set peak (VmHWM, reset
after a warm-up) reflects what the computation holds, not glibc's fragmentation. Linux only.

    python benchmarks/bench_logprobs.py                    # V=152064, T=4096, H=64, ~1 minute on 2 cores
    python benchmarks/bench_logprobs.py --tokens 1024      # smaller

Prints, per variant (naive; chunk-C: chunk_size C; chunk-C-entropy: also the entropy, in the loss), peak RSS
above the inputs (MB) and the best of --repeats forward+backward times, then the ratios to naive. The issue's goal: chunked peak <= 1/4 of naive.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rpt.grpo import token_logprobs  # noqa: E402


def naive_logprobs(hidden, weight, targets, temperature):
    logits = (hidden @ weight.T).float() / temperature  # (N, T, V)
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (N, T)


def read_status_mb(field: str) -> float:
    """VmRSS (resident now) or VmHWM (resident peak since the last reset) from /proc/self/status, in MB."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM to the current RSS (ru_maxrss cannot be reset, and would
    include start-up transients)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def forward_backward(variant: str, hidden, weight, targets, upstream) -> None:
    if variant == "naive":
        logp = naive_logprobs(hidden, weight, targets, 0.8)
    else:
        chunk_size = int(variant.split("-")[1])
        if variant.endswith("entropy"):
            logp, entropy = token_logprobs(hidden, weight, targets, 0.8, chunk_size, return_entropy=True)
            logp = logp + 0.01 * entropy
        else:
            logp = token_logprobs(hidden, weight, targets, 0.8, chunk_size)
    (logp * upstream).sum().backward()


def run_variant(variant: str, vocab: int, tokens: int, width: int, repeats: int) -> dict:
    torch.manual_seed(0)
    hidden = torch.randn(1, tokens, width, requires_grad=True)  # (N, T, H)
    weight = (torch.randn(vocab, width) * 0.02).requires_grad_()  # (V, H)
    targets = torch.randint(0, vocab, (1, tokens))  # (N, T)
    upstream = torch.randn(1, tokens)  # arbitrary per-token loss weights
    # Warm up on 4 tokens so that library workspaces and thread pools (~300 MB) are in the baseline.
    forward_backward(variant, hidden[:, :4], weight, targets[:, :4], upstream[:, :4])
    hidden.grad = weight.grad = None
    reset_peak_rss()
    baseline_mb = read_status_mb("VmRSS")
    times = []
    for _ in range(repeats):
        hidden.grad = weight.grad = None
        start = time.perf_counter()
        forward_backward(variant, hidden, weight, targets, upstream)
        times.append(time.perf_counter() - start)
    peak_mb = read_status_mb("VmHWM")
    return {"variant": variant, "peak_above_inputs_mb": peak_mb - baseline_mb, "seconds": min(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", type=int, default=152064)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default="naive,chunk-256,chunk-1024,chunk-4096,chunk-1024-entropy")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_variant(args.child, args.vocab, args.tokens, args.width, args.repeats)))
        return

    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    print(f"token_logprobs forward+backward, V={args.vocab} T={args.tokens} H={args.width} fp32, "
          f"temperature 0.8, {torch.get_num_threads()} threads, best of {args.repeats}")
    results = {}
    for variant in args.variants.split(","):
        command = [sys.executable, __file__, "--child", variant, "--vocab", str(args.vocab), "--tokens",
                   str(args.tokens), "--width", str(args.width), "--repeats", str(args.repeats)]
        output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
        results[variant] = json.loads(output.strip().splitlines()[-1])
        row = results[variant]
        print(f"  {variant:>18}: peak {row['peak_above_inputs_mb']:8.0f} MB above inputs, {row['seconds']:6.2f} s")
    if "naive" in results:
        naive = results["naive"]
        for variant, row in results.items():
            if variant != "naive":
                print(f"  {variant:>18} / naive: memory {row['peak_above_inputs_mb'] / naive['peak_above_inputs_mb']:.3f}"
                      f", time {row['seconds'] / naive['seconds']:.2f}")


if __name__ == "__main__":
    main()
