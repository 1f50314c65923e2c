"""Process-group setup from torchrun's environment, in the spirit of nanoGPT / nanochat.

Under torchrun (RANK set): nccl on CUDA, gloo on CPU, one device per local rank. Without RANK: a single
process, no process group, and every helper below still works. Also here: the per-phase device memory
helpers the loop calls at its phase boundaries (`empty_cache`, `reset_peak_memory`, `memory_metrics`).
"""
import datetime
import os
import random
import resource

import numpy as np
import torch
import torch.distributed as dist


def init_distributed(timeout_minutes: float = 120.0) -> tuple[int, int, torch.device]:
    """-> (rank, world_size, device). Idempotent.

    timeout_minutes: how long a collective may wait for the other ranks before the job fails (NCCL's
    watchdog default is 10 minutes; an RPT rank that finishes generating waits in the next all-reduce
    while others still write 8k-token responses, and a 14B checkpoint save takes minutes as well)."""
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        local_rank = int(os.environ["LOCAL_RANK"])
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, device_id=device if backend == "nccl" else None,
                                timeout=datetime.timedelta(minutes=timeout_minutes))
    return dist.get_rank(), dist.get_world_size(), device


def get_rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def print0(*args, **kwargs) -> None:
    if get_rank() == 0:
        print(*args, **kwargs, flush=True)


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed Python, numpy and torch with seed + rank, so ranks draw different numbers reproducibly."""
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed + rank)


def all_reduce(tensor: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
    """Reduce a CPU tensor over all ranks and return it on the CPU (identity without a process group).

    nccl only reduces CUDA tensors, so under nccl the values take a round trip through the GPU."""
    if not dist.is_initialized():
        return tensor
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else tensor.device
    reduced = tensor.to(device)
    dist.all_reduce(reduced, op=op)
    return reduced.cpu()


def all_gather_objects(obj) -> list:
    """Every rank's picklable `obj`, in rank order, on every rank ([obj] without a process group)."""
    if not dist.is_initialized():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def reduce_metrics(values: dict[str, "torch.Tensor | float"], op=dist.ReduceOp.SUM) -> dict[str, float]:
    """Reduce a dict of scalar metrics over ranks in one collective -> {name: float}.

    Values may be device tensors accumulated without host syncs; the one sync is the final read. Sums are
    taken in float64 so counts and token totals stay exact."""
    keys = sorted(values)
    device = next((v.device for v in values.values() if isinstance(v, torch.Tensor)), torch.device("cpu"))
    stacked = torch.stack([torch.as_tensor(values[k], dtype=torch.float64, device=device).reshape(())
                           for k in keys])  # (K,)
    return dict(zip(keys, all_reduce(stacked, op).tolist()))


def empty_cache(device: torch.device) -> None:
    """Give the CUDA caching allocator's free blocks back at a phase boundary (as verl does around its
    rollout/update switches), so that the engine waking next can map them; a no-op on CPU, which has no
    caching allocator."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def reset_peak_memory(device: torch.device) -> None:
    """Start a new memory peak, so that the next `memory_metrics` reports the phase that begins here alone:
    CUDA's allocator peaks; on Linux the kernel's VmHWM, reset to the current RSS by writing 5 to
    /proc/self/clear_refs (where that file is missing or not writable the CPU peak keeps growing)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        pass


def memory_metrics(device: torch.device, phase: str) -> dict[str, float]:
    """This rank's memory during the phase that just ended, as `perf/mem_{phase}_*` metrics in GiB; the peak
    is reset afterwards (`reset_peak_memory`), so each phase reports its own.

    CUDA: the allocator's peak allocated and reserved bytes and the device's free memory now (`mem_get_info`,
    which also sees vLLM's and NCCL's allocations outside torch's allocator). CPU: the process's peak
    resident set (the kernel's VmHWM). Not getrusage's ru_maxrss: it cannot be reset, and Linux keeps it
    across exec, so a process started from a bigger parent (a test runner, a launcher) reports the parent's
    peak."""
    gib = 1024 ** 3
    prefix = f"perf/mem_{phase}"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        metrics = {f"{prefix}_max_allocated_gib": torch.cuda.max_memory_allocated(device) / gib,
                   f"{prefix}_max_reserved_gib": torch.cuda.max_memory_reserved(device) / gib,
                   f"{prefix}_free_gib": free / gib}
    else:
        metrics = {f"{prefix}_peak_rss_gib": _peak_rss_kib() * 1024 / gib}
    reset_peak_memory(device)
    return metrics


def _peak_rss_kib() -> int:
    """VmHWM of /proc/self/status where there is one (Linux), else getrusage (KiB on Linux and BSDs)."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
