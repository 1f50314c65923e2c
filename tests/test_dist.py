"""Process-group setup in 1 process (no torchrun) and 2 processes (torchrun, gloo)."""
import json
import subprocess
import sys

import torch

from rpt.dist import all_reduce, get_world_size, init_distributed, seed_everything
from tests.conftest import REPO, run_torchrun


def test_single_process_fallback(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    rank, world_size, device = init_distributed()
    assert (rank, world_size, device.type) == (0, 1, "cpu")
    assert get_world_size() == 1
    assert all_reduce(torch.tensor([2.0, 3.0])).tolist() == [2.0, 3.0]


def test_two_ranks_gloo():
    result = run_torchrun(REPO / "tests/workers/dist_worker.py", [], nproc=2)
    line = [l for l in result.stdout.splitlines() if l.startswith("{")][-1]
    out = json.loads(line)
    assert out["world_size"] == 2 and out["device"] == "cpu"
    assert out["timeout_s"] == 450.0  # init_distributed(timeout_minutes=7.5) reached the process group
    assert out["sum"] == [1.0, 2.0] and out["max"] == [1.0] and out["reduced_on"] == "cpu"
    seed_everything(123, 0)
    first = torch.rand(1).item()
    seed_everything(123, 1)
    second = torch.rand(1).item()
    assert out["draws"] == [first, second]  # seeded per rank, reproducibly, and different
    assert first != second


def test_cpu_memory_metrics_report_each_phases_peak_rss():
    """In a fresh process: touch 512 MiB, then the metric must be at least that and equal the kernel's own
    high-water mark (VmHWM in /proc/self/status). Free it: the phase that began holding it still counts it,
    the phase after must not (each call resets the peak to what is resident then)."""
    code = """
import json, torch
from rpt.dist import memory_metrics
block = torch.ones(128 * 1024 * 1024)  # 512 MiB of float32, every page touched
first = memory_metrics(torch.device("cpu"), "generate")
hwm_kib = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
del block  # an mmap'd block: back to the OS at once
second = memory_metrics(torch.device("cpu"), "update")
third = memory_metrics(torch.device("cpu"), "sync")
print(json.dumps({**first, **second, **third, "hwm_gib": hwm_kib / 1024 ** 2}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                            env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.splitlines()[-1])
    assert list(out) == ["perf/mem_generate_peak_rss_gib", "perf/mem_update_peak_rss_gib",
                         "perf/mem_sync_peak_rss_gib", "hwm_gib"]
    assert out["perf/mem_generate_peak_rss_gib"] >= 0.5
    assert abs(out["perf/mem_generate_peak_rss_gib"] - out["hwm_gib"]) < 0.01
    assert abs(out["perf/mem_update_peak_rss_gib"] - out["perf/mem_generate_peak_rss_gib"]) < 0.01
    assert out["perf/mem_sync_peak_rss_gib"] < out["perf/mem_update_peak_rss_gib"] - 0.45
