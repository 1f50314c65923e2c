"""launch/train.py runs issue 15's two other objectives from their tiny presets, 1 process vs 2 FSDP2 ranks:
- continual NTP (ntp_tiny.yaml) on the tiny prepared data: the same losses, gradient norms and held-out
  loss; the held-out loss is logged and the HF export written;
- RLVR (rlvr_tiny.yaml) on MATH-500 questions with stories260K: the pipeline runs (reward ~0: it cannot do
  maths) with the same rollouts and rewards on both layouts, questions in samples.jsonl."""
import json

import pytest

from tests.conftest import run_torchrun
from tests.test_train import TRAIN, ScriptedEngine, read_metrics, run_single_process


def preset_args(preset: str, overrides: dict) -> list[str]:
    """launch/train.py's arguments: a preset of launch/configs and --section.key=value overrides."""
    return ["--config", f"launch/configs/{preset}.yaml"] + [f"--{k}={v}" for k, v in overrides.items()]


def ntp_args(data_dir, out_dir) -> list[str]:
    args = {"data.path": data_dir, "train.output_dir": out_dir, "train.steps": 3, "train.batch_size": 4,
            "train.mini_batch_size": 4, "data.window_tokens": 32, "train.micro_batch_tokens": 70,
            "train.save_every": 2, "logging.tensorboard": False, "logging.eval_every": 3,
            "logging.eval_max_samples": 8}
    return preset_args("ntp_tiny", args)


def test_ntp_two_ranks_match_one_process(tiny_data_dir, tmp_path):
    run_single_process(ntp_args(tiny_data_dir, tmp_path / "one"))
    run_torchrun(TRAIN, ntp_args(tiny_data_dir, tmp_path / "two"), nproc=2)
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert sorted(one) == sorted(two) == [0, 1, 2, 3]  # step 0: the untrained policy's evaluation
    for step in (1, 2, 3):
        assert one[step]["train/tokens"] == two[step]["train/tokens"] > 0
        assert two[step]["train/loss"] == pytest.approx(one[step]["train/loss"], rel=1e-5)
        assert two[step]["train/grad_norm"] == pytest.approx(one[step]["train/grad_norm"], rel=1e-4)
    assert two[3]["eval/heldout_loss"] == pytest.approx(one[3]["eval/heldout_loss"], rel=1e-5)
    assert one[3]["eval/heldout_loss"] > 0 and "eval/easy/standard_acc" in one[3]
    assert (tmp_path / "two" / "hf" / "model.safetensors").exists()
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir() if p.is_dir())[-1].endswith("3")


def rlvr_args(assets_dir, out_dir) -> list[str]:
    args = {"data.questions": assets_dir / "math500" / "test.jsonl", "data.max_questions": 12,
            "data.max_prompt_tokens": 400, "train.output_dir": out_dir, "train.steps": 2, "train.batch_size": 4,
            "train.mini_batch_size": 4, "rollout.n": 2, "rollout.max_response_tokens": 4,
            "train.micro_batch_tokens": 1024, "train.save_every": 0, "logging.tensorboard": False,
            "logging.samples_every": 1}
    return preset_args("rlvr_tiny", args)


def test_rlvr_pipeline_two_ranks_match_one_process(assets_dir, tmp_path):
    run_single_process(rlvr_args(assets_dir, tmp_path / "one"))
    run_torchrun(TRAIN, rlvr_args(assets_dir, tmp_path / "two"), nproc=2)
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert sorted(one) == sorted(two) == [1, 2]
    for step in one:
        for key in ("rollout/reward_mean", "rollout/response_len_mean", "rollout/had_box", "reward/verify_timeouts"):
            assert one[step][key] == two[step][key], key
    samples = [json.loads(line) for line in (tmp_path / "one" / "samples.jsonl").read_text().splitlines()]
    rows = [json.loads(line) for line in (assets_dir / "math500" / "test.jsonl").read_text().splitlines()]
    assert samples and all(len(s["responses"]) == len(s["rewards"]) == 2 for s in samples)
    for sample in samples:  # question ids count the file's records (none is bad): the reference is that row's
        assert sample["question_id"] < 12 and sample["answers"] == [rows[sample["question_id"]]["answer"]]


def test_rlvr_evaluates_held_out_questions_inside_the_loop(tmp_path, monkeypatch):
    """RLVR with logging.eval_every: the answer accuracy on logging.eval_questions (evenly spaced, at most
    logging.eval_max_samples) is logged at step 0 and every eval_every steps. Training questions all have
    answer 5, held-out ones 5, 5, 5, 7, 9: a scripted engine whose every sample ends its thinking and
    answers 5 (generation is not what this checks) earns reward 1 in training, and
    0.75 on the 4 held-out questions evenly spaced over 5 (the first four), where all five would give 0.6."""
    import rpt.train as trainer
    from rpt.config import load_config

    monkeypatch.delenv("RANK", raising=False)
    train_file, eval_file = tmp_path / "train.jsonl", tmp_path / "heldout.jsonl"
    train_file.write_text("".join(json.dumps({"problem": f"What is {i} + {5 - i}?", "answer": "5"}) + "\n"
                                  for i in range(6)))
    eval_file.write_text("".join(json.dumps({"problem": f"Held-out question {i}.", "answer": answer}) + "\n"
                                 for i, answer in enumerate(["5", "5", "5", "7", "9"])))
    engines = []
    monkeypatch.setattr(trainer, "build_engine", lambda cfg, tokenizer, device: engines.append(
        ScriptedEngine(tokenizer, answers=["</think>\n\\boxed{5}"])) or engines[-1])
    args = {"data.questions": train_file, "data.max_questions": 0, "train.output_dir": tmp_path / "run",
            "train.steps": 2, "train.batch_size": 2, "train.mini_batch_size": 2, "rollout.n": 2,
            "train.save_every": 0, "logging.tensorboard": False, "train.export_hf": False,
            "logging.eval_every": 2, "logging.eval_questions": eval_file, "logging.eval_max_samples": 4}
    argv = preset_args("rlvr_tiny", args)
    cfg = load_config(argv[1], argv[2:])
    trainer.train(cfg)
    metrics = read_metrics(tmp_path / "run")
    assert sorted(metrics) == [0, 1, 2]
    for step in (0, 2):
        assert metrics[step]["eval/math/answer_acc"] == 0.75
        assert metrics[step]["eval/math/num_questions"] == 4
        assert metrics[step]["eval/math/verify_timeouts"] == 0
    assert "eval/math/answer_acc" not in metrics[1]
    assert metrics[1]["rollout/reward_mean"] == metrics[2]["rollout/reward_mean"] == 1.0
    # one evaluation call per evaluation (4 questions, 1 sample each), one training call per step (2 x G=2)
    assert engines[0].calls == [(4, 1), (2, 2), (2, 2), (4, 1)]
