"""Config -> objects: everything the loop, the evaluator, the benchmarks and the GPU checks build from a
Config, in one place. With rpt/train.py and the launchers, the only readers of Config: the phases they feed
(rpt.rollout.groups, rpt.update, rpt.eval, rpt.run_dir) take the explicit settings built here.
"""
from dataclasses import dataclass
from pathlib import Path

import torch

from rpt.config import Config, to_dict
from rpt.data import SampleStream
from rpt.data.prompts import PromptSettings, special_prefix_ids
from rpt.data.questions import QuestionStream, drop_long_questions, load_questions
from rpt.data.sample import Question
from rpt.data.windows import WindowStream
from rpt.dist import print0
from rpt.fsdp import build_policy
from rpt.model import load_model
from rpt.rollout.engine import Engine, SamplingParams
from rpt.rollout.groups import RewardSettings
from rpt.run_dir import Run
from rpt.update import UpdateSettings


# --- settings of the phases ----------------------------------------------------------------------------------

def prompt_settings(cfg: Config) -> PromptSettings:
    return PromptSettings(template=cfg.data.template, chat=cfg.data.chat, think_prefill=cfg.data.think_prefill,
                          response_prefill=cfg.data.response_prefill, max_prompt_tokens=cfg.data.max_prompt_tokens)


def reward_settings(cfg: Config) -> RewardSettings:
    return RewardSettings(kind=cfg.reward.kind, extraction=cfg.reward.extraction, penalty=cfg.reward.penalty,
                          verify_timeout_s=cfg.reward.verify_timeout_s)


def sampling_params(cfg: Config, n: int | None = None) -> SamplingParams:
    return SamplingParams(n=n or cfg.rollout.n, temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                          max_tokens=cfg.rollout.max_response_tokens)


def update_settings(cfg: Config) -> UpdateSettings:
    return UpdateSettings(
        temperature=cfg.rollout.temperature, clip_low=cfg.grpo.clip_low, clip_high=cfg.grpo.clip_high,
        loss_agg=cfg.grpo.loss_agg, max_response_len=cfg.rollout.max_response_tokens, kl_coef=cfg.grpo.kl_coef,
        entropy_coef=cfg.grpo.entropy_coef, log_entropy=cfg.logging.entropy, tis_cap=cfg.grpo.tis_cap,
        logprob_chunk_size=cfg.grpo.logprob_chunk_size, micro_batch_tokens=cfg.train.micro_batch_tokens,
        packed_rows=cfg.model.attn_implementation == "flash_attention_2",
        num_minibatches=cfg.train.batch_size // cfg.train.mini_batch_size, grad_clip=cfg.train.grad_clip)


@dataclass(frozen=True)
class Layout:
    """How the job's ranks split the work: the ranks of a tensor-parallel group generate together and form one
    data-parallel rank (rank // tp); each data-parallel rank draws contexts_per_rank contexts per round."""
    rank: int
    world_size: int
    tp: int
    dp_rank: int
    dp_size: int
    contexts_per_rank: int


def data_parallel_layout(cfg: Config, rank: int, world_size: int) -> Layout:
    tp = cfg.rollout.tensor_parallel_size if cfg.rollout.engine == "vllm" and cfg.train.objective == "rpt" else 1
    minibatches = cfg.train.batch_size // cfg.train.mini_batch_size
    if cfg.train.batch_size % (world_size * minibatches):
        raise ValueError(f"train.batch_size={cfg.train.batch_size} must split evenly over the {world_size} ranks "
                         f"(each updates on its share) and the {minibatches} mini-batches")
    return Layout(rank, world_size, tp, rank // tp, world_size // tp, cfg.train.batch_size // (world_size // tp))


# --- objects -------------------------------------------------------------------------------------------------

def open_run(cfg: Config) -> Run:
    """Claim train.output_dir for this run (rpt/run_dir.py): before any model loads or anything is written."""
    return Run.open(Path(cfg.train.output_dir), to_dict(cfg), to_dict(Config()), resume=cfg.train.resume,
                    overwrite=cfg.train.overwrite, steps=cfg.train.steps, log_every=cfg.logging.log_every,
                    tensorboard=cfg.logging.tensorboard, samples_every=cfg.logging.samples_every,
                    samples_per_dump=cfg.logging.samples_per_dump, save_every=cfg.train.save_every,
                    keep_checkpoints=cfg.train.keep_checkpoints)


def build_train_policy(cfg: Config, device: torch.device):
    """The policy: fp32 (model.dtype) master weights, FSDP2-sharded, computing in model.param_dtype."""
    return build_policy(cfg.model.path, cfg.model.dtype, cfg.model.param_dtype, cfg.model.reduce_dtype,
                        cfg.model.activation_checkpointing, cfg.model.attn_implementation, device)


def build_reference(cfg: Config, device: torch.device):
    """The frozen initial policy of the KL term, sharded like the policy, in its compute dtype; None at
    grpo.kl_coef 0 (the paper's run builds nothing)."""
    if cfg.grpo.kl_coef == 0:
        return None
    reference = build_policy(cfg.model.path, cfg.model.param_dtype, cfg.model.param_dtype, cfg.model.reduce_dtype,
                             False, cfg.model.attn_implementation, device)
    return reference.requires_grad_(False)


def build_optimizer(cfg: Config, policy) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the policy's parameters, and a linear warmup to train.lr over train.warmup_steps."""
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.train.lr, betas=cfg.train.betas,
                                  weight_decay=cfg.train.weight_decay)
    warmup = cfg.train.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    return optimizer, scheduler


def engine_dtype(cfg: Config, device: torch.device) -> str:
    """The engine's weight dtype: the policy's compute dtype for vLLM on a GPU, fp32 on CPU (no bf16 units) and
    for the HF engine's copy. The sync gathers in it (half the bytes of fp32 at bf16)."""
    return cfg.model.param_dtype if cfg.rollout.engine == "vllm" and device.type == "cuda" else "float32"


def build_engine(cfg: Config, tokenizer, device: torch.device) -> Engine:
    eos_ids = [tokenizer.eos_token_id]
    if cfg.rollout.engine == "hf":
        from rpt.rollout.hf_engine import HFEngine

        # a plain copy per rank, refreshed by update_weights: fine for the small models this engine serves
        copy = load_model(cfg.model.path, engine_dtype(cfg, device), cfg.model.attn_implementation, device=device)
        return HFEngine(copy, eos_ids, tokenizer.pad_token_id)
    from rpt.rollout.vllm_engine import VLLMEngine  # without vllm: an ImportError naming the install extra

    return VLLMEngine(
        cfg.model.path, eos_ids, dtype=engine_dtype(cfg, device),
        tensor_parallel_size=cfg.rollout.tensor_parallel_size, seed=cfg.train.seed,
        max_model_len=cfg.data.max_prompt_tokens + cfg.rollout.max_response_tokens,
        gpu_memory_utilization=cfg.rollout.gpu_memory_utilization,
        kv_cache_memory_bytes=cfg.rollout.kv_cache_memory_bytes,
        enforce_eager=cfg.rollout.enforce_eager, sleep_level=cfg.rollout.sleep_level,
    )


def build_stream(cfg: Config, tokenizer, dp_rank: int, dp_size: int):
    """This rank's data: next-token samples (RPT), questions (RLVR, reward.kind=answer; epochs over the set)
    or document windows (train.objective=ntp). All three share next_batch / state_dict / load_state_dict."""
    if cfg.train.objective == "ntp":
        return WindowStream(cfg.data.path, cfg.data.window_tokens, special_prefix_ids(tokenizer), rank=dp_rank,
                            world_size=dp_size, seed=cfg.train.seed, shuffle=cfg.data.shuffle)
    if cfg.reward.kind == "answer":
        questions = load_fitting_questions(cfg, tokenizer, cfg.data.questions, cfg.data.max_questions)
        return QuestionStream(questions, rank=dp_rank, world_size=dp_size, seed=cfg.train.seed,
                              shuffle=cfg.data.shuffle)
    return SampleStream(cfg.data.path, split=cfg.data.split, rank=dp_rank, world_size=dp_size,
                        seed=cfg.train.seed, shuffle=cfg.data.shuffle)


def load_fitting_questions(cfg: Config, tokenizer, path: str, max_questions: int) -> list[Question]:
    """RLVR's questions from `path` (fields data.question_field / answer_field, the first max_questions when
    > 0) whose prompt fits data.max_prompt_tokens; what was skipped or dropped is printed."""
    fields = {"problem": cfg.data.question_field, "answer": cfg.data.answer_field}
    questions, report = load_questions(path, fields, max_questions=max_questions)
    questions, dropped = drop_long_questions(questions, tokenizer, cfg.data.max_prompt_tokens, cfg.data.chat,
                                             cfg.data.think_prefill)
    print0(f"{len(questions)} questions from {path} ({report.num_bad} bad records skipped, "
           f"{len(dropped)} over data.max_prompt_tokens dropped)")
    if not questions:
        raise ValueError(f"no question of {path} fits data.max_prompt_tokens")
    return questions


def build_eval_questions(cfg: Config, tokenizer) -> list[Question] | None:
    """RLVR's held-out questions (logging.eval_questions), evenly spaced, the same list on every rank; None
    without periodic RLVR evaluation."""
    if not (cfg.logging.eval_every and cfg.reward.kind == "answer"):
        return None
    from rpt.eval.accuracy import select_evenly

    return select_evenly(load_fitting_questions(cfg, tokenizer, cfg.logging.eval_questions, 0),
                         cfg.logging.eval_max_samples)


def build_heldout_windows(cfg: Config, tokenizer, dp_rank: int, dp_size: int) -> list[list[int]] | None:
    """The continual-NTP baseline's held-out documents as windows, this data-parallel rank's share; None
    without periodic NTP evaluation."""
    if not (cfg.train.objective == "ntp" and cfg.logging.eval_every):
        return None
    heldout = WindowStream(cfg.data.path, cfg.data.window_tokens, special_prefix_ids(tokenizer),
                           doc_split="heldout", shuffle=False)
    return [heldout.window(i) for i in range(dp_rank, heldout.num_windows, dp_size)]


def build_eval_model(cfg: Config, device: torch.device):
    """A plain (unsharded) copy of model.path for standard-mode evaluation: bf16 where the GPU run computes in
    model.param_dtype, fp32 on CPU (no bf16 matmul instructions there)."""
    model = load_model(cfg.model.path, dtype=cfg.model.param_dtype if device.type == "cuda" else "float32",
                       attn_implementation=cfg.model.attn_implementation, device=device)
    return model.eval()
