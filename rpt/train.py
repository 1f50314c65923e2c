"""The RPT training loop: `train(cfg)`, one function, every rank running the same code (SPMD).

One step (arXiv 2506.08007, Section 3.3):
    sample contexts -> prompts -> G completions each -> reward (Eq. 3) -> advantages (dynamic sampling refills
    the batch from `grpo.dynamic_sampling_start_step`) -> update (one exact on-policy AdamW step by default)
    -> sync weights into the engine -> log -> checkpoint.

Launch with `torchrun --nproc_per_node=N launch/train.py --config ...` (a plain `python launch/train.py`
runs one process without FSDP). The policy is sharded with FSDP2 over all ranks; the rollout engine is
co-located in every rank; data is split over data-parallel ranks (rank // tensor_parallel_size).

This is the only module that reads Config: the phases it calls (rpt.rollout.groups for prompt -> reward,
rpt.update for the update, rpt.eval for evaluation) take explicit settings.

Deviations from the paper: `train.grad_clip` is the gradient-norm clip (see rpt/config.py); a step whose
gradient norm is not finite is skipped (the paper says nothing); the TIS correction (`grpo.tis_cap`) is off
by default as in the paper.
"""
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from rpt.config import Config, save_config, to_dict
from rpt.data import SampleStream
from rpt.data.samples_io import check_vocabulary
from rpt.data.prompts import special_prefix_ids
from rpt.data.questions import Question, QuestionStream, drop_long_questions, load_questions
from rpt.data.windows import WindowStream
from rpt.dist import all_gather_objects, empty_cache, init_distributed, memory_metrics, print0, reduce_metrics, \
    reset_peak_memory, seed_everything
from rpt.fsdp import build_policy, export_hf, iter_full_weights, latest_checkpoint, load_checkpoint, \
    move_optimizer_state, save_checkpoint
from rpt.grpo.advantages import compute_advantages
from rpt.grpo.sampling import PooledGroupCollector, select_kept
from rpt.model import DTYPES, load_model, load_tokenizer
from rpt.ntp import ntp_eval_loss, ntp_update
from rpt.plan import GIB, plan_memory, read_model_shape, summary_line
from rpt.report import plot_run, read_metrics, summarize
from rpt.rollout.engine import Engine, SamplingParams
from rpt.rollout.groups import FirstTokenLogprobs, Group, PromptSettings, RewardSettings, generate_groups, \
    score_groups
from rpt.run_dir import apply_optimizer_settings, claim_run_dir, compare_configs, record_config_changes, \
    saved_run_config, truncate_jsonl
from rpt.update import UpdateSettings, sequence_logprobs, update_policy


# --- settings of the phases, read from the config ----------------------------------------------------------

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


def ntp_step(policy, optimizer, scheduler, windows: list[list[int]], settings: UpdateSettings, device,
             world_size: int) -> dict[str, float]:
    """Table 2's continual-NTP baseline: one cross-entropy step on this rank's windows (rpt.ntp), with the
    update's packing, chunking and gradient clip."""
    start = time.perf_counter()
    lr = scheduler.get_last_lr()[0]
    update = ntp_update(policy, optimizer, windows, micro_batch_tokens=settings.micro_batch_tokens,
                        packed_rows=settings.packed_rows, chunk_size=settings.logprob_chunk_size,
                        grad_clip=settings.grad_clip, device=device, world_size=world_size)
    scheduler.step()
    return {"train/loss": update["loss"], "train/grad_norm": update["grad_norm"], "train/tokens": update["tokens"],
            "train/lr": lr, "perf/time_update": time.perf_counter() - start,
            "skipped_updates": update["skipped_updates"]}


# --- rollouts ------------------------------------------------------------------------------------------------

def collect_rollouts(engine: Engine, tokenizer, stream: SampleStream, collector: PooledGroupCollector,
                     contexts_per_rank: int, tensor_parallel_size: int, prompt: PromptSettings,
                     params: SamplingParams, reward: RewardSettings, seed: int, step: int,
                     first_token_logprobs: FirstTokenLogprobs | None = None) -> dict:
    """Generate and score rounds of contexts_per_rank contexts per data-parallel rank until the collector,
    pooled over all data-parallel ranks, holds the step's batch of groups with reward spread (dynamic
    sampling, from its start step) or the round cap is hit (DAPO pools globally; a rank-local batch would
    drop one rank's surplus while another goes short).

    Each round every rank sends the groups it keeps to every other rank (the ranks of a tensor-parallel
    group generate the same completions: only the first one's count), so every rank's collector sees the
    same inputs and takes the same decisions (stop, trim, error at the cap) without a further collective.
    -> stats of this rank's generation: time, and sums over every generated sample (on TP-group leaders
    only, so summing them over ranks counts each sample once)."""
    stats = {"generate": 0.0, "reward": 0.0, "all_reward_sum": 0.0, "all_samples": 0, "all_tokens": 0,
             "verify_timeouts": 0.0}
    counts = float(dist.get_rank() % tensor_parallel_size == 0) if dist.is_initialized() else 1.0
    round_index = 0
    while not collector.done:
        samples = stream.next_batch(contexts_per_rank)
        start = time.perf_counter()
        groups = generate_groups(engine, tokenizer, samples, prompt, params, reward.extraction, seed, step,
                                 round_index)
        stats["generate"] += time.perf_counter() - start
        start = time.perf_counter()
        rewards = score_groups(groups, tokenizer, reward, first_token_logprobs)  # (B, G)
        stats["reward"] += time.perf_counter() - start
        # every generated sample, kept or not: the unbiased view of how the policy does
        stats["all_reward_sum"] += counts * rewards.sum().item()
        stats["all_samples"] += counts * rewards.numel()
        stats["all_tokens"] += counts * sum(len(c.token_ids) for group in groups for c in group.completions)
        stats["verify_timeouts"] += counts * sum(float(group.diagnostics["verify_timeout"].sum()) for group in groups
                                                 if "verify_timeout" in group.diagnostics)  # the answer reward's
        kept = select_kept(groups, rewards, collector.step, collector.start_step)
        kept_by_dp_rank = all_gather_objects(kept)[::tensor_parallel_size]  # one entry per TP group
        collector.add_round(kept_by_dp_rank, [len(groups)] * len(kept_by_dp_rank))
        round_index += 1
    return stats


# --- the loop ------------------------------------------------------------------------------------------------

def train(cfg: Config) -> list[dict]:
    rank, world_size, device = init_distributed(cfg.train.dist_timeout_minutes)
    tp = cfg.rollout.tensor_parallel_size if cfg.rollout.engine == "vllm" and cfg.train.objective == "rpt" else 1
    dp_rank, dp_size = rank // tp, world_size // tp
    n_minibatches = cfg.train.batch_size // cfg.train.mini_batch_size
    if cfg.train.batch_size % (world_size * n_minibatches):
        raise ValueError(f"train.batch_size={cfg.train.batch_size} must split evenly over the {world_size} ranks "
                         f"(each updates on its share) and the {n_minibatches} mini-batches")
    contexts_per_rank = cfg.train.batch_size // dp_size
    out_dir = Path(cfg.train.output_dir)
    # before anything loads or is written: the data's token ids are this tokenizer's, a resume keeps what
    # defines the run (rpt/run_dir.py), and this job owns the run directory
    tokenizer = load_tokenizer(cfg.model.tokenizer_path or cfg.model.path)
    if cfg.data.path:  # RLVR reads questions as text, not prepared token ids
        check_vocabulary(cfg.data.path, tokenizer)
    resume = latest_checkpoint(out_dir / "checkpoints") if cfg.train.resume == "auto" else \
        (Path(cfg.train.resume) if cfg.train.resume else None)
    saved = saved_run_config(resume, out_dir) if resume is not None else None
    config_changes = compare_configs(saved, to_dict(cfg), to_dict(Config())) if saved else []
    run_lock, run_id = claim_run_dir(out_dir, cfg.train.resume, cfg.train.overwrite)
    if rank == 0:
        save_config(cfg, out_dir / "config.yaml")
    seed_everything(cfg.train.seed, rank)
    prompt, reward, params, update_cfg = prompt_settings(cfg), reward_settings(cfg), sampling_params(cfg), \
        update_settings(cfg)

    policy = build_policy(cfg.model.path, cfg.model.dtype, cfg.model.param_dtype, cfg.model.reduce_dtype,
                          cfg.model.activation_checkpointing, cfg.model.attn_implementation, device)
    n_params = sum(p.numel() for p in policy.parameters())
    reference = None
    if cfg.grpo.kl_coef > 0:  # the frozen initial policy of the KL term, sharded like the policy, in its
        # compute dtype; nothing is built at kl_coef 0 (the paper's run)
        reference = build_policy(cfg.model.path, cfg.model.param_dtype, cfg.model.param_dtype,
                                 cfg.model.reduce_dtype, False, cfg.model.attn_implementation, device)
        reference.requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.train.lr, betas=cfg.train.betas,
                                  weight_decay=cfg.train.weight_decay)
    warmup = cfg.train.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    stream = build_stream(cfg, tokenizer, dp_rank, dp_size)
    eval_questions = None  # RLVR's held-out questions, evenly spaced (all ranks hold the same list)
    if cfg.logging.eval_every and cfg.reward.kind == "answer":
        from rpt.eval.accuracy import select_evenly

        eval_questions = select_evenly(load_fitting_questions(cfg, tokenizer, cfg.logging.eval_questions, 0),
                                       cfg.logging.eval_max_samples)

    start_step, totals = 0, {"skipped_updates": 0, "train_compute": 0.0}
    if resume is not None:
        start_step, extra = load_checkpoint(resume, policy, optimizer, scheduler)
        # the checkpoint brought back the run's AdamW settings: the resuming config's take effect from here
        apply_optimizer_settings(optimizer, scheduler, cfg.train.lr, cfg.train.betas, cfg.train.weight_decay)
        stream.load_state_dict(extra["data"])
        totals = extra["totals"]
        print0(f"resumed from {resume} at step {start_step}" + "".join(
            f"\n  {key}: {old!r} -> {new!r}" for key, old, new in config_changes))
    if rank == 0:
        record_config_changes(out_dir, start_step, config_changes)
        for log in ("metrics.jsonl", "samples.jsonl"):  # steps after the checkpoint are logged again below
            truncate_jsonl(out_dir / log, start_step)

    def first_token_logprobs(contexts, targets):  # P(y[0] | x_<t) for the dense rewards (Appendix A)
        return sequence_logprobs(policy, contexts, targets, device, 1.0, cfg.train.micro_batch_tokens,
                                 update_cfg.packed_rows, cfg.grpo.logprob_chunk_size)

    engine = build_engine(cfg, tokenizer, device) if cfg.train.objective == "rpt" else None  # NTP: no rollouts
    sync_dtype = DTYPES[engine_dtype(cfg, device)]
    if engine is not None:
        engine.update_weights(iter_full_weights(policy, sync_dtype))
    writer = None
    if rank == 0 and cfg.logging.tensorboard:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=start_step + 1)
    print0(f"rpt: {n_params / 1e6:.2f}M params, {world_size} ranks (tp {tp}), engine {cfg.rollout.engine}, "
           f"{cfg.train.batch_size} contexts x G={cfg.rollout.n} per step, steps {start_step}..{cfg.train.steps}")
    if device.type == "cuda":  # what launch/plan.py predicts for this job, to hold against perf/mem_*
        plan = plan_memory(read_model_shape(cfg.model.path), cfg, world_size,
                           torch.cuda.get_device_properties(device).total_memory / GIB,
                           int(os.environ.get("LOCAL_WORLD_SIZE", world_size)))
        print0(summary_line(plan))

    # on a GPU the engine and the training state take turns: AdamW state on the CPU while generating
    offload = cfg.rollout.offload_optimizer and device.type == "cuda"

    def wake_engine() -> None:
        """Hand the GPU to the engine (rpt/rollout/engine.py's lifecycle): before rollouts and evaluation."""
        if offload:
            move_optimizer_state(optimizer, "cpu")
        empty_cache(device)  # the moments' and the update's cached blocks, for the KV cache to map
        engine.wake()

    # the policy before training, so the end-of-run summary and the plot show eval accuracy before vs after
    if cfg.logging.eval_every and start_step == 0:
        if engine is not None:
            wake_engine()
        metrics = evaluate_policy(policy, tokenizer, engine, cfg, 0, eval_questions)
        if rank == 0:
            log_step(out_dir, writer, 0, metrics, cfg)
    history = []
    # rank 0, on a terminal only (disable=None): a CI log keeps the per-step lines alone
    progress = tqdm(total=cfg.train.steps, initial=start_step, unit="step", disable=True if rank else None)

    def finish_step(step: int, metrics: dict, groups: list[Group], rewards: torch.Tensor | None) -> None:
        """Evaluate, log and checkpoint: the same for every objective."""
        # evaluate on the held-out splits (rpt.eval), every rank its share
        if cfg.logging.eval_every and (step + 1) % cfg.logging.eval_every == 0:
            if engine is not None:  # reasoning mode generates: the engine wakes first (the next step's wake is
                wake_engine()  # then a no-op)
            metrics.update(evaluate_policy(policy, tokenizer, engine, cfg, step + 1, eval_questions))
            if cfg.train.objective == "ntp":
                metrics["eval/heldout_loss"] = ntp_eval_loss(
                    policy, heldout_windows, micro_batch_tokens=cfg.train.micro_batch_tokens,
                    packed_rows=update_cfg.packed_rows, chunk_size=cfg.grpo.logprob_chunk_size, device=device)
        history.append({"step": step + 1, **metrics})
        if rank == 0:
            log_step(out_dir, writer, step + 1, metrics, cfg)
            if "rollout/reward_mean" in metrics:
                progress.set_postfix(reward=f"{metrics['rollout/reward_mean']:.3f}", refresh=False)
            progress.update()
            if cfg.logging.samples_every and (step + 1) % cfg.logging.samples_every == 0 and groups:
                dump_samples(out_dir, step + 1, groups, rewards, tokenizer, cfg.logging.samples_per_dump)
        # checkpoint
        if cfg.train.save_every and ((step + 1) % cfg.train.save_every == 0 or step + 1 == cfg.train.steps):
            save_checkpoint(out_dir / "checkpoints", policy, optimizer, scheduler, step + 1,
                            {"data": stream.state_dict(), "totals": totals}, keep=cfg.train.keep_checkpoints,
                            run_id=run_id, config=to_dict(cfg))

    if cfg.train.objective == "ntp" and cfg.logging.eval_every:  # held-out documents' windows, this rank's share
        heldout = WindowStream(cfg.data.path, cfg.data.window_tokens, special_prefix_ids(tokenizer),
                               doc_split="heldout", shuffle=False)
        heldout_windows = [heldout.window(i) for i in range(dp_rank, heldout.num_windows, dp_size)]
    for step in range(start_step, cfg.train.steps):
        step_start = time.perf_counter()
        if cfg.train.objective == "ntp":  # Table 2's baseline: a cross-entropy step instead of rollouts
            metrics = ntp_step(policy, optimizer, scheduler, stream.next_batch(contexts_per_rank), update_cfg,
                               device, world_size)
            totals["skipped_updates"] += metrics.pop("skipped_updates")
            totals["train_compute"] += 6 * n_params * metrics["train/tokens"]
            metrics.update({"train/skipped_updates": totals["skipped_updates"],
                            "perf/train_compute": totals["train_compute"],
                            "perf/time_step": time.perf_counter() - step_start})
            finish_step(step, metrics, [], None)
            continue
        # sample contexts -> generate -> reward (refilled by dynamic sampling)
        reset_peak_memory(device)  # perf/mem_generate: this phase, not the previous step's evaluation
        wake_engine()
        collector = PooledGroupCollector(cfg.train.batch_size, cfg.grpo.max_generation_rounds,
                                         cfg.grpo.on_round_cap, step=step,
                                         start_step=cfg.grpo.dynamic_sampling_start_step)
        rollout_stats = collect_rollouts(engine, tokenizer, stream, collector, contexts_per_rank, tp, prompt,
                                         params, reward, cfg.train.seed, step, first_token_logprobs)
        # this rank's share of the pooled batch: every rank trains on distinct groups, the ranks of a
        # tensor-parallel group included (they generated the same completions)
        _, _, pool_stats = collector.result()  # raises on every rank alike at the cap with on_cap=error
        groups, rewards = collector.share(rank, world_size)  # (b_r, G)
        # advantages, per group of G
        adv = compute_advantages(rewards, eps=cfg.grpo.adv_eps, scale_by_std=cfg.grpo.scale_by_std) \
            if len(groups) else rewards  # (b, G)
        completions = [c for group in groups for c in group.completions]
        memory = memory_metrics(device, "generate")
        # update
        engine.sleep()
        empty_cache(device)  # what the engine released, before the update allocates
        if offload:
            move_optimizer_state(optimizer, device)
        start = time.perf_counter()
        prompts = [group.prompt_ids for group in groups for _ in range(cfg.rollout.n)]  # N = b * G
        responses = [c.token_ids for group in groups for c in group.completions]  # N
        # the reference's log-probs of the sampled tokens, once per step, at the sampling temperature
        ref_logps = sequence_logprobs(reference, prompts, responses, device, cfg.rollout.temperature,
                                      cfg.train.micro_batch_tokens, update_cfg.packed_rows,
                                      cfg.grpo.logprob_chunk_size) if reference is not None else None
        lr = scheduler.get_last_lr()[0]  # the rate this step's update uses
        update = update_policy(
            policy, optimizer, prompts, responses, adv.reshape(-1), update_cfg, device, world_size,
            behavior_logps=[torch.tensor(c.logprobs or [0.0] * len(c.token_ids)) for c in completions],
            ref_logps=ref_logps)
        scheduler.step()
        update_time = time.perf_counter() - start
        memory.update(memory_metrics(device, "update"))
        # sync weights into the engine (its weights only: the KV cache comes back with the next wake)
        start = time.perf_counter()
        engine.update_weights(iter_full_weights(policy, sync_dtype))
        sync_time = time.perf_counter() - start
        memory.update(memory_metrics(device, "sync"))

        # log: sums over ranks (one collective), then means
        lengths = [len(c.token_ids) for c in completions]
        sums = reduce_metrics({
            "reward_sum": rewards.sum(), "correct": (rewards == 1).sum(), "samples": rewards.numel(),
            "think": sum(group.diagnostics["had_think"].sum() for group in groups),
            "box": sum(group.diagnostics["had_box"].sum() for group in groups),
            "gen_tokens": sum(lengths), "truncated": sum(c.finish_reason == "length" for c in completions),
            "prompt_tokens": sum(len(group.prompt_ids) for group in groups) * cfg.rollout.n,
            "all_reward_sum": rollout_stats["all_reward_sum"], "all_samples": rollout_stats["all_samples"],
            "all_tokens": rollout_stats["all_tokens"],
        })
        maxima = reduce_metrics({"response_len_max": max(lengths, default=0),
                                 **{k: v for k, v in memory.items() if not k.endswith("_free_gib")}}, dist.ReduceOp.MAX)
        free = {k: v for k, v in memory.items() if k.endswith("_free_gib")}  # CUDA only: the tightest rank's
        maxima.update(reduce_metrics(free, dist.ReduceOp.MIN) if free else {})
        n = max(sums["samples"], 1)
        totals["skipped_updates"] += update["skipped_updates"]
        totals["train_compute"] += 6 * n_params * (sums["gen_tokens"] + sums["prompt_tokens"]) \
            + 2 * n_params * sums["all_tokens"]
        step_time = time.perf_counter() - step_start
        metrics = {
            # all generated samples; the kept_ metrics are what the update trained on (after dynamic sampling)
            "rollout/reward_mean": sums["all_reward_sum"] / max(sums["all_samples"], 1),
            "rollout/kept_reward_mean": sums["reward_sum"] / n, "rollout/kept_accuracy": sums["correct"] / n,
            "rollout/had_think": sums["think"] / n, "rollout/had_box": sums["box"] / n,
            "rollout/response_len_mean": sums["gen_tokens"] / n, "rollout/response_len_max": maxima["response_len_max"],
            "rollout/truncated_frac": sums["truncated"] / n,
            # the pooled collector's decisions are global: the same numbers on every rank
            "rollout/kept_group_frac": pool_stats["groups_kept"] / max(pool_stats["groups_generated"], 1),
            "rollout/groups_filtered": pool_stats["groups_filtered"], "rollout/groups_surplus": pool_stats["groups_surplus"],
            "rollout/generation_rounds": pool_stats["rounds"], "rollout/partial_batch": pool_stats["partial"],
            **{f"train/{k}": v for k, v in update.items() if k != "skipped_updates"},
            "train/skipped_updates": totals["skipped_updates"], "train/lr": lr,
            "perf/time_generate": rollout_stats["generate"], "perf/time_reward": rollout_stats["reward"],
            "perf/time_update": update_time, "perf/time_sync": sync_time, "perf/time_step": step_time,
            "perf/tokens_per_s": sums["all_tokens"] / max(rollout_stats["generate"], 1e-9) / world_size,
            "perf/train_compute": totals["train_compute"],
            **{key: maxima[key] for key in memory},  # per phase, the rank that used the most / had least free
        }
        if cfg.reward.kind == "answer":
            metrics["reward/verify_timeouts"] = reduce_metrics({"n": rollout_stats["verify_timeouts"]})["n"]
        finish_step(step, metrics, groups, rewards)

    progress.close()
    if cfg.train.export_hf:
        export_hf(policy, tokenizer, out_dir / "hf")
        print0(f"exported the policy to {out_dir / 'hf'}")
    if writer is not None:
        writer.close()
    if rank == 0:
        print_summary(out_dir, cfg.train.export_hf)
    if run_lock is not None:
        run_lock.release()
    return history


def print_summary(out_dir: Path, exported: bool) -> None:
    """The whole run (resumed parts included) from metrics.jsonl: start vs end, and where its outputs are."""
    records, _ = read_metrics(out_dir / "metrics.jsonl")
    if not records:
        return
    plot = plot_run(out_dir)
    print("summary:\n  " + "\n  ".join(summarize(records)), flush=True)
    print(f"  run dir {out_dir} | HF export {out_dir / 'hf' if exported else 'off (train.export_hf)'} | "
          f"plot {plot}", flush=True)


def evaluate_policy(policy, tokenizer, engine: Engine, cfg: Config, step: int,
                    eval_questions: list[Question] | None) -> dict[str, float]:
    """RPT and NTP: next-token accuracy on the held-out splits (rpt.eval); RLVR: answer accuracy (avg@1) on
    the held-out questions at the rollout's sampling settings (rpt.eval.math)."""
    if cfg.reward.kind == "answer":
        from rpt.eval.math import evaluate_math

        result, _ = evaluate_math(tokenizer, engine, eval_questions, temperature=cfg.rollout.temperature,
                                  top_p=cfg.rollout.top_p, max_tokens=cfg.rollout.max_response_tokens,
                                  seed=cfg.train.seed, step=step, chat=cfg.data.chat,
                                  think_prefill=cfg.data.think_prefill, batch_size=len(eval_questions),
                                  verify_timeout_s=cfg.reward.verify_timeout_s)
        return {"eval/math/answer_acc": result["acc"], "eval/math/num_questions": float(result["num_questions"]),
                "eval/math/verify_timeouts": float(result["verify_timeouts"])}
    from rpt.eval import evaluate

    results = evaluate(policy, tokenizer, engine, cfg.data.path, cfg.logging.eval_splits, mode=cfg.logging.eval_mode,
                       max_samples=cfg.logging.eval_max_samples, prompt=prompt_settings(cfg),
                       sampling=sampling_params(cfg, n=1), extraction=cfg.reward.extraction, seed=cfg.train.seed,
                       step=step)
    return {f"eval/{key}": value for key, value in results.items()}


def log_step(out_dir: Path, writer, step: int, metrics: dict, cfg: Config) -> None:
    with open(out_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": step, **metrics}) + "\n")
    if writer is not None:
        for key, value in metrics.items():
            writer.add_scalar(key, value, step)
    # tqdm.write keeps the progress bar below the lines
    if step == 0:  # the evaluation before training
        tqdm.write("  eval at step 0 | " + " | ".join(f"{k[len('eval/'):]} {v:.3f}" for k, v in metrics.items()
                                                      if k.startswith("eval/") and k.endswith("_acc")))
    elif (step % cfg.logging.log_every == 0 or step == cfg.train.steps) and "rollout/reward_mean" not in metrics:
        tqdm.write(f"step {step}/{cfg.train.steps} | ntp loss {metrics['train/loss']:.4f} | gnorm "
                   f"{metrics['train/grad_norm']:.3f} | {metrics['train/tokens']:.0f} tokens | upd "
                   f"{metrics['perf/time_update']:.1f}s" + "".join(f" | {k[5:]} {v:.4f}" for k, v in metrics.items()
                                                                   if k.startswith("eval/")))
    elif step % cfg.logging.log_every == 0 or step == cfg.train.steps:
        m = metrics
        tqdm.write(f"step {step}/{cfg.train.steps} | reward {m['rollout/reward_mean']:.3f} "
                   f"| loss {m['train/loss']:+.2e} | gnorm {m['train/grad_norm']:.3f} "
                   f"| kept {m['rollout/kept_group_frac']:.2f} | len {m['rollout/response_len_mean']:.1f} "
                   f"| mismatch {m['train/mismatch_mean']:.1e} | gen {m['perf/time_generate']:.1f}s "
                   f"upd {m['perf/time_update']:.1f}s sync {m['perf/time_sync']:.1f}s "
                   f"| {m['perf/tokens_per_s']:.0f} tok/s/rank")
        evals = {k[len("eval/"):]: v for k, v in m.items() if k.startswith("eval/") and k.endswith("_acc")}
        if evals:
            tqdm.write(f"  eval at step {step} | " + " | ".join(f"{k} {v:.3f}" for k, v in evals.items()))


def dump_samples(out_dir: Path, step: int, groups: list[Group], rewards: torch.Tensor, tokenizer,
                 limit: int) -> None:
    with open(out_dir / "samples.jsonl", "a") as f:
        for group, group_rewards in list(zip(groups, rewards))[:limit]:
            item = group.sample
            source = {"question_id": item.question_id, "answers": item.answers} if isinstance(item, Question) else \
                {"doc_id": item.doc_id, "position": item.position,
                 "continuation": tokenizer.decode(item.continuation_ids)}
            f.write(json.dumps({
                "step": step, **source, "prompt": tokenizer.decode(group.prompt_ids),
                "responses": group.responses, "rewards": group_rewards.tolist(),
            }) + "\n")  # ASCII escapes: a response cut inside a UTF-8 character holds lone surrogates
