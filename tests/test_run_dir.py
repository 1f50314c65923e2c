"""One run per directory: the claim and its lock, the resume config rules, optimizer settings applied after
a checkpoint load, and log truncation to the checkpoint's step."""
import json
import subprocess
import sys

import pytest
import torch

from rpt.config import Config, ConfigError, to_dict
from rpt.run_dir import (
    RUN_FILE,
    RunDirError,
    apply_optimizer_settings,
    claim_run_dir,
    compare_configs,
    record_config_changes,
    truncate_jsonl,
)


def plant_run(directory):
    (directory / "checkpoints" / "step_00000010").mkdir(parents=True)
    (directory / "config.yaml").write_text("train: {}\n")
    (directory / "metrics.jsonl").write_text('{"step": 1}\n')


def test_fresh_run_into_another_runs_dir_is_refused_naming_the_ways_out(tmp_path):
    plant_run(tmp_path)
    with pytest.raises(RunDirError) as error:
        claim_run_dir(tmp_path, resume="", overwrite=False)
    message = str(error.value)
    assert str(tmp_path) in message and "config.yaml, checkpoints, metrics.jsonl" in message
    for way_out in ("--resume auto", "another train.output_dir", "--train.overwrite=true"):
        assert way_out in message
    assert (tmp_path / "checkpoints" / "step_00000010").exists()  # nothing was touched


def test_overwrite_deletes_only_run_files_and_resume_keeps_the_run_id(tmp_path):
    plant_run(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    lock, run_id = claim_run_dir(tmp_path, resume="", overwrite=True)
    lock.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "notes.txt", RUN_FILE]
    assert json.loads((tmp_path / RUN_FILE).read_text()) == {"run_id": run_id}
    lock, resumed_id = claim_run_dir(tmp_path, resume="auto", overwrite=False)
    lock.release()
    assert resumed_id == run_id
    lock, new_id = claim_run_dir(tmp_path / "fresh", resume="", overwrite=False)  # an empty or new dir is free
    lock.release()
    assert new_id != run_id


LOCK_HOLDER = """
import sys, time
from rpt.run_dir import claim_run_dir
lock, _ = claim_run_dir(sys.argv[1], resume="", overwrite=False)
print("locked", flush=True)
time.sleep(60)
"""


def test_second_job_is_refused_while_the_first_lives_and_the_lock_dies_with_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match=rf"in use by another job \(pid {holder.pid} on .*holds .*\.lock\)"):
            claim_run_dir(tmp_path, resume="auto", overwrite=False)
    finally:
        holder.kill()  # SIGKILL: no cleanup code runs, the kernel drops the flock
        holder.wait()
    lock, _ = claim_run_dir(tmp_path, resume="auto", overwrite=False)
    lock.release()


def test_immutable_changes_are_refused_naming_every_field():
    saved = to_dict(Config())
    new = to_dict(Config())
    new["train"]["batch_size"], new["rollout"]["n"], new["data"]["template"] = 128, 4, "v3"
    new["train"]["lr"] = 1e-5  # mutable: not in the error
    with pytest.raises(ConfigError) as error:
        compare_configs(saved, new)
    message = str(error.value)
    for field in ("train.batch_size: 256 -> 128", "rollout.n: 8 -> 4", "data.template: 'v0' -> 'v3'"):
        assert field in message
    assert "train.lr" not in message


def test_mutable_changes_are_returned_and_missing_saved_fields_count_as_defaults():
    saved = to_dict(Config())
    del saved["grpo"]["tis_cap"]  # a config written before the field existed
    new = to_dict(Config())
    new["train"]["lr"], new["train"]["betas"], new["train"]["steps"] = 1e-5, [0.8, 0.95], 2000
    new["logging"]["samples_every"] = 3
    new["train"]["resume"] = "auto"  # how this job starts, not a change of the run
    assert compare_configs(saved, new, defaults=to_dict(Config())) == [
        ("train.steps", 1000, 2000), ("train.lr", 1e-6, 1e-5), ("train.betas", [0.9, 0.999], [0.8, 0.95]),
        ("logging.samples_every", 10, 3)]
    new["grpo"]["tis_cap"] = 2.0
    with pytest.raises(ConfigError, match=r"grpo.tis_cap: 0.0 -> 2.0"):
        compare_configs(saved, new, defaults=to_dict(Config()))


def test_config_changes_are_recorded_with_their_step(tmp_path):
    record_config_changes(tmp_path, 10, [])
    assert not (tmp_path / "config_changes.jsonl").exists()
    record_config_changes(tmp_path, 40, [("train.lr", 1e-6, 1e-5)])
    record_config_changes(tmp_path, 90, [("train.steps", 100, 200)])
    lines = [json.loads(line) for line in (tmp_path / "config_changes.jsonl").read_text().splitlines()]
    assert lines == [{"step": 40, "field": "train.lr", "old": 1e-6, "new": 1e-5},
                     {"step": 90, "field": "train.steps", "old": 100, "new": 200}]


def test_optimizer_settings_take_effect_after_a_checkpoint_restored_the_old_ones():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    warmup = 10
    old = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01)
    old_scheduler = torch.optim.lr_scheduler.LambdaLR(old, lambda s: min(1.0, (s + 1) / warmup))
    for _ in range(4):
        model(torch.ones(1, 3)).sum().backward()
        old.step()
        old_scheduler.step()
    # what the resumed job does: build from the new config, load the checkpoint's state, apply the new values
    new = torch.optim.AdamW(model.parameters(), lr=5e-4, betas=(0.8, 0.95), weight_decay=0.1)
    new_scheduler = torch.optim.lr_scheduler.LambdaLR(new, lambda s: min(1.0, (s + 1) / warmup))
    new.load_state_dict(old.state_dict())
    new_scheduler.load_state_dict(old_scheduler.state_dict())
    assert new.param_groups[0]["lr"] == pytest.approx(1e-3 * 5 / 10)  # the load brought the old values back
    apply_optimizer_settings(new, new_scheduler, lr=5e-4, betas=(0.8, 0.95), weight_decay=0.1)
    group = new.param_groups[0]
    assert (group["betas"], group["weight_decay"]) == ((0.8, 0.95), 0.1)
    assert group["lr"] == pytest.approx(5e-4 * 5 / 10) == new_scheduler.get_last_lr()[0]
    new_scheduler.step()  # the schedule continues from the new base: (4 + 2) / 10 of it
    assert group["lr"] == pytest.approx(5e-4 * 6 / 10)
    # and the update really uses them: one AdamW step by hand with the new lr, betas and weight decay
    before = model.weight.detach().clone()
    state = new.state[model.weight]
    m, v, step = state["exp_avg"].clone(), state["exp_avg_sq"].clone(), state["step"].item() + 1
    model.zero_grad()
    model(torch.ones(1, 3)).sum().backward()
    grad = model.weight.grad.clone()
    new.step()
    lr, (b1, b2), wd = group["lr"], (0.8, 0.95), 0.1
    m, v = b1 * m + (1 - b1) * grad, b2 * v + (1 - b2) * grad**2
    expected = before * (1 - lr * wd) - lr * (m / (1 - b1**step)) / ((v / (1 - b2**step)).sqrt() + 1e-8)
    torch.testing.assert_close(model.weight.detach(), expected, atol=1e-7, rtol=0)


def test_truncate_jsonl_keeps_steps_up_to_the_checkpoint_and_drops_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "x": s * 0.5}) + "\n" for s in (1, 2, 3, 3, 4, 5)]
    path.write_text("".join(lines) + '{"step": 6, "x"')  # the kill cut the last write short
    assert truncate_jsonl(path, 3) == 3
    assert path.read_text() == "".join(lines[:4])
    assert truncate_jsonl(path, 3) == 0 and truncate_jsonl(tmp_path / "absent.jsonl", 3) == 0
    assert truncate_jsonl(path, 0) == 4 and path.read_text() == ""


def test_saved_run_config_prefers_the_checkpoints_own(tmp_path):
    from rpt.checkpoint import save_checkpoint
    from rpt.config import save_config
    from rpt.run_dir import saved_run_config

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    run_config, dir_config = Config(), Config()
    run_config.train.lr, dir_config.train.lr = 3e-4, 5e-5
    save_config(dir_config, tmp_path / "config.yaml")
    with_config = save_checkpoint(tmp_path / "checkpoints", model, optimizer, scheduler, step=1, extra={},
                                  config=to_dict(run_config))
    assert saved_run_config(with_config, tmp_path)["train"]["lr"] == 3e-4
    without = save_checkpoint(tmp_path / "checkpoints", model, optimizer, scheduler, step=2, extra={})
    assert saved_run_config(without, tmp_path)["train"]["lr"] == 5e-5
    assert saved_run_config(without, tmp_path / "elsewhere") is None
