"""What the launchers share: the preflight that checks a config's inputs before anything loads or is written,
and small argparse types.

    cfg = load_config(path, overrides)
    check_inputs(cfg)  # ConfigError naming the field: the launcher prints one line and exits 2
"""
import argparse
from pathlib import Path

from rpt.config import Config, ConfigError
from rpt.data.samples_io import EmptySplitError, check_splits_have_samples


def check_model_paths(cfg: Config) -> None:
    """model.path is an HF model directory and model.tokenizer_path, if set, a directory."""
    model = Path(cfg.model.path)
    if not (model / "config.json").is_file():
        raise ConfigError(f"model.path: '{model}' is not an HF model directory "
                          f"({'no config.json in it' if model.is_dir() else 'no such directory'})")
    if cfg.model.tokenizer_path and not Path(cfg.model.tokenizer_path).is_dir():
        raise ConfigError(f"model.tokenizer_path: no such directory '{cfg.model.tokenizer_path}'")


def check_paths(cfg: Config) -> None:
    """The input directories exist and are what they claim, before anything is loaded or written."""
    check_model_paths(cfg)
    if cfg.data.questions and not Path(cfg.data.questions).exists():
        raise ConfigError(f"data.questions: no such file or directory '{cfg.data.questions}'")
    if cfg.logging.eval_questions and not Path(cfg.logging.eval_questions).exists():
        raise ConfigError(f"logging.eval_questions: no such file or directory '{cfg.logging.eval_questions}'")
    if not cfg.data.path and cfg.reward.kind == "answer":
        return  # RLVR reads its questions, not a prepared-data directory
    data = Path(cfg.data.path)
    if not (data / "manifest.json").is_file():
        raise ConfigError(f"data.path: '{data}' is not a finished prepared-data directory (no manifest.json; "
                          "run launch/prepare_data.py)")


def check_training_splits(cfg: Config) -> None:
    """The splits a training run reads have samples: the training split (RPT) and, with periodic evaluation,
    the held-out ones."""
    if not cfg.data.path:
        return
    named = {}
    if cfg.train.objective == "rpt" and cfg.reward.kind != "answer":
        named["data.split"] = [cfg.data.split]
    if cfg.logging.eval_every:
        named["logging.eval_splits"] = list(cfg.logging.eval_splits)
    try:
        check_splits_have_samples(cfg.data.path, named)
    except EmptySplitError as error:
        raise ConfigError(str(error)) from None


def at_least(minimum: int):
    """An argparse type: an integer >= minimum (argparse names the flag in the error)."""
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    parse.__name__ = "integer"  # argparse's "invalid integer value" for text that is no number
    return parse
