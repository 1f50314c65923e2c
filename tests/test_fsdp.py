"""FSDP2 (2 ranks, gloo) against one process: sharded training steps, full-weight streaming (fp32 and the
engine's bf16), HF export and DCP checkpoints (a 2-rank checkpoint loads in 1 process)."""
import os
import re
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from rpt.checkpoint import load_checkpoint
from rpt.fsdp import build_policy
from tests.conftest import REPO, run_torchrun


def test_two_ranks_match_one_process_and_export_and_checkpoint(stories_dir, tmp_path):
    run_torchrun(REPO / "tests/workers/fsdp_worker.py", [str(stories_dir), str(tmp_path / "two")], nproc=2)
    two = torch.load(tmp_path / "two" / "result.pt")
    # the same script in one process, no process group: plain model, no FSDP
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    subprocess.run([sys.executable, str(REPO / "tests/workers/fsdp_worker.py"), str(stories_dir),
                    str(tmp_path / "one")], env=env, check=True, capture_output=True, timeout=300)
    one = torch.load(tmp_path / "one" / "result.pt")
    assert (one["world_size"], two["world_size"]) == (1, 2)
    torch.testing.assert_close(two["logp"], one["logp"], atol=1e-5, rtol=0)
    assert two["full"].keys() == one["full"].keys()
    for name in one["full"]:
        torch.testing.assert_close(two["full"][name], one["full"][name], atol=1e-4, rtol=0, msg=name)
        # the engine-dtype sync: shards cast before the gather give exactly the cast of the fp32 gather
        for result in (one, two):
            assert result["full_bf16"][name].dtype == torch.bfloat16, name
            assert torch.equal(result["full_bf16"][name], result["full"][name].to(torch.bfloat16)), name
    # the HF export is the trained model: same weights and same log-probs through plain transformers
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "two" / "hf", dtype=torch.float32)
    for name, param in exported.named_parameters():
        torch.testing.assert_close(param.detach(), two["full"][name], atol=0, rtol=0, msg=name)
    torch.manual_seed(0)
    ids = torch.randint(3, 512, (2, 24))
    logits = exported(ids).logits  # (2, 24, V)
    logp = torch.log_softmax(logits, -1).gather(-1, torch.roll(ids, -1, 1).unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(logp, two["logp"], atol=1e-5, rtol=0)
    # the 2-rank DCP checkpoint loads into one process
    policy = build_policy(str(stories_dir))
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    step, extra = load_checkpoint(tmp_path / "two" / "checkpoints" / "step_00000002", policy, optimizer, scheduler)
    assert step == 2 and extra == {"rank": 0}
    for name, param in policy.model.named_parameters():
        torch.testing.assert_close(param.detach(), two["full"][name], atol=0, rtol=0, msg=name)
    assert len(optimizer.state) == len(list(policy.parameters()))  # AdamW moments restored too


def test_move_optimizer_state_moves_moments_not_step_counters():
    from rpt.fsdp import move_optimizer_state

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    move_optimizer_state(optimizer, "meta")  # stands in for the CPU <-> GPU moves this machine cannot make
    for state in optimizer.state.values():
        assert state["exp_avg"].device.type == "meta" and state["exp_avg_sq"].device.type == "meta"
        assert state["step"].device.type == "cpu"


def test_interrupted_save_leaves_the_previous_checkpoint_latest(tmp_path):
    from rpt.checkpoint import latest_checkpoint, save_checkpoint

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    saved = save_checkpoint(tmp_path, model, optimizer, scheduler, step=2, extra={})
    (tmp_path / ".tmp_step_00000003").mkdir()  # a save killed before its rename
    (tmp_path / ".tmp_step_00000003" / "rank0.pt").write_bytes(b"truncated")
    assert latest_checkpoint(tmp_path) == saved == tmp_path / "step_00000002"
    for step in (3, 4, 5):  # keep=2 prunes the oldest complete ones
        save_checkpoint(tmp_path, model, optimizer, scheduler, step=step, extra={}, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_00000004", "step_00000005"]


def tiny_training_state(lr=1e-2):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler


def draw_from_every_rng():
    import random

    import numpy as np

    return random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3).tolist()


def test_rank_state_loads_with_weights_only_and_restores_every_rng(tmp_path):
    import random

    import numpy as np

    from rpt.checkpoint import save_checkpoint

    model, optimizer, scheduler = tiny_training_state()
    random.seed(3), np.random.seed(4), torch.manual_seed(5)
    random.gauss(0, 1), np.random.randn()  # leave a cached gaussian in both, the state's awkward corner
    path = save_checkpoint(tmp_path, model, optimizer, scheduler, step=1, extra={"data": {"position": 12}})
    expected = draw_from_every_rng()
    small = torch.load(path / "rank0.pt", weights_only=True)  # raises if anything but plain data is inside
    assert small["step"] == 1 and small["extra"] == {"data": {"position": 12}}
    fresh, fresh_optimizer, fresh_scheduler = tiny_training_state()
    draw_from_every_rng()  # move every stream on, so only the load can bring them back
    step, extra = load_checkpoint(path, fresh, fresh_optimizer, fresh_scheduler)
    assert (step, extra) == (1, {"data": {"position": 12}})
    assert draw_from_every_rng() == expected


class Payload:
    """Unpickling this creates a directory: the stand-in for a shell command hidden in a checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.mark.parametrize("where", ["rank_file", "dcp_metadata", "dcp_item"])
def test_checkpoint_with_a_code_payload_is_refused(tmp_path, where):
    import pickle

    from rpt.checkpoint import CheckpointError, save_checkpoint

    marker = tmp_path / "payload_ran"
    model, optimizer, scheduler = tiny_training_state()
    if where == "dcp_item":  # a non-tensor optimizer item (param-group settings are stored as pickled bytes)
        optimizer.param_groups[0]["note"] = Payload(marker)
    path = save_checkpoint(tmp_path / "ckpt", model, optimizer, scheduler, step=1, extra={})
    if where == "rank_file":
        torch.save({"step": 1, "scheduler": Payload(marker)}, path / "rank0.pt")
        named = path / "rank0.pt"
    elif where == "dcp_metadata":
        (path / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
        named = path / ".metadata"
    else:
        named = "optim.param_groups.0.note"
    assert not marker.exists()
    fresh, fresh_optimizer, fresh_scheduler = tiny_training_state()
    fresh_optimizer.param_groups[0]["note"] = None  # so that the load asks for the planted item
    with pytest.raises(CheckpointError, match=f"{re.escape(str(named))}: refused to load"):
        load_checkpoint(path, fresh, fresh_optimizer, fresh_scheduler)
    assert not marker.exists(), "loading the checkpoint ran the payload"


def test_rotation_keeps_this_runs_newest_and_never_touches_another_run(tmp_path):
    from rpt.checkpoint import latest_checkpoint, save_checkpoint

    model, optimizer, scheduler = tiny_training_state()
    other = save_checkpoint(tmp_path, model, optimizer, scheduler, step=900, extra={}, run_id="old-run")
    for step in (8, 9, 10, 11):  # crosses a digit: 10 and 11 must sort after 9
        save_checkpoint(tmp_path, model, optimizer, scheduler, step=step, extra={}, keep=2, run_id="new-run")
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_00000010", "step_00000011", "step_00000900"]
    assert other.exists() and latest_checkpoint(tmp_path) == other  # one run per dir is the claim's job
    (tmp_path / "step_notes").mkdir()  # not a checkpoint: ignored, not a crash
    assert latest_checkpoint(tmp_path) == other
