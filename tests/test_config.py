"""Config: YAML <-> dataclass round trip, override parsing, validation errors that name the key."""
import importlib.util
import subprocess
import sys

import pytest
import yaml

from rpt.config import Config, ConfigError, load_config, parse_overrides, save_config, to_dict
from tests.conftest import REPO

PATHS = ["--model.path=m", "--data.path=d"]


def test_defaults_are_the_papers_table5():
    cfg = Config()
    assert (cfg.train.batch_size, cfg.train.mini_batch_size, cfg.rollout.n) == (256, 256, 8)
    assert (cfg.train.lr, cfg.train.betas, cfg.train.weight_decay, cfg.train.grad_clip) == (1e-6, (0.9, 0.999), 0.01, 0.2)
    assert (cfg.rollout.temperature, cfg.data.max_prompt_tokens, cfg.rollout.max_response_tokens) == (0.8, 4096, 8192)
    assert (cfg.grpo.kl_coef, cfg.grpo.entropy_coef, cfg.grpo.dynamic_sampling_start_step) == (0.0, 0.0, 500)
    assert (cfg.grpo.clip_low, cfg.grpo.clip_high, cfg.train.steps) == (0.2, 0.2, 1000)


def test_14b_preset_equals_defaults_except_paths_output_and_engine_memory():
    """Engine memory is not in Table 5: rpt_14b.yaml sets it from launch/plan.py (tests/test_plan.py)."""
    cfg = load_config(str(REPO / "launch/configs/rpt_14b.yaml"), PATHS)
    expected = to_dict(Config())
    got = to_dict(cfg)
    for section in expected:
        for key in expected[section]:
            if (section, key) in {("model", "path"), ("data", "path"), ("train", "output_dir"),
                                  ("rollout", "gpu_memory_utilization")}:
                continue
            assert got[section][key] == expected[section][key], f"{section}.{key}"


def test_yaml_round_trip(tmp_path):
    cfg = load_config(str(REPO / "launch/configs/tiny.yaml"), ["--train.betas=[0.8, 0.95]", "--train.lr=3e-4"])
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(str(tmp_path / "c.yaml"))
    assert to_dict(again) == to_dict(cfg)
    assert again.train.betas == (0.8, 0.95) and again.train.lr == 3e-4
    assert yaml.safe_load((tmp_path / "c.yaml").read_text())["rollout"]["engine"] == "hf"


def test_override_parsing_forms():
    assert parse_overrides(["--train.lr=1e-5", "--rollout.engine", "hf", "--train.resume="]) == [
        ("train.lr", "1e-5"), ("rollout.engine", "hf"), ("train.resume", "")]
    cfg = load_config(None, PATHS + ["--train.lr=1e-5", "--train.steps", "7", "--data.chat=false",
                                     "--data.think_prefill=false", "--rollout.temperature=1"])
    assert (cfg.train.lr, cfg.train.steps, cfg.data.chat, cfg.rollout.temperature) == (1e-5, 7, False, 1.0)
    assert isinstance(cfg.rollout.temperature, float)


@pytest.mark.parametrize("args, message", [
    (["--grpo.bogus=1"], "grpo.bogus"),
    (["--nosuch.key=1"], "unknown config section 'nosuch'"),
    (["--train.steps=abc"], "train.steps: expected int"),
    (["--train.lr=fast"], "train.lr: expected float"),
    (["--rollout.engine=sglang"], "rollout.engine: 'sglang' is not one of"),
    (["--train.betas=[0.9]"], "train.betas: expected 2 values"),
    (["--data.chat=maybe"], "data.chat: expected bool"),
    (["--model.attn_implementation=flash"], "model.attn_implementation: 'flash' is not one of"),
    (["--train.dist_timeout_minutes=0"], "train.dist_timeout_minutes must be finite and > 0"),
    (["train.lr=1"], "overrides look like --section.key=value"),
])
def test_bad_overrides_name_the_key(args, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(None, PATHS + args)


def test_missing_required_paths_and_cross_field_checks(tmp_path):
    with pytest.raises(ConfigError, match="model.path is required"):
        load_config(None, ["--data.path=d"])
    with pytest.raises(ConfigError, match="multiple of train.mini_batch_size"):
        load_config(None, PATHS + ["--train.batch_size=10", "--train.mini_batch_size=4"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [1, 2]\n")
    with pytest.raises(ConfigError, match=f"{bad}: train.lr"):
        load_config(str(bad), PATHS)


def test_train_cli_fails_fast_naming_the_key():
    result = subprocess.run([sys.executable, "launch/train.py", "--config", "launch/configs/tiny.yaml",
                             "--grpo.bogus=1"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "grpo.bogus" in result.stderr


@pytest.mark.parametrize("arg", [
    "--train.grad_clip=-1", "--train.grad_clip=0", "--train.grad_clip=nan", "--train.batch_size=0",
    "--train.mini_batch_size=0", "--rollout.top_p=0", "--rollout.top_p=2", "--train.steps=-5", "--train.lr=nan",
    "--train.lr=-1e-6", "--train.lr=inf", "--rollout.temperature=inf", "--rollout.temperature=0",
    "--rollout.temperature=nan", "--train.betas=[0.9, 1.0]", "--train.weight_decay=nan", "--rollout.n=1",
    "--train.keep_checkpoints=0", "--logging.log_every=0", "--train.micro_batch_tokens=0",
    "--grpo.clip_low=1.5", "--grpo.max_generation_rounds=0", "--rollout.gpu_memory_utilization=0",
])
def test_out_of_range_values_are_refused_naming_the_field(arg):
    key = arg[2:].split("=")[0]
    with pytest.raises(ConfigError, match=f"^{key} must be"):
        load_config(None, PATHS + [arg])


def test_boundary_values_are_accepted():
    cfg = load_config(None, PATHS + ["--rollout.top_p=1", "--train.steps=0", "--train.lr=0",
                                     "--train.grad_clip=1e-3", "--train.betas=[0.0, 0.999]"])
    assert (cfg.rollout.top_p, cfg.train.steps, cfg.train.lr) == (1.0, 0, 0.0)


def test_duplicate_yaml_key_is_refused_naming_key_and_lines(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("train:\n  lr: 1.0e-4\n  steps: 3\n  lr: 1.0e-2\n")
    with pytest.raises(ConfigError, match=r"(?s)duplicate key .lr. \(first on line 2\).*line 4"):
        load_config(str(path), PATHS)
    path.write_text("train:\n  lr: 1.0e-4\ntrain:\n  steps: 3\n")
    with pytest.raises(ConfigError, match="duplicate key 'train'"):
        load_config(str(path), PATHS)


def test_overwrite_and_resume_together_are_refused():
    with pytest.raises(ConfigError, match="train.overwrite .* train.resume"):
        load_config(None, PATHS + ["--train.overwrite=true", "--train.resume=auto"])


def test_check_paths_names_the_missing_path(stories_dir, tiny_data_dir, tmp_path):
    from rpt.cli import check_paths

    good = [f"--model.path={stories_dir}", f"--data.path={tiny_data_dir}"]
    check_paths(load_config(None, good))
    with pytest.raises(ConfigError, match=f"model.path: '{tmp_path / 'nope'}' .*no such directory"):
        check_paths(load_config(None, [f"--model.path={tmp_path / 'nope'}", good[1]]))
    with pytest.raises(ConfigError, match="model.path: .*no config.json"):
        check_paths(load_config(None, [f"--model.path={tmp_path}", good[1]]))
    with pytest.raises(ConfigError, match="data.path: .*no manifest.json"):
        check_paths(load_config(None, [good[0], f"--data.path={tmp_path}"]))
    with pytest.raises(ConfigError, match="model.tokenizer_path"):
        check_paths(load_config(None, good + [f"--model.tokenizer_path={tmp_path / 'nope'}"]))


def test_check_training_splits_refuses_a_split_without_samples(stories_dir, tiny_data_dir, tmp_path):
    """An empty or unknown split is named at start-up, not at the first evaluation hours into the run."""
    import json
    import shutil

    from rpt.cli import check_training_splits

    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["samples"]["hard"] > 0 and manifest["samples"]["train"] > 0
    manifest["samples"]["hard"] = 0
    (data / "manifest.json").write_text(json.dumps(manifest))
    paths = [f"--model.path={stories_dir}", f"--data.path={data}"]
    check_training_splits(load_config(None, paths))  # no evaluation: the held-out splits are not read
    check_training_splits(load_config(None, paths + ["--logging.eval_every=5", "--logging.eval_splits=[easy,medium]"]))
    with pytest.raises(ConfigError, match=r"logging.eval_splits: split\(s\) \['hard'\] have no samples in .*manifest"):
        check_training_splits(load_config(None, paths + ["--logging.eval_every=5"]))
    with pytest.raises(ConfigError, match=r"data.split: split\(s\) \['easy_typo'\] have no samples"):
        check_training_splits(load_config(None, paths + ["--data.split=easy_typo"]))


def test_flash_attention_without_the_package_is_a_config_error(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "flash_attn"
                        else real_find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"flash_attention_2 needs the flash-attn package.*"
                                          r"pip install flash-attn.*model.attn_implementation=sdpa"):
        load_config(None, PATHS + ["--model.attn_implementation=flash_attention_2"])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "flash_attn"
                        else real_find_spec(name, *a))
    cfg = load_config(None, PATHS + ["--model.attn_implementation=flash_attention_2"])  # installed: accepted
    assert cfg.model.attn_implementation == "flash_attention_2"


def test_downstream_presets_and_their_checks():
    """Issue 15's presets load; the NTP and RLVR fields are validated with errors naming them."""
    ntp = load_config(str(REPO / "launch/configs/ntp_14b.yaml"), ["--model.path=m", "--data.path=d"])
    assert (ntp.train.objective, ntp.train.steps, ntp.train.batch_size, ntp.data.window_tokens) == (
        "ntp", 800, 256, 4096)
    rlvr = load_config(str(REPO / "launch/configs/rlvr_14b.yaml"), ["--model.path=m", "--data.questions=q.parquet"])
    epochs = rlvr.train.steps * rlvr.train.batch_size // rlvr.data.max_questions
    assert (rlvr.reward.kind, rlvr.train.batch_size, rlvr.train.mini_batch_size, rlvr.data.max_questions,
            epochs) == ("answer", 64, 64, 256, 15)
    assert load_config(str(REPO / "launch/configs/ntp_tiny.yaml")).train.objective == "ntp"
    assert load_config(str(REPO / "launch/configs/rlvr_tiny.yaml")).data.questions.endswith("math500/test.jsonl")
    checks = [
        (["--model.path=m", "--reward.kind=answer"], "needs data.questions"),
        (["--model.path=m", "--reward.kind=answer", "--data.questions=q", "--reward.extraction=raw"],
         "extraction=boxed"),
        (["--model.path=m", "--reward.kind=answer", "--data.questions=q", "--reward.verify_timeout_s=0"],
         "verify_timeout_s must be > 0"),
        (["--model.path=m", "--data.path=d", "--data.questions=q"], "only with reward.kind=answer"),
        (["--model.path=m", "--data.path=d", "--train.objective=ntp", "--data.window_tokens=20000"],
         "data.window_tokens must be"),
        (["--model.path=m", "--data.path=d", "--train.objective=ntp", "--train.mini_batch_size=128"],
         "one optimizer step per batch"),
        (["--model.path=m", "--data.path=d", "--train.objective=bert"], "train.objective"),
        (["--model.path=m", "--data.path=d", "--train.objective=ntp", "--grpo.kl_coef=0.1"], "needs it at 0"),
        (["--model.path=m", "--data.path=d", "--train.objective=ntp", "--logging.eval_every=2",
          "--logging.eval_mode=reasoning"], "eval_mode must be standard"),
        (["--model.path=m", "--reward.kind=answer", "--data.questions=q", "--logging.eval_every=2"],
         "eval_every with reward.kind=answer needs logging.eval_questions"),
        (["--model.path=m", "--data.path=d", "--logging.eval_questions=q"], "eval_questions is read only with"),
    ]
    load_config(None, ["--model.path=m", "--reward.kind=answer", "--data.questions=q", "--logging.eval_every=2",
                       "--logging.eval_questions=h"])
    for overrides, message in checks:
        with pytest.raises(ConfigError, match=message):
            load_config(None, overrides)
