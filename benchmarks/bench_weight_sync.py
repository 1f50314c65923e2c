"""Weight sync into the co-located vLLM engine vs the bare all-gather it is built on.

A random Qwen2 of ~100M parameters (the real Qwen2 vocabulary, hidden 512, 12 layers, head_dim 64) is
sharded with FSDP2 over the ranks (rpt.fsdp.build_policy). Two timings, each the median of --repeats:
  gather: `full_tensor()` of every parameter, results dropped: the collective cost any sync must pay;
  sync:   `VLLMEngine.update_weights(rpt.fsdp.iter_full_weights(policy))`: the same gathers, streamed into
          vLLM's in-place reload (plus its per-layer re-packing on CPU) and the prefix-cache reset.
Prints both, the parameter bytes per second of each, and the ratio sync / gather (issue 7's goal: <= 1.5).

First, the gather in the engine's dtype (issue 12): `iter_full_weights(policy)` (fp32) vs
`iter_full_weights(policy, torch.bfloat16)` (each shard cast before its gather), every full tensor dropped
as it comes, as the engine's loader does: median time over --repeats and peak transient memory per rank
(the rise of peak RSS above the RSS before the stream, the peak reset through /proc/self/clear_refs; with
MALLOC_MMAP_THRESHOLD_=65536 freed blocks go back to the OS at once, so RSS follows the live tensors).
Prints both and the ratios bf16 / fp32.

    MALLOC_MMAP_THRESHOLD_=65536 torchrun --standalone --nproc_per_node=2 benchmarks/bench_weight_sync.py
                                                        # ~2 minutes on 2 cores; --no-engine: the dtype part only
    torchrun --standalone --nproc_per_node=2 benchmarks/bench_weight_sync.py --tp 2   # TP-sharded engine
"""
import argparse
import gc
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from rpt.dist import init_distributed, print0  # noqa: E402
from rpt.fsdp import build_policy, iter_full_weights  # noqa: E402
from rpt.model import build_tiny_qwen2  # noqa: E402


def time_collective(run, repeats: int) -> float:
    """Median wall time of run() over repeats, every rank starting together."""
    seconds = []
    for _ in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        run()
        dist.barrier()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def gather_all(policy) -> None:
    for param in policy.parameters():
        param.detach().full_tensor()


def _status_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def stream_full_weights(policy, dtype: torch.dtype | None, repeats: int) -> tuple[float, int]:
    """Consume iter_full_weights(policy, dtype) dropping every tensor, as a loader does -> (median seconds,
    peak transient bytes on this rank: the highest peak-RSS rise over the repeats)."""
    seconds, peaks = [], []
    for _ in range(repeats):
        gc.collect()
        dist.barrier()
        baseline = _status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        start = time.perf_counter()
        for _, tensor in iter_full_weights(policy, dtype):
            del tensor
        dist.barrier()
        seconds.append(time.perf_counter() - start)
        peaks.append((_status_kib("VmHWM") - baseline) * 1024)
    return statistics.median(seconds), max(peaks)


def compare_gather_dtypes(policy, repeats: int) -> None:
    """fp32 vs bf16 full-weight streams (issue 12): time and peak transient memory, ratios printed."""
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        print0("note: without MALLOC_MMAP_THRESHOLD_=65536 glibc keeps freed blocks and peak RSS understates "
               "the transient memory")
    stream_full_weights(policy, torch.bfloat16, 1)  # warm-up of both paths
    stream_full_weights(policy, None, 1)
    fp32_seconds, fp32_peak = stream_full_weights(policy, None, repeats)
    bf16_seconds, bf16_peak = stream_full_weights(policy, torch.bfloat16, repeats)
    largest = max(p.numel() for p in policy.parameters())
    print0(f"largest parameter: {largest / 1e6:.1f}M elements ({largest * 4 / 2**20:.0f} MiB fp32)")
    print0(f"full-weight stream fp32: {fp32_seconds:.3f} s, peak transient {fp32_peak / 2**20:.0f} MiB per rank")
    print0(f"full-weight stream bf16: {bf16_seconds:.3f} s, peak transient {bf16_peak / 2**20:.0f} MiB per rank "
           "(each shard cast before its gather)")
    print0(f"ratio bf16 / fp32: time {bf16_seconds / fp32_seconds:.2f}, peak transient memory "
           f"{bf16_peak / max(fp32_peak, 1):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", default=str(REPO / "assets" / "tokenizers" / "qwen2"))
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--tp", type=int, default=1, help="vLLM tensor-parallel size")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-engine", action="store_true", help="only the fp32 vs bf16 gather comparison")
    args = parser.parse_args()

    rank, world_size, _ = init_distributed()
    os.environ.setdefault("VLLM_CACHE_ROOT", str(Path(tempfile.gettempdir()) / "rpt_bench_vllm_cache"))
    model_dir = [None]
    if rank == 0:
        model_dir[0] = str(build_tiny_qwen2(tempfile.mkdtemp(prefix="bench_sync_"), args.tokenizer,
                                            hidden_size=args.hidden, num_layers=args.layers,
                                            num_heads=args.hidden // 64, num_kv_heads=2))
    dist.broadcast_object_list(model_dir)
    policy = build_policy(model_dir[0], "float32")
    num_params = sum(p.numel() for p in policy.parameters())
    num_bytes = sum(p.numel() * p.element_size() for p in policy.parameters())
    print0(f"model: {num_params / 1e6:.1f}M parameters ({num_bytes / 2**20:.0f} MiB fp32), {world_size} FSDP "
           f"ranks, {torch.get_num_threads()} threads per rank")
    compare_gather_dtypes(policy, args.repeats)
    if args.no_engine:
        return
    from rpt.rollout.vllm_engine import VLLMEngine

    engine = VLLMEngine(model_dir[0], eos_token_id=policy.model.config.eos_token_id, dtype="float32",
                        tensor_parallel_size=args.tp, max_model_len=256, kv_cache_memory_bytes=64 << 20,
                        enforce_eager=True, sleep_level=0)
    print0(f"vLLM TP={args.tp}")

    gather_all(policy)  # warm-up: first collectives and allocations
    engine.update_weights(iter_full_weights(policy))
    gather_seconds = time_collective(lambda: gather_all(policy), args.repeats)
    sync_seconds = time_collective(lambda: engine.update_weights(iter_full_weights(policy)), args.repeats)
    print0(f"gather (full_tensor of every parameter): {gather_seconds:.3f} s  "
           f"({num_bytes / gather_seconds / 2**30:.2f} GiB/s)")
    print0(f"sync (update_weights from the shards):   {sync_seconds:.3f} s  "
           f"({num_bytes / sync_seconds / 2**30:.2f} GiB/s)")
    print0(f"ratio sync / gather: {sync_seconds / gather_seconds:.2f}  (goal <= 1.5)")


if __name__ == "__main__":
    main()
