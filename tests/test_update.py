"""The real update phase (rpt.update.update_policy) over 2 FSDP2 ranks gives the update of one process over
the whole batch, for every loss aggregation mode."""
import os
import subprocess
import sys

import torch

from rpt.grpo import AGG_MODES
from tests.conftest import REPO, run_torchrun

WORKER = REPO / "tests/workers/update_worker.py"


def test_two_ranks_match_one_process(stories_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    subprocess.run([sys.executable, str(WORKER), str(stories_dir), str(tmp_path / "one.pt")], env=env, check=True,
                   timeout=300)
    run_torchrun(WORKER, [str(stories_dir), str(tmp_path / "two.pt")], nproc=2)
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert (one.pop("world_size"), two.pop("world_size")) == (1, 2)
    assert sorted(one) == sorted(two) == sorted(AGG_MODES)
    for agg in AGG_MODES:
        reference, sharded = one[agg], two[agg]
        scale = max(d.abs().max().item() for d in reference["deltas"].values())
        assert scale > 1e-3, f"{agg}: vanishing gradients would compare nothing"
        assert abs(sharded["metrics"]["grad_norm"] - reference["metrics"]["grad_norm"]) <= 1e-5 * max(
            1.0, reference["metrics"]["grad_norm"])
        assert sharded["metrics"]["skipped_updates"] == reference["metrics"]["skipped_updates"] == 0
        # SGD(lr=1), no clip: the parameter change is minus the step's gradient. Sums over differently packed
        # rows round differently, ~1e-6 of the largest entry; a real error (a count not reduced over ranks, a
        # mis-weighted sequence) is a fraction of the scale.
        for name, delta in reference["deltas"].items():
            torch.testing.assert_close(sharded["deltas"][name], delta, atol=4e-6 * max(1.0, scale), rtol=0,
                                       msg=f"{agg} {name}")
