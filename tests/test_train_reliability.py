"""launch/train.py end to end, as a user runs it, on what issue 14 found broken (stories260K, transformers
engine, one process unless said otherwise):
- a fresh run into another run's directory is refused on every rank, naming the ways out;
- a resume with a changed batch size is refused naming the fields; one with a changed lr puts the new lr on
  the optimizer and records it with its step;
- resuming from a checkpoint older than the last logged step leaves every log with each step once, and the
  repeated step equal to the first run's;
- the data's vocabulary is checked against the policy's, and a missing model path is named, before
  anything is loaded or written."""
import json
import os
import subprocess
import sys

import pytest
import torch

from rpt.checkpoint import load_checkpoint
from rpt.fsdp import build_policy
from tests.conftest import REPO, run_torchrun
from tests.test_train import TRAIN, overrides, read_metrics, run_single_process


def run_failing(args, nproc: int = 1) -> subprocess.CompletedProcess:
    """launch/train.py (under torchrun when nproc > 1) that must fail; -> the finished process."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone"] \
        if nproc > 1 else [sys.executable]
    result = subprocess.run([*launcher, str(TRAIN), *args], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0, result.stdout[-2000:]
    return result


def steps_in(path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def tensorboard_steps(out_dir, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out_dir / "tensorboard"))
    events.Reload()
    return [event.step for event in events.Scalars(tag)]


def test_run_dir_ownership_resume_rules_and_log_truncation(tiny_data_dir, stories_dir, tmp_path):
    out = tmp_path / "run"
    args = overrides(tiny_data_dir, out, steps=3, **{"train.save_every": 2, "logging.tensorboard": True})
    first = run_single_process(args)  # checkpoints at steps 2 and 3 (the last step always saves)
    original = read_metrics(out)
    checkpoint_2 = out / "checkpoints" / "step_00000002"
    assert steps_in(out / "metrics.jsonl") == [1, 2, 3] and checkpoint_2.exists(), first.stderr[-2000:]

    # a fresh run into it, on 2 ranks: refused on every rank, nothing touched
    refused = run_failing(args, nproc=2)
    assert "holds another run" in refused.stderr and "--resume auto" in refused.stderr
    assert "--train.overwrite=true" in refused.stderr and "another train.output_dir" in refused.stderr
    assert steps_in(out / "metrics.jsonl") == [1, 2, 3]

    # a resume that changes what the run is: refused naming the fields, before the model loads
    changed = run_failing(args + ["--resume", str(checkpoint_2), "--train.batch_size=8", "--train.mini_batch_size=8"])
    assert "train.batch_size: 4 -> 8" in changed.stderr and "train.mini_batch_size: 4 -> 8" in changed.stderr

    # resume from step 2 although step 3 was logged (a crash between logging and checkpointing looks so):
    # every log holds each step once, and step 3 is the first run's step 3 again
    run_single_process(args + ["--resume", str(checkpoint_2)])
    assert steps_in(out / "metrics.jsonl") == [1, 2, 3]
    assert steps_in(out / "samples.jsonl") == sorted(steps_in(out / "samples.jsonl"))
    assert len(set(steps_in(out / "samples.jsonl"))) == 3 and len(steps_in(out / "samples.jsonl")) == 3 * 4
    assert tensorboard_steps(out, "train/loss") == [1, 2, 3]
    for key in ("train/loss", "rollout/reward_mean", "train/grad_norm"):
        assert read_metrics(out)[3][key] == original[3][key], key

    # a resume that changes the lr and betas and runs one more step: they take effect and are recorded
    run_single_process(overrides(tiny_data_dir, out, steps=4, **{"train.save_every": 2, "train.lr": 2e-4,
                                                                 "train.betas": "[0.8, 0.95]"}) + ["--resume", "auto"])
    changes = [json.loads(line) for line in (out / "config_changes.jsonl").read_text().splitlines()]
    assert {(c["step"], c["field"]) for c in changes} == {(3, "train.lr"), (3, "train.steps"), (3, "train.betas"),
                                                          (3, "logging.tensorboard")}
    assert next(c for c in changes if c["field"] == "train.lr")["old"] == 1e-3
    assert read_metrics(out)[4]["train/lr"] == 2e-4 and read_metrics(out)[3]["train/lr"] == 1e-3
    policy = build_policy(str(stories_dir))
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1.0, betas=(0.5, 0.5))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    step, _ = load_checkpoint(out / "checkpoints" / "step_00000004", policy, optimizer, scheduler)
    assert step == 4
    assert (optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["betas"]) == (2e-4, (0.8, 0.95))


def test_inputs_are_checked_before_anything_loads_or_is_written(tiny_data_dir, tiny_qwen2_dir, tmp_path):
    missing = run_failing(overrides(tiny_data_dir, tmp_path / "a") + [f"--model.path={tmp_path / 'no_model'}"])
    assert f"model.path: '{tmp_path / 'no_model'}' is not an HF model directory" in missing.stderr
    other_vocab = run_failing(overrides(tiny_data_dir, tmp_path / "b") + [f"--model.path={tiny_qwen2_dir}"])
    assert "prepare the data with the policy's tokenizer" in other_vocab.stderr
    assert "stories260K (512 tokens" in other_vocab.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
