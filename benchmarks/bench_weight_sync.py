"""Weight sync into the co-located vLLM engine vs the bare all-gather it is built on.

A random Qwen2 of ~100M parameters (the real Qwen2 vocabulary, hidden 512, 12 layers, head_dim 64) is
sharded with FSDP2 over the ranks (rpt.fsdp.build_policy). Two timings, each the median of --repeats:
  gather: `full_tensor()` of every parameter, results dropped: the collective cost any sync must pay;
  sync:   `VLLMEngine.update_weights(rpt.fsdp.iter_full_weights(policy))`: the same gathers, streamed into
          vLLM's in-place reload (plus its per-layer re-packing on CPU) and the prefix-cache reset.
Prints both, the parameter bytes per second of each, and the ratio sync / gather (issue 7's goal: <= 1.5).

    torchrun --standalone --nproc_per_node=2 benchmarks/bench_weight_sync.py          # ~2 minutes on 2 cores
    torchrun --standalone --nproc_per_node=2 benchmarks/bench_weight_sync.py --tp 2   # TP-sharded engine
"""
import argparse
import os
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
from rpt.rollout.vllm_engine import VLLMEngine  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", default=str(REPO.parent / "shared" / "data" / "tokenizers" / "qwen2"))
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--tp", type=int, default=1, help="vLLM tensor-parallel size")
    parser.add_argument("--repeats", type=int, default=5)
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
    engine = VLLMEngine(model_dir[0], eos_token_id=policy.model.config.eos_token_id, dtype="float32",
                        tensor_parallel_size=args.tp, max_model_len=256, kv_cache_memory_bytes=64 << 20,
                        enforce_eager=True, sleep_level=0)
    num_params = sum(p.numel() for p in policy.parameters())
    num_bytes = sum(p.numel() * p.element_size() for p in policy.parameters())
    print0(f"model: {num_params / 1e6:.1f}M parameters ({num_bytes / 2**20:.0f} MiB fp32), {world_size} FSDP "
           f"ranks, vLLM TP={args.tp}, {torch.get_num_threads()} threads per rank")

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
