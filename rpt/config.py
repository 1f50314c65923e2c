"""One config: dataclasses whose defaults are the paper's values (arXiv 2506.08007, Table 5 in Appendix B),
YAML presets and `--section.key=value` overrides.

    cfg = load_config("launch/configs/tiny.yaml", ["--train.steps=3", "--rollout.engine=hf"])

Unknown sections or keys and values of the wrong type are errors that name the key (and the file).
Deviation from the paper's wording: "actor gradient clip 0.2" is read as the gradient-NORM clip
(`train.grad_clip`, verl's `actor.grad_clip`); with exact on-policy updates the PPO ratio is always 1, so a
clip *ratio* would do nothing. The PPO clip ratios (`grpo.clip_low`, `grpo.clip_high`) are 0.2 as well.
"""
import dataclasses
import importlib.util
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import yaml


@dataclass
class ModelConfig:
    path: str = ""  # local HF directory of the policy (never a hub id: nothing downloads at run time)
    tokenizer_path: str = ""  # defaults to `path`
    dtype: Literal["float32", "bfloat16"] = "float32"  # master weights and optimizer state
    param_dtype: Literal["float32", "bfloat16"] = "bfloat16"  # FSDP compute dtype (MixedPrecisionPolicy)
    reduce_dtype: Literal["float32", "bfloat16"] = "float32"  # FSDP gradient reduce-scatter dtype
    activation_checkpointing: bool = True
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"  # flash: the flash-attn package
    RANGES: ClassVar[dict] = {}  # the Literal types say it all


@dataclass
class DataConfig:
    path: str = ""  # a directory written by launch/prepare_data.py
    split: str = "train"
    template: str = "v0"  # prompt template v0..v6 (Table 10) or "raw" (the context alone)
    chat: bool = True  # wrap the prompt in the tokenizer's chat template
    think_prefill: bool = True  # open the assistant turn with "<think>\n" (R1-distill's later revisions do)
    response_prefill: str = ""  # text the response starts with, e.g. "</think>\n\\boxed{" for tiny models
    max_prompt_tokens: int = 4096
    shuffle: bool = True
    # RLVR (reward.kind=answer): a .jsonl/.parquet question file or directory, and the fields read from it
    # (dotted for nested ones: Skywork-OR1 uses prompt / reward_model.ground_truth), rpt/data/questions.py
    questions: str = ""
    question_field: str = "problem"
    answer_field: str = "answer"
    max_questions: int = 0  # > 0: the first that many questions (the paper trains on 256)
    # continual NTP (train.objective=ntp): target tokens per window of a train document (rpt/data/windows.py)
    window_tokens: int = 4096
    # ranges that types alone cannot express, checked by validate(): field -> (test, requirement)
    RANGES: ClassVar[dict] = {
        "max_prompt_tokens": (lambda x: x > 0, "> 0"),
    }


@dataclass
class RolloutConfig:
    engine: Literal["vllm", "hf"] = "vllm"
    n: int = 8  # G samples per context
    temperature: float = 0.8
    top_p: float = 1.0
    max_response_tokens: int = 8192
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.5  # share of GPU memory vLLM may take (weights + KV cache)
    kv_cache_memory_bytes: int = 0  # explicit KV cache size; required on CPU, 0 = from gpu_memory_utilization
    enforce_eager: bool = False
    sleep_level: Literal[0, 1, 2] = 1  # 0: never sleep; 1: drop KV cache, offload weights; 2: drop both
    offload_optimizer: bool = True  # move AdamW state to CPU while the engine generates
    # ranges that types alone cannot express, checked by validate(): field -> (test, requirement)
    RANGES: ClassVar[dict] = {
        "n": (lambda x: x >= 2, ">= 2: group-normalized advantages need several samples"),
        "temperature": (lambda x: math.isfinite(x) and x > 0, "finite and > 0"),
        "top_p": (lambda x: 0 < x <= 1, "in (0, 1]"),
        "max_response_tokens": (lambda x: x > 0, "> 0"),
        "tensor_parallel_size": (lambda x: x >= 1, ">= 1"),
        "gpu_memory_utilization": (lambda x: 0 < x <= 1, "in (0, 1]"),
        "kv_cache_memory_bytes": (lambda x: x >= 0, ">= 0"),
    }


@dataclass
class RewardConfig:
    # answer: RLVR, the final boxed answer verified against the question's reference by math-verify
    kind: Literal["prefix_match", "first_token", "dense", "conditional_dense", "answer"] = "prefix_match"
    extraction: Literal["boxed", "raw"] = "boxed"  # raw: the generated text itself is the prediction
    penalty: float = 0.0  # conditional_dense: groups with no correct sample get -penalty (Appendix A)
    verify_timeout_s: float = 5.0  # answer: time limit per math-verify comparison (reward 0, counted)
    # ranges that types alone cannot express, checked by validate(): field -> (test, requirement)
    RANGES: ClassVar[dict] = {
        "penalty": (lambda x: math.isfinite(x) and x >= 0, "finite and >= 0"),
    }


@dataclass
class GRPOConfig:
    adv_eps: float = 1e-6
    scale_by_std: bool = True  # False: Dr. GRPO advantages
    clip_low: float = 0.2
    clip_high: float = 0.2
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"] = (
        "token-mean"
    )
    kl_coef: float = 0.0  # > 0: k3 KL to a frozen copy of the initial policy (FSDP-sharded, model.param_dtype)
    entropy_coef: float = 0.0
    dynamic_sampling_start_step: int = 500  # DAPO: drop groups whose G rewards are all equal from this step
    max_generation_rounds: int = 4  # generation rounds per step at most (refills under dynamic sampling)
    on_round_cap: Literal["error", "partial"] = "partial"  # at the cap: fail, or train on what was kept
    tis_cap: float = 0.0  # > 0: truncated importance sampling against the engine's log-probs (not in paper)
    logprob_chunk_size: int = 1024  # tokens per chunk of the lm_head + log-softmax
    # ranges that types alone cannot express, checked by validate(): field -> (test, requirement)
    RANGES: ClassVar[dict] = {
        "adv_eps": (lambda x: math.isfinite(x) and x > 0, "finite and > 0"),
        "clip_low": (lambda x: 0 <= x < 1, "in [0, 1)"),
        "clip_high": (lambda x: math.isfinite(x) and x >= 0, "finite and >= 0"),
        "kl_coef": (lambda x: math.isfinite(x) and x >= 0, "finite and >= 0"),
        "entropy_coef": (math.isfinite, "finite"),
        "dynamic_sampling_start_step": (lambda x: x >= 0, ">= 0"),
        "max_generation_rounds": (lambda x: x >= 1, ">= 1"),
        "tis_cap": (lambda x: math.isfinite(x) and x >= 0, "finite and >= 0"),
        "logprob_chunk_size": (lambda x: x > 0, "> 0"),
    }


@dataclass
class TrainConfig:
    # rpt: GRPO on rollouts (RPT with the next-token rewards, RLVR with reward.kind=answer); ntp: cross-entropy
    # on the data's train documents (Table 2's continual-NTP baseline; rollout, reward and grpo are unused)
    objective: Literal["rpt", "ntp"] = "rpt"
    output_dir: str = "runs/rpt"
    steps: int = 1000
    batch_size: int = 256  # contexts per step, all ranks together
    mini_batch_size: int = 256  # contexts per optimizer update (256 = one exact on-policy update per step)
    micro_batch_tokens: int = 16384  # token budget of one forward/backward
    lr: float = 1e-6
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    grad_clip: float = 0.2  # gradient-norm clip (see module docstring)
    warmup_steps: int = 0
    seed: int = 0
    save_every: int = 100
    keep_checkpoints: int = 2
    resume: str = ""  # "", "auto" (latest complete checkpoint in output_dir) or a checkpoint directory
    overwrite: bool = False  # a fresh run may delete another run's files in output_dir (rpt/run_dir.py)
    export_hf: bool = True  # write the final policy as an HF directory to output_dir/hf
    dist_timeout_minutes: float = 120.0  # a collective waiting longer fails the job (NCCL's default: 10)
    # ranges that types alone cannot express, checked by validate(): field -> (test, requirement)
    RANGES: ClassVar[dict] = {
        "steps": (lambda x: x >= 0, ">= 0"),
        "batch_size": (lambda x: x > 0, "> 0"),
        "mini_batch_size": (lambda x: x > 0, "> 0"),
        "micro_batch_tokens": (lambda x: x > 0, "> 0"),
        "lr": (lambda x: math.isfinite(x) and x >= 0, "finite and >= 0"),
        "betas": (lambda x: all(0 <= b < 1 for b in x), "two values in [0, 1)"),
        "weight_decay": (lambda x: math.isfinite(x) and x >= 0, "finite and >= 0"),
        # clip_grad_norm_ with a negative max flips every update's sign, and 0 zeroes it
        "grad_clip": (lambda x: math.isfinite(x) and x > 0, "finite and > 0"),
        "warmup_steps": (lambda x: x >= 0, ">= 0"),
        "save_every": (lambda x: x >= 0, ">= 0 (0: never)"),
        "keep_checkpoints": (lambda x: x >= 1, ">= 1"),
        "dist_timeout_minutes": (lambda x: math.isfinite(x) and x > 0, "finite and > 0"),
    }


@dataclass
class LoggingConfig:
    log_every: int = 1
    tensorboard: bool = True
    entropy: bool = False  # compute and log the policy's per-token entropy (one more pass over V per chunk)
    samples_every: int = 10  # write prompts/responses/rewards to samples.jsonl every k steps
    samples_per_dump: int = 8
    eval_every: int = 0  # evaluate the policy on the validation splits every k steps (0: never)
    eval_mode: Literal["standard", "reasoning"] = "standard"  # argmax of one forward, or sample + reward
    eval_splits: tuple[str, ...] = ("easy", "medium", "hard")
    eval_max_samples: int = 200  # per split; RLVR: questions of eval_questions (evenly spaced)
    # RLVR (reward.kind=answer): held-out questions (e.g. MATH-500) evaluated instead of the splits, avg@1 of
    # the answer reward at the rollout's sampling settings, read with data.question_field / answer_field
    eval_questions: str = ""
    # ranges that types alone cannot express, checked by validate(): field -> (test, requirement)
    RANGES: ClassVar[dict] = {
        "log_every": (lambda x: x >= 1, ">= 1"),
        "samples_every": (lambda x: x >= 0, ">= 0 (0: never)"),
        "samples_per_dump": (lambda x: x >= 0, ">= 0"),
        "eval_every": (lambda x: x >= 0, ">= 0 (0: never)"),
        "eval_max_samples": (lambda x: x > 0, "> 0"),
    }


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


class ConfigError(ValueError):
    pass


def _coerce(value, annotation, key: str):
    """Check `value` against a field annotation; ints are accepted for floats, lists for tuples."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        if value not in typing.get_args(annotation):
            raise ConfigError(f"{key}: {value!r} is not one of {list(typing.get_args(annotation))}")
        return value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            if option is type(None) and value is None:
                return None
            try:
                return _coerce(value, option, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: {value!r} does not match {annotation}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{key}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):
        # YAML 1.1 reads 1e-6 (no dot) as a string, and learning rates are written that way
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{key}: expected float, got {value!r}") from None
    if annotation is str and value is None:
        return ""
    if annotation in (int, float, str, bool) and not (type(value) is annotation):
        raise ConfigError(f"{key}: expected {annotation.__name__}, got {value!r}")
    return value


def _set(cfg: Config, dotted_key: str, value, source: str) -> None:
    parts = dotted_key.split(".")
    if len(parts) != 2:
        raise ConfigError(f"{source}: '{dotted_key}' must be section.key, e.g. train.lr")
    section_name, key = parts
    if section_name not in {f.name for f in dataclasses.fields(Config)}:
        raise ConfigError(f"{source}: unknown config section '{section_name}' (in '{dotted_key}')")
    section = getattr(cfg, section_name)
    hints = typing.get_type_hints(type(section))
    if key not in {f.name for f in dataclasses.fields(section)}:
        raise ConfigError(f"{source}: unknown config key '{dotted_key}'")
    setattr(section, key, _coerce(value, hints[key], f"{source}: {dotted_key}"))


def parse_overrides(args: list[str]) -> list[tuple[str, object]]:
    """["--train.lr=1e-5", "--rollout.engine", "hf"] -> [("train.lr", 1e-5), ("rollout.engine", "hf")].

    Values are read as YAML scalars or lists, so 1e-5, true, null and [0.9, 0.95] work."""
    pairs, i = [], 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or "." not in arg.split("=", 1)[0]:
            raise ConfigError(f"unexpected argument '{arg}': overrides look like --section.key=value")
        if "=" in arg:
            key, text = arg[2:].split("=", 1)
        else:
            if i + 1 >= len(args):
                raise ConfigError(f"'{arg}' has no value")
            key, text = arg[2:], args[i + 1]
            i += 1
        pairs.append((key, yaml.safe_load(text) if text != "" else ""))
        i += 1
    return pairs


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key repeated in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (first on line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _yaml_pairs(path: str) -> list[tuple[str, object]]:
    try:
        raw = yaml.load(Path(path).read_text(), Loader=_UniqueKeyLoader) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    pairs = []
    for section, values in raw.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: section '{section}' must be a mapping")
        pairs += [(f"{section}.{key}", value) for key, value in values.items()]
    return pairs


def load_config(path: str | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults (the paper's values) <- YAML preset <- command-line overrides, then validation."""
    cfg = Config()
    if path:
        for key, value in _yaml_pairs(path):
            _set(cfg, key, value, path)
    for key, value in parse_overrides(overrides or []):
        _set(cfg, key, value, "command line")
    validate(cfg)
    return cfg


def _check(condition: bool, key: str, value, requirement: str) -> None:
    if not condition:
        raise ConfigError(f"{key} must be {requirement}, got {value!r}")




def validate(cfg: Config) -> None:
    """Required paths, value ranges and cross-field checks that types alone cannot express."""
    if not cfg.model.path:
        raise ConfigError("model.path is required (a local HF model directory)")
    if cfg.reward.kind == "answer":
        if not cfg.data.questions:
            raise ConfigError("reward.kind=answer needs data.questions (a question/answer .jsonl/.parquet file)")
        if cfg.reward.extraction != "boxed" or cfg.train.objective != "rpt":
            raise ConfigError("reward.kind=answer needs reward.extraction=boxed and train.objective=rpt")
        if not cfg.reward.verify_timeout_s > 0:
            raise ConfigError("reward.verify_timeout_s must be > 0")
    elif not cfg.data.path:
        raise ConfigError("data.path is required (a directory written by launch/prepare_data.py)")
    for section in dataclasses.fields(Config):  # NaN fails every comparison of the RANGES
        values = getattr(cfg, section.name)
        for name, (test, requirement) in values.RANGES.items():
            _check(test(getattr(values, name)), f"{section.name}.{name}", getattr(values, name), requirement)
    if cfg.data.questions and cfg.reward.kind != "answer":
        raise ConfigError("data.questions is read only with reward.kind=answer")
    if not (cfg.data.question_field and cfg.data.answer_field) or cfg.data.max_questions < 0:
        raise ConfigError("data.question_field and data.answer_field must be set, data.max_questions >= 0")
    if cfg.logging.eval_questions and cfg.reward.kind != "answer":
        raise ConfigError("logging.eval_questions is read only with reward.kind=answer (RPT evaluates the "
                          "held-out splits of data.path)")
    if cfg.logging.eval_every and cfg.reward.kind == "answer" and not cfg.logging.eval_questions:
        raise ConfigError("logging.eval_every with reward.kind=answer needs logging.eval_questions (held-out "
                          "questions, e.g. MATH-500)")
    if cfg.train.objective == "ntp" and cfg.logging.eval_every and cfg.logging.eval_mode != "standard":
        raise ConfigError("train.objective=ntp has no rollout engine: logging.eval_mode must be standard")
    if cfg.train.objective == "ntp" and cfg.grpo.kl_coef > 0:
        raise ConfigError("grpo.kl_coef is a GRPO term: train.objective=ntp needs it at 0")
    if cfg.train.objective == "ntp":
        if not 1 <= cfg.data.window_tokens <= cfg.train.micro_batch_tokens:
            raise ConfigError("data.window_tokens must be >= 1 and <= train.micro_batch_tokens (a window is "
                              "packed whole into one micro-batch)")
        if cfg.train.mini_batch_size != cfg.train.batch_size:
            raise ConfigError("train.objective=ntp takes one optimizer step per batch: set train.mini_batch_size "
                              "equal to train.batch_size (windows per step)")
    if cfg.train.batch_size % cfg.train.mini_batch_size:
        raise ConfigError("train.batch_size must be a positive multiple of train.mini_batch_size")
    if cfg.model.attn_implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        # transformers would otherwise fail at model load, after the process group and data are set up, or
        # try to fetch a kernel from the hub, which HF_HUB_OFFLINE forbids
        raise ConfigError("model.attn_implementation=flash_attention_2 needs the flash-attn package, which is "
                          "not installed: `pip install flash-attn --no-build-isolation` in this environment "
                          "(a wheel built for its torch and CUDA; README 'First hour on a GPU node'), or use "
                          "the working default model.attn_implementation=sdpa")
    if not cfg.data.chat and cfg.data.think_prefill:
        raise ConfigError("data.think_prefill needs data.chat=true (the <think> turn opens the chat reply)")
    if cfg.train.overwrite and cfg.train.resume:
        raise ConfigError("train.overwrite deletes the run that train.resume would continue: use one of them")


def to_dict(cfg: Config) -> dict:
    out = dataclasses.asdict(cfg)
    for section in out.values():
        for key, value in section.items():
            if isinstance(value, tuple):
                section[key] = list(value)
    return out


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
