"""FSDP2 (2 ranks, gloo) against one process: sharded training steps, full-weight streaming, HF export and
DCP checkpoints (a 2-rank checkpoint loads in 1 process)."""
import os
import subprocess
import sys

import torch
from transformers import AutoModelForCausalLM

from rpt.fsdp import build_policy, load_checkpoint
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
    from rpt.fsdp import latest_checkpoint, save_checkpoint

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
