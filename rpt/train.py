"""The RPT training loop: `train(cfg)`, one function, every rank running the same code (SPMD).

One step (arXiv 2506.08007, Section 3.3), `rpt_step`:
    wake the engine -> sample contexts -> G completions each -> reward (Eq. 3) -> share the pooled batch
    (dynamic sampling refills it from `grpo.dynamic_sampling_start_step`) -> advantages -> release the GPU
    -> reference log-probs (KL only) -> update (one exact on-policy AdamW step by default) -> sync weights
    into the engine.
`ntp_step` beside it is Table 2's continual-NTP baseline. `train()` builds (rpt/build.py), then runs
`for step: metrics = step_fn(...); evaluate if due; run.log; save if due` (rpt/run_dir.py's Run).

Launch with `torchrun --nproc_per_node=N launch/train.py --config ...` (a plain `python launch/train.py`
runs one process without FSDP). The policy is sharded with FSDP2 over all ranks; the rollout engine is
co-located in every rank; data is split over data-parallel ranks (rank // tensor_parallel_size).

With rpt/build.py and the launchers, the only module that reads Config: the phases it calls
(rpt.rollout.groups for prompt -> reward, rpt.update for the update, rpt.eval for evaluation) take explicit
settings.

Deviations from the paper: `train.grad_clip` is the gradient-norm clip (see rpt/config.py); a step whose
gradient norm is not finite is skipped (the paper says nothing); the TIS correction (`grpo.tis_cap`) is off
by default as in the paper.
"""
import functools
import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from rpt.build import Layout, build_engine, build_eval_questions, build_heldout_windows, build_optimizer, \
    build_reference, build_stream, build_train_policy, data_parallel_layout, engine_dtype, open_run, \
    prompt_settings, reward_settings, sampling_params, update_settings
from rpt.config import Config
from rpt.data import SampleStream
from rpt.data.prompts import PromptSettings
from rpt.data.sample import Question
from rpt.data.samples_io import check_vocabulary
from rpt.dist import all_gather_objects, empty_cache, init_distributed, memory_metrics, print0, reduce_metrics, \
    reset_peak_memory, seed_everything
from rpt.fsdp import iter_full_weights, move_optimizer_state
from rpt.grpo.advantages import compute_advantages
from rpt.grpo.sampling import PooledGroupCollector, select_kept
from rpt.model import DTYPES, load_tokenizer
from rpt.ntp import ntp_eval_loss, ntp_update
from rpt.plan import GIB, plan_memory, read_model_shape, summary_line
from rpt.report import rollout_step_metrics, rollout_sums
from rpt.rollout.engine import Engine, SamplingParams
from rpt.rollout.groups import FirstTokenLogprobs, Group, RewardSettings, flatten_groups, generate_groups, \
    score_groups
from rpt.update import UpdateSettings, sequence_logprobs, update_policy


@dataclass
class Job:
    """What train() builds once and every step uses."""
    cfg: Config
    layout: Layout
    device: torch.device
    tokenizer: object
    policy: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    reference: torch.nn.Module | None  # the KL term's frozen initial policy (grpo.kl_coef > 0)
    stream: object  # SampleStream, QuestionStream or WindowStream (rpt/build.py build_stream)
    prompt: PromptSettings
    reward: RewardSettings
    sampling: SamplingParams
    update: UpdateSettings
    eval_questions: list[Question] | None  # RLVR's held-out questions
    heldout_windows: list[list[int]] | None  # the NTP baseline's held-out windows, this rank's share
    n_params: int
    offload: bool  # on a GPU the engine and the training state take turns: AdamW state on the CPU while generating
    engine: Engine | None = None  # NTP: no rollouts
    sync_dtype: torch.dtype | None = None


# --- the loop ------------------------------------------------------------------------------------------------

def train(cfg: Config) -> list[dict]:
    rank, world_size, device = init_distributed(cfg.train.dist_timeout_minutes)
    layout = data_parallel_layout(cfg, rank, world_size)
    # before anything loads or is written: the data's token ids are this tokenizer's, a resume keeps what
    # defines the run (rpt/run_dir.py), and this job owns the run directory
    tokenizer = load_tokenizer(cfg.model.tokenizer_path or cfg.model.path)
    if cfg.data.path:  # RLVR reads questions as text, not prepared token ids
        check_vocabulary(cfg.data.path, tokenizer)
    run = open_run(cfg)
    seed_everything(cfg.train.seed, rank)

    # build
    policy = build_train_policy(cfg, device)
    optimizer, scheduler = build_optimizer(cfg, policy)
    job = Job(cfg, layout, device, tokenizer, policy, optimizer, scheduler, build_reference(cfg, device),
              build_stream(cfg, tokenizer, layout.dp_rank, layout.dp_size), prompt_settings(cfg),
              reward_settings(cfg), sampling_params(cfg), update_settings(cfg), build_eval_questions(cfg, tokenizer),
              build_heldout_windows(cfg, tokenizer, layout.dp_rank, layout.dp_size),
              n_params=sum(p.numel() for p in policy.parameters()),
              offload=cfg.rollout.offload_optimizer and device.type == "cuda")
    start_step, totals = run.restore(policy, optimizer, scheduler, job.stream, lr=cfg.train.lr,
                                     betas=cfg.train.betas, weight_decay=cfg.train.weight_decay)
    if cfg.train.objective == "rpt":
        job.engine = build_engine(cfg, tokenizer, device)
        job.sync_dtype = DTYPES[engine_dtype(cfg, device)]
        job.engine.update_weights(iter_full_weights(policy, job.sync_dtype))
    print0(f"rpt: {job.n_params / 1e6:.2f}M params, {world_size} ranks (tp {layout.tp}), engine "
           f"{cfg.rollout.engine}, {cfg.train.batch_size} contexts x G={cfg.rollout.n} per step, "
           f"steps {start_step}..{cfg.train.steps}")
    if device.type == "cuda":  # what launch/plan.py predicts for this job, to hold against perf/mem_*
        plan = plan_memory(read_model_shape(cfg.model.path), cfg, world_size,
                           torch.cuda.get_device_properties(device).total_memory / GIB,
                           int(os.environ.get("LOCAL_WORLD_SIZE", world_size)))
        print0(summary_line(plan))

    # the policy before training, so the end-of-run summary and the plot show eval accuracy before vs after
    if cfg.logging.eval_every and start_step == 0:
        run.log(0, evaluate_policy(job, 0))
    step_fn = ntp_step if cfg.train.objective == "ntp" else rpt_step
    for step in range(start_step, cfg.train.steps):
        metrics, groups, rewards = step_fn(job, step, totals)
        if cfg.logging.eval_every and (step + 1) % cfg.logging.eval_every == 0:
            metrics.update(evaluate_policy(job, step + 1))
        run.log(step + 1, metrics, groups, rewards, tokenizer)
        run.save_if_due(step + 1, policy, optimizer, scheduler, {"data": job.stream.state_dict(), "totals": totals})
    return run.finish(policy, tokenizer, export=cfg.train.export_hf)


# --- one step ------------------------------------------------------------------------------------------------

def rpt_step(job: Job, step: int, totals: dict) -> tuple[dict, list[Group], torch.Tensor]:
    """One GRPO step; -> (metrics reduced over ranks, this rank's groups, their rewards (b, G)). Adds the
    step's skipped updates and compute to `totals`."""
    cfg, device, layout = job.cfg, job.device, job.layout
    step_start = time.perf_counter()
    # sample contexts -> generate -> reward (refilled by dynamic sampling)
    reset_peak_memory(device)  # perf/mem_generate: this phase, not the previous step's evaluation
    wake_engine(job)
    collector = PooledGroupCollector(cfg.train.batch_size, cfg.grpo.max_generation_rounds, cfg.grpo.on_round_cap,
                                     step=step, start_step=cfg.grpo.dynamic_sampling_start_step)
    rollout_stats = collect_rollouts(job.engine, job.tokenizer, job.stream, collector, layout.contexts_per_rank,
                                     layout.tp, job.prompt, job.sampling, job.reward, cfg.train.seed, step,
                                     functools.partial(first_token_logprobs, job))
    # share: this rank's part of the pooled batch; every rank trains on distinct groups, the ranks of a
    # tensor-parallel group included (they generated the same completions)
    _, _, pool_stats = collector.result()  # raises on every rank alike at the cap with on_cap=error
    groups, rewards = collector.share(layout.rank, layout.world_size)  # (b, G)
    # advantages, per group of G
    adv = compute_advantages(rewards, eps=cfg.grpo.adv_eps, scale_by_std=cfg.grpo.scale_by_std) \
        if len(groups) else rewards  # (b, G)
    memory = memory_metrics(device, "generate")
    # release the GPU: the engine sleeps, the optimizer state comes back for the update
    job.engine.sleep()
    empty_cache(device)  # what the engine released, before the update allocates
    if job.offload:
        move_optimizer_state(job.optimizer, device)
    start = time.perf_counter()
    prompts, responses, behavior_logps = flatten_groups(groups)  # N = b * G each
    # reference: its log-probs of the sampled tokens, once per step, at the sampling temperature
    ref_logps = sequence_logprobs(job.reference, prompts, responses, device, job.update.temperature,
                                  job.update.micro_batch_tokens, job.update.packed_rows,
                                  job.update.logprob_chunk_size) if job.reference is not None else None
    # update
    lr = job.scheduler.get_last_lr()[0]  # the rate this step's update uses
    update = update_policy(job.policy, job.optimizer, prompts, responses, adv.reshape(-1), job.update, device,
                           layout.world_size, behavior_logps=behavior_logps, ref_logps=ref_logps)
    job.scheduler.step()
    update_time = time.perf_counter() - start
    memory.update(memory_metrics(device, "update"))
    # sync weights into the engine (its weights only: the KV cache comes back with the next wake)
    start = time.perf_counter()
    job.engine.update_weights(iter_full_weights(job.policy, job.sync_dtype))
    sync_time = time.perf_counter() - start
    memory.update(memory_metrics(device, "sync"))

    # metrics: sums over ranks (one collective), maxima and CUDA free-memory minima, then means
    sums = reduce_metrics(rollout_sums(groups, rewards, rollout_stats, cfg.rollout.n))
    maxima = reduce_metrics({"response_len_max": max(map(len, responses), default=0),
                             **{k: v for k, v in memory.items() if not k.endswith("_free_gib")}}, dist.ReduceOp.MAX)
    free = {k: v for k, v in memory.items() if k.endswith("_free_gib")}  # CUDA only: the tightest rank's
    maxima.update(reduce_metrics(free, dist.ReduceOp.MIN) if free else {})
    totals["skipped_updates"] += update["skipped_updates"]
    totals["train_compute"] += 6 * job.n_params * (sums["gen_tokens"] + sums["prompt_tokens"]) \
        + 2 * job.n_params * sums["all_tokens"]
    times = {"generate": rollout_stats["generate"], "reward": rollout_stats["reward"], "update": update_time,
             "sync": sync_time, "step": time.perf_counter() - step_start}
    metrics = rollout_step_metrics(sums, maxima, pool_stats, update, times, lr=lr, totals=totals,
                                   world_size=layout.world_size)
    if cfg.reward.kind == "answer":
        metrics["reward/verify_timeouts"] = reduce_metrics({"n": rollout_stats["verify_timeouts"]})["n"]
    return metrics, groups, rewards


def ntp_step(job: Job, step: int, totals: dict) -> tuple[dict, list[Group], None]:
    """Table 2's continual-NTP baseline: one cross-entropy step on this rank's windows (rpt.ntp), with the
    update's packing, chunking and gradient clip. Same return as rpt_step, with no groups."""
    start = time.perf_counter()
    lr = job.scheduler.get_last_lr()[0]
    settings = job.update
    update = ntp_update(job.policy, job.optimizer, job.stream.next_batch(job.layout.contexts_per_rank),
                        micro_batch_tokens=settings.micro_batch_tokens, packed_rows=settings.packed_rows,
                        chunk_size=settings.logprob_chunk_size, grad_clip=settings.grad_clip, device=job.device,
                        world_size=job.layout.world_size)
    job.scheduler.step()
    totals["skipped_updates"] += update["skipped_updates"]
    totals["train_compute"] += 6 * job.n_params * update["tokens"]
    elapsed = time.perf_counter() - start
    return {"train/loss": update["loss"], "train/grad_norm": update["grad_norm"], "train/tokens": update["tokens"],
            "train/lr": lr, "perf/time_update": elapsed, "train/skipped_updates": totals["skipped_updates"],
            "perf/train_compute": totals["train_compute"], "perf/time_step": elapsed}, [], None


def wake_engine(job: Job) -> None:
    """Hand the GPU to the engine (rpt/rollout/engine.py's lifecycle): before rollouts and evaluation."""
    if job.offload:
        move_optimizer_state(job.optimizer, "cpu")
    empty_cache(job.device)  # the moments' and the update's cached blocks, for the KV cache to map
    job.engine.wake()


def first_token_logprobs(job: Job, contexts: list[list[int]], targets: list[list[int]]) -> list[torch.Tensor]:
    """P(y[0] | x_<t) under the policy, for the dense rewards (Appendix A)."""
    return sequence_logprobs(job.policy, contexts, targets, job.device, 1.0, job.update.micro_batch_tokens,
                             job.update.packed_rows, job.update.logprob_chunk_size)


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


# --- evaluation ----------------------------------------------------------------------------------------------

def evaluate_policy(job: Job, step: int) -> dict[str, float]:
    """RPT: next-token accuracy on the held-out splits (rpt.eval); RLVR: answer accuracy (avg@1) on the
    held-out questions at the rollout's sampling settings (rpt.eval.math); NTP: the same next-token accuracy
    and the held-out cross-entropy. Reasoning mode generates: the engine wakes first (the next step's wake is
    then a no-op)."""
    cfg = job.cfg
    if job.engine is not None:
        wake_engine(job)
    if cfg.reward.kind == "answer":
        from rpt.eval.math import evaluate_math

        result, _ = evaluate_math(job.tokenizer, job.engine, job.eval_questions, temperature=job.sampling.temperature,
                                  top_p=job.sampling.top_p, max_tokens=job.sampling.max_tokens, seed=cfg.train.seed,
                                  step=step, chat=job.prompt.chat, think_prefill=job.prompt.think_prefill,
                                  batch_size=len(job.eval_questions), verify_timeout_s=job.reward.verify_timeout_s)
        return {"eval/math/answer_acc": result["acc"], "eval/math/num_questions": float(result["num_questions"]),
                "eval/math/verify_timeouts": float(result["verify_timeouts"])}
    from rpt.eval import evaluate

    results = evaluate(job.policy, job.tokenizer, job.engine, cfg.data.path, cfg.logging.eval_splits,
                       mode=cfg.logging.eval_mode, max_samples=cfg.logging.eval_max_samples, prompt=job.prompt,
                       sampling=sampling_params(cfg, n=1), extraction=job.reward.extraction, seed=cfg.train.seed,
                       step=step)
    metrics = {f"eval/{key}": value for key, value in results.items()}
    if job.heldout_windows is not None:
        metrics["eval/heldout_loss"] = ntp_eval_loss(
            job.policy, job.heldout_windows, micro_batch_tokens=job.update.micro_batch_tokens,
            packed_rows=job.update.packed_rows, chunk_size=job.update.logprob_chunk_size, device=job.device)
    return metrics
