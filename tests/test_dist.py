"""Process-group setup in 1 process (no torchrun) and 2 processes (torchrun, gloo)."""
import json

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
    assert out["sum"] == [1.0, 2.0] and out["max"] == [1.0] and out["reduced_on"] == "cpu"
    seed_everything(123, 0)
    first = torch.rand(1).item()
    seed_everything(123, 1)
    second = torch.rand(1).item()
    assert out["draws"] == [first, second]  # seeded per rank, reproducibly, and different
    assert first != second
