"""The RPT training loop: `train(cfg)`, one function, every rank running the same code (SPMD).

One step (DESIGN.md "One step of the loop"):
    sample contexts -> prompts -> G completions each -> reward -> advantages (dynamic sampling refills the
    batch from `grpo.dynamic_sampling_start_step`) -> update (one exact on-policy AdamW step by default)
    -> sync weights into the engine -> log -> checkpoint.

Launch with `torchrun --nproc_per_node=N launch/train.py --config ...` (a plain `python launch/train.py`
runs one process without FSDP). The policy is sharded with FSDP2 over all ranks; the rollout engine is
co-located in every rank; data is split over data-parallel ranks (rank // tensor_parallel_size).

Deviations from the paper: `train.grad_clip` is the gradient-norm clip (see rpt/config.py); a step whose
gradient norm is not finite is skipped (the paper says nothing); the TIS correction (`grpo.tis_cap`) is off
by default as in the paper.
"""
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from rpt.config import Config, save_config
from rpt.data import SampleStream, build_prompt_ids
from rpt.data.prompts import special_prefix_ids
from rpt.data.sample import Sample
from rpt.dist import all_reduce, init_distributed, print0, seed_everything
from rpt.fsdp import build_policy, clip_grad_norm, export_hf, iter_full_weights, latest_checkpoint, \
    load_checkpoint, move_optimizer_state, save_checkpoint
from rpt.grpo.advantages import compute_advantages
from rpt.grpo.loss import policy_loss
from rpt.grpo.packing import pack_micro_batches
from rpt.grpo.sampling import GroupCollector
from rpt.model import load_model, load_tokenizer
from rpt.reward import compute_rewards, extract_prediction, first_token_id, token_bytes, token_text
from rpt.rollout.engine import Completion, Engine, SamplingParams


@dataclass
class Group:
    """One context and its G completions: the unit that dynamic sampling keeps or drops."""
    sample: Sample
    prompt_ids: list[int]
    completions: list[Completion]
    responses: list[str]  # what the reward saw: prefill + generated text
    diagnostics: dict[str, torch.Tensor] = field(default_factory=dict)  # (G,) each


# --- wiring ------------------------------------------------------------------------------------------------

def build_engine(cfg: Config, tokenizer, device: torch.device) -> Engine:
    eos_ids = [tokenizer.eos_token_id]
    if cfg.rollout.engine == "hf":
        from rpt.rollout.hf_engine import HFEngine

        # a plain copy per rank, refreshed by update_weights: fine for the small models this engine serves
        copy = load_model(cfg.model.path, "float32", cfg.model.attn_implementation, device=device)
        return HFEngine(copy, eos_ids, tokenizer.pad_token_id)
    from rpt.rollout.vllm_engine import VLLMEngine  # without vllm: an ImportError naming the install extra

    return VLLMEngine(
        cfg.model.path, eos_ids, dtype=cfg.model.param_dtype if device.type == "cuda" else "float32",
        tensor_parallel_size=cfg.rollout.tensor_parallel_size, seed=cfg.train.seed,
        max_model_len=cfg.data.max_prompt_tokens + cfg.rollout.max_response_tokens,
        gpu_memory_utilization=cfg.rollout.gpu_memory_utilization,
        kv_cache_memory_bytes=cfg.rollout.kv_cache_memory_bytes,
        enforce_eager=cfg.rollout.enforce_eager, sleep_level=cfg.rollout.sleep_level,
    )


def make_prompt(tokenizer, sample: Sample, cfg: Config) -> list[int]:
    """Template + chat template + prefill, with the context cut from the left to fit max_prompt_tokens."""
    context = sample.context_ids
    while True:
        ids = build_prompt_ids(tokenizer, context, template=cfg.data.template, chat=cfg.data.chat,
                               think_prefill=cfg.data.think_prefill, response_prefill=cfg.data.response_prefill)
        excess = len(ids) - cfg.data.max_prompt_tokens
        if excess <= 0:
            return ids
        if excess >= len(context):
            raise ValueError(f"the template alone is {len(ids) - len(context)} tokens, over "
                             f"data.max_prompt_tokens={cfg.data.max_prompt_tokens}")
        context = context[excess:]


def sample_seed(base_seed: int, step: int, round_index: int, sample: Sample) -> int:
    """A generation seed fixed by the sample's identity, not by the rank or batch position it lands in."""
    return (base_seed * 1_000_003 + step * 7_919 + round_index * 104_729 + sample.doc_id * 31_337
            + sample.position) % (2**31 - 1)


# --- rollouts ------------------------------------------------------------------------------------------------

def generate_groups(engine: Engine, tokenizer, samples: list[Sample], cfg: Config, step: int,
                    round_index: int) -> list[Group]:
    prompts = [make_prompt(tokenizer, sample, cfg) for sample in samples]
    params = SamplingParams(n=cfg.rollout.n, temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                            max_tokens=cfg.rollout.max_response_tokens)
    seeds = [sample_seed(cfg.train.seed, step, round_index, sample) for sample in samples]
    outputs = engine.generate(prompts, params, seeds=seeds)
    eos = tokenizer.eos_token_id
    prefill = cfg.data.response_prefill if cfg.reward.extraction == "boxed" else ""
    groups = []
    for sample, prompt, completions in zip(samples, prompts, outputs):
        responses = [prefill + token_text(tokenizer, [t for t in c.token_ids if t != eos]) for c in completions]
        groups.append(Group(sample, prompt, completions, responses))
    return groups


def score_groups(groups: list[Group], tokenizer, policy, cfg: Config, device) -> torch.Tensor:
    """-> rewards (B, G); fills each group's diagnostics."""
    g = cfg.rollout.n
    responses = [r for group in groups for r in group.responses]  # N = B * G
    pieces = [token_bytes(tokenizer, group.sample.continuation_ids) for group in groups]  # once per context
    continuations = [group_pieces for group_pieces in pieces for _ in range(g)]  # N, shared by the G samples
    extra = {}
    if cfg.reward.kind != "prefix_match":
        if cfg.reward.extraction == "raw":  # the first generated token is the prediction's first token
            first_ids = [c.token_ids[0] if c.token_ids else None for group in groups for c in group.completions]
        else:
            first_ids = [first_token_id(tokenizer, extract_prediction(r)) for r in responses]
        extra = {"first_token_ids": first_ids,
                 "target_token_ids": [group.sample.continuation_ids[0] for group in groups for _ in range(g)]}
        if cfg.reward.kind in ("dense", "conditional_dense"):
            # P(y[0] | x_<t) under the current policy (Appendix A), one extra forward without gradient, on the
            # context as the proxy scored it (the tokenizer's BOS, if any, in front)
            bos = special_prefix_ids(tokenizer)
            contexts = [bos + group.sample.context_ids for group in groups for _ in range(g)]
            firsts = [[t if t is not None else 0] for t in first_ids]
            logps = sequence_logprobs(policy, contexts, firsts, cfg, device, temperature=1.0)
            extra["first_token_probs"] = [math.exp(lp[0].item()) for lp in logps]
    rewards, diagnostics = compute_rewards(responses, continuations, kind=cfg.reward.kind,
                                           extraction=cfg.reward.extraction, group_size=g,
                                           penalty=cfg.reward.penalty, tokenizer=tokenizer, **extra)
    for i, group in enumerate(groups):
        group.diagnostics = {k: v[i * g:(i + 1) * g] for k, v in diagnostics.items()}
    return rewards.view(len(groups), g)  # (B, G)


def collect_rollouts(engine, tokenizer, policy, stream: SampleStream, cfg: Config, step: int, device,
                     contexts_per_rank: int) -> tuple[list[Group], torch.Tensor, dict]:
    """Generate and score until this rank holds contexts_per_rank groups with reward spread (dynamic
    sampling, from its start step) or the round cap is hit. Every rank runs the same number of rounds with
    the same number of contexts, so collectives inside generation or scoring line up."""
    collector = GroupCollector(contexts_per_rank, cfg.grpo.max_generation_rounds, cfg.grpo.on_round_cap,
                               step=step, start_step=cfg.grpo.dynamic_sampling_start_step)
    # every generated sample, kept or not: the unbiased view of how the policy does
    stats = {"generate": 0.0, "reward": 0.0, "all_reward_sum": 0.0, "all_samples": 0, "all_tokens": 0}
    round_index = 0
    while True:
        not_done = all_reduce(torch.tensor([0.0 if collector.done else 1.0]), dist.ReduceOp.MAX)
        if not_done.item() == 0:
            break
        samples = stream.next_batch(contexts_per_rank)
        start = time.perf_counter()
        groups = generate_groups(engine, tokenizer, samples, cfg, step, round_index)
        stats["generate"] += time.perf_counter() - start
        start = time.perf_counter()
        rewards = score_groups(groups, tokenizer, policy, cfg, device)  # (B, G)
        stats["reward"] += time.perf_counter() - start
        stats["all_reward_sum"] += rewards.sum().item()
        stats["all_samples"] += rewards.numel()
        stats["all_tokens"] += sum(len(c.token_ids) for group in groups for c in group.completions)
        if not collector.done:
            collector.add(groups, rewards)
        round_index += 1
    groups, rewards, collector_stats = collector.result()
    return groups, rewards, {**collector_stats, **stats}


# --- update ------------------------------------------------------------------------------------------------

def _equal_micro_batches(prompts, responses, cfg: Config):
    """Pack, then agree on the largest micro-batch count over ranks: under FSDP every rank must run the
    same number of forward/backward passes. A rank with fewer sequences than that count pads with None
    (a dummy pass whose loss is multiplied by zero).

    flash_attention_2 takes one packed row per micro-batch; sdpa/eager build an L x L mask for a packed
    row, so they get rows of the longest sequence instead (rpt/grpo/packing.py)."""
    budget = cfg.train.micro_batch_tokens
    rows = None if cfg.model.attn_implementation == "flash_attention_2" else 0
    local = pack_micro_batches(prompts, responses, budget, row_capacity=rows) if prompts else []
    count = int(all_reduce(torch.tensor([len(local)]), dist.ReduceOp.MAX).item())
    if len(local) < count:
        local = pack_micro_batches(prompts, responses, budget, min(count, len(prompts)), rows) if prompts else []
    return local + [None] * (count - len(local))


def _dummy_forward(policy, device) -> torch.Tensor:
    ids = torch.zeros(1, 2, dtype=torch.long, device=device)
    return policy(ids, torch.arange(2, device=device).view(1, 2), ids)  # (1, 2)


@torch.no_grad()
def sequence_logprobs(policy, prompts: list[list[int]], responses: list[list[int]], cfg: Config, device,
                      temperature: float) -> list[torch.Tensor]:
    """Log-probs of each response's tokens given its prompt (no gradient): a list of (len(response),)."""
    out = [None] * len(prompts)
    for mb in _equal_micro_batches(prompts, responses, cfg):
        if mb is None:
            _dummy_forward(policy, device)
            continue
        mb = mb.to(device)
        logp = policy(mb.input_ids, mb.position_ids, mb.targets, temperature=temperature,
                      chunk_size=cfg.grpo.logprob_chunk_size, loss_mask=mb.loss_mask)  # (R, L)
        per_token = logp[mb.loss_mask].float().cpu()
        offsets = [len(responses[i]) for i in mb.sequence_indices]
        for i, values in zip(mb.sequence_indices, per_token.split(offsets)):
            out[i] = values
    return out


def update_policy(policy, optimizer, groups: list[Group], adv: torch.Tensor, cfg: Config, device,
                  world_size: int) -> dict[str, float]:
    """Policy-gradient update(s) on this rank's groups; adv: (b, G). Returns step metrics reduced over ranks.

    The loss of each micro-batch is normalized by step-global token/sequence counts, so micro-batch losses
    summed over all micro-batches and ranks are the full-batch loss, whatever the split; FSDP averages
    gradients over ranks, hence the `* world_size`."""
    g = cfg.rollout.n
    prompts = [group.prompt_ids for group in groups for _ in range(g)]
    responses = [c.token_ids for group in groups for c in group.completions]
    behavior = [torch.tensor(c.logprobs or [0.0] * len(c.token_ids)) for group in groups for c in group.completions]
    seq_adv = adv.reshape(-1).float()  # (N,)
    n_minibatches = cfg.train.batch_size // cfg.train.mini_batch_size
    # exact on-policy (one update per step, the paper): old log-probs are the detached current ones;
    # with several updates per step they must be fixed before the first update
    old = sequence_logprobs(policy, prompts, responses, cfg, device, cfg.rollout.temperature) \
        if n_minibatches > 1 else None
    sums = {k: torch.zeros((), dtype=torch.float64) for k in
            ("loss", "pg_loss", "clip_frac", "approx_kl_old", "ratio_mean", "entropy", "mismatch_sum", "tis_weight")}
    mismatch_max = torch.zeros(())
    grad_norms, skipped = [], 0
    want_entropy = cfg.grpo.entropy_coef > 0 or cfg.logging.entropy
    chunks = [list(range(len(prompts)))[i::n_minibatches] for i in range(n_minibatches)]
    for seq_ids in chunks:
        mb_prompts, mb_responses = [prompts[i] for i in seq_ids], [responses[i] for i in seq_ids]
        mb_adv = seq_adv[seq_ids].to(device)  # (n,) indexed like mb_prompts, as MicroBatch.seq_index is
        mb_behavior = [behavior[i].to(device) for i in seq_ids]
        mb_old = [old[i].to(device) for i in seq_ids] if old else None
        counts = all_reduce(torch.tensor([float(sum(map(len, mb_responses))), float(len(seq_ids))]))
        global_tokens, global_seqs = counts[0].item(), counts[1].item()
        for mb in _equal_micro_batches(mb_prompts, mb_responses, cfg):
            if mb is None:
                (_dummy_forward(policy, device).sum() * 0.0).backward()
                continue
            mb = mb.to(device)
            out = policy(mb.input_ids, mb.position_ids, mb.targets, temperature=cfg.rollout.temperature,
                         chunk_size=cfg.grpo.logprob_chunk_size, return_entropy=want_entropy,
                         loss_mask=mb.loss_mask)  # the lm_head runs on response positions only
            logp, entropy = out if want_entropy else (out, None)  # (R, L)
            behavior_logp = mb.place_response_values(mb_behavior)  # (R, L)
            old_logp = mb.place_response_values(mb_old) if mb_old else logp.detach()  # (R, L)
            loss, metrics = policy_loss(
                logp, old_logp, mb.expand_sequence_values(mb_adv), mb.loss_mask,
                cfg.grpo.clip_low, cfg.grpo.clip_high, cfg.grpo.loss_agg, global_tokens=global_tokens,
                global_seqs=global_seqs, response_lengths=mb.response_lengths,
                max_response_len=cfg.rollout.max_response_tokens, entropy=entropy,
                entropy_coef=cfg.grpo.entropy_coef, behavior_logp=behavior_logp if cfg.grpo.tis_cap > 0 else None,
                tis_cap=cfg.grpo.tis_cap)
            (loss * world_size).backward()
            gap = torch.where(mb.loss_mask, (logp.detach() - behavior_logp).abs(), 0.0)  # (R, L)
            mismatch_max = torch.maximum(mismatch_max, gap.max().cpu())
            sums["mismatch_sum"] += gap.sum().item() / max(global_tokens, 1) / n_minibatches
            sums["loss"] += loss.item() / n_minibatches
            for key in ("pg_loss", "clip_frac", "approx_kl_old", "ratio_mean", "entropy", "tis_weight"):
                if key in metrics:
                    sums[key] += metrics[key].item() / n_minibatches
        grad_norm = clip_grad_norm(policy, cfg.train.grad_clip)  # the same global norm on every rank
        if torch.isfinite(grad_norm):
            optimizer.step()
        else:  # a NaN/inf anywhere poisons the norm: skip this update everywhere, keep the run alive
            skipped += 1
        optimizer.zero_grad(set_to_none=True)
        grad_norms.append(grad_norm.item())
    reduced = all_reduce(torch.stack([sums[k] for k in sorted(sums)]))
    metrics = dict(zip(sorted(sums), reduced.tolist()))
    metrics["mismatch_mean"] = metrics.pop("mismatch_sum")
    metrics["mismatch_max"] = all_reduce(mismatch_max, dist.ReduceOp.MAX).item()
    metrics["grad_norm"] = sum(grad_norms) / len(grad_norms)
    metrics["skipped_updates"] = skipped
    return metrics


# --- the loop ------------------------------------------------------------------------------------------------

def train(cfg: Config) -> list[dict]:
    rank, world_size, device = init_distributed()
    tp = cfg.rollout.tensor_parallel_size if cfg.rollout.engine == "vllm" else 1
    dp_rank, dp_size = rank // tp, world_size // tp
    n_minibatches = cfg.train.batch_size // cfg.train.mini_batch_size
    if cfg.train.batch_size % (dp_size * n_minibatches):
        raise ValueError(f"train.batch_size={cfg.train.batch_size} must split evenly over {dp_size} "
                         "data-parallel ranks and the mini-batches")
    contexts_per_rank = cfg.train.batch_size // dp_size
    out_dir = Path(cfg.train.output_dir)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
    seed_everything(cfg.train.seed, rank)

    tokenizer = load_tokenizer(cfg.model.tokenizer_path or cfg.model.path)
    policy = build_policy(cfg.model.path, cfg.model.dtype, cfg.model.param_dtype, cfg.model.reduce_dtype,
                          cfg.model.activation_checkpointing, cfg.model.attn_implementation, device)
    n_params = sum(p.numel() for p in policy.parameters())
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.train.lr, betas=cfg.train.betas,
                                  weight_decay=cfg.train.weight_decay)
    warmup = cfg.train.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    stream = SampleStream(cfg.data.path, split=cfg.data.split, rank=dp_rank, world_size=dp_size,
                          seed=cfg.train.seed, shuffle=cfg.data.shuffle)

    start_step, totals = 0, {"skipped_updates": 0, "train_compute": 0.0}
    resume = latest_checkpoint(out_dir / "checkpoints") if cfg.train.resume == "auto" else \
        (Path(cfg.train.resume) if cfg.train.resume else None)
    if resume is not None:
        start_step, extra = load_checkpoint(resume, policy, optimizer, scheduler)
        stream.load_state_dict(extra["data"])
        totals = extra["totals"]
        print0(f"resumed from {resume} at step {start_step}")

    engine = build_engine(cfg, tokenizer, device)
    engine.update_weights(iter_full_weights(policy))
    writer = None
    if rank == 0 and cfg.logging.tensorboard:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out_dir / "tensorboard"))
    print0(f"rpt: {n_params / 1e6:.2f}M params, {world_size} ranks (tp {tp}), engine {cfg.rollout.engine}, "
           f"{cfg.train.batch_size} contexts x G={cfg.rollout.n} per step, steps {start_step}..{cfg.train.steps}")

    # on a GPU the engine and the training state take turns: AdamW state on the CPU while generating
    offload = cfg.rollout.offload_optimizer and device.type == "cuda"
    history = []
    for step in range(start_step, cfg.train.steps):
        step_start = time.perf_counter()
        # sample contexts -> generate -> reward (refilled by dynamic sampling)
        if offload:
            move_optimizer_state(optimizer, "cpu")
        engine.wake()
        groups, rewards, rollout_stats = collect_rollouts(engine, tokenizer, policy, stream, cfg, step, device,
                                                          contexts_per_rank)
        # advantages, per group of G
        adv = compute_advantages(rewards, eps=cfg.grpo.adv_eps, scale_by_std=cfg.grpo.scale_by_std) \
            if len(groups) else rewards  # (b, G)
        # update
        engine.sleep()
        if offload:
            move_optimizer_state(optimizer, device)
        start = time.perf_counter()
        update = update_policy(policy, optimizer, groups, adv, cfg, device, world_size)
        scheduler.step()
        update_time = time.perf_counter() - start
        # sync weights into the engine
        start = time.perf_counter()
        engine.update_weights(iter_full_weights(policy))
        sync_time = time.perf_counter() - start

        # log: sums over ranks, then means
        completions = [c for group in groups for c in group.completions]
        lengths = torch.tensor([float(len(c.token_ids)) for c in completions])
        prompt_tokens = float(sum(len(group.prompt_ids) for group in groups) * cfg.rollout.n)
        local = torch.tensor([
            float(rewards.sum()), float((rewards == 1).sum()), float(rewards.numel()),
            float(sum(group.diagnostics["had_think"].sum() for group in groups)),
            float(sum(group.diagnostics["had_box"].sum() for group in groups)),
            float(lengths.sum()), float(sum(c.finish_reason == "length" for c in completions)),
            float(len(groups)), float(rollout_stats["groups_generated"]), prompt_tokens,
            rollout_stats["all_reward_sum"], float(rollout_stats["all_samples"]), float(rollout_stats["all_tokens"]),
        ], dtype=torch.float64)
        (reward_sum, correct, n_samples, think, box, gen_tokens, truncated, kept, generated, prompt_tokens,
         all_reward_sum, all_samples, all_tokens) = all_reduce(local).tolist()
        max_len = all_reduce(lengths.max() if len(lengths) else torch.zeros(()), dist.ReduceOp.MAX).item()
        n = max(n_samples, 1)
        totals["skipped_updates"] += update["skipped_updates"]
        totals["train_compute"] += 6 * n_params * (gen_tokens + prompt_tokens) + 2 * n_params * all_tokens
        step_time = time.perf_counter() - step_start
        metrics = {
            # all generated samples; the kept_ metrics are what the update trained on (after dynamic sampling)
            "rollout/reward_mean": all_reward_sum / max(all_samples, 1), "rollout/kept_reward_mean": reward_sum / n,
            "rollout/kept_accuracy": correct / n,
            "rollout/had_think": think / n, "rollout/had_box": box / n,
            "rollout/response_len_mean": gen_tokens / n, "rollout/response_len_max": max_len,
            "rollout/truncated_frac": truncated / n, "rollout/kept_group_frac": kept / max(generated, 1),
            "rollout/generation_rounds": rollout_stats["rounds"], "rollout/partial_batch": rollout_stats["partial"],
            **{f"train/{k}": v for k, v in update.items() if k != "skipped_updates"},
            "train/skipped_updates": totals["skipped_updates"], "train/lr": scheduler.get_last_lr()[0],
            "perf/time_generate": rollout_stats["generate"], "perf/time_reward": rollout_stats["reward"],
            "perf/time_update": update_time, "perf/time_sync": sync_time, "perf/time_step": step_time,
            "perf/tokens_per_s": all_tokens / max(rollout_stats["generate"], 1e-9) / world_size,
            "perf/train_compute": totals["train_compute"],
        }
        # evaluate on the held-out splits (rpt.eval), every rank its share
        if cfg.logging.eval_every and (step + 1) % cfg.logging.eval_every == 0:
            metrics.update(evaluate_policy(policy, tokenizer, engine, cfg, step + 1))
        history.append({"step": step + 1, **metrics})
        if rank == 0:
            log_step(out_dir, writer, step + 1, metrics, cfg)
            if cfg.logging.samples_every and (step + 1) % cfg.logging.samples_every == 0:
                dump_samples(out_dir, step + 1, groups, rewards, tokenizer, cfg.logging.samples_per_dump)

        # checkpoint
        if cfg.train.save_every and ((step + 1) % cfg.train.save_every == 0 or step + 1 == cfg.train.steps):
            save_checkpoint(out_dir / "checkpoints", policy, optimizer, scheduler, step + 1,
                            {"data": stream.state_dict(), "totals": totals}, keep=cfg.train.keep_checkpoints)

    if cfg.train.export_hf:
        export_hf(policy, tokenizer, out_dir / "hf")
        print0(f"exported the policy to {out_dir / 'hf'}")
    if writer is not None:
        writer.close()
    return history


def evaluate_policy(policy, tokenizer, engine: Engine, cfg: Config, step: int) -> dict[str, float]:
    from rpt.eval import evaluate

    results = evaluate(policy, tokenizer, engine, cfg.data.path, cfg.logging.eval_splits, mode=cfg.logging.eval_mode,
                       max_samples=cfg.logging.eval_max_samples, template=cfg.data.template, chat=cfg.data.chat,
                       think_prefill=cfg.data.think_prefill, response_prefill=cfg.data.response_prefill,
                       extraction=cfg.reward.extraction, temperature=cfg.rollout.temperature,
                       top_p=cfg.rollout.top_p, max_tokens=cfg.rollout.max_response_tokens, seed=cfg.train.seed + step)
    return {f"eval/{key}": value for key, value in results.items()}


def log_step(out_dir: Path, writer, step: int, metrics: dict, cfg: Config) -> None:
    with open(out_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": step, **metrics}) + "\n")
    if writer is not None:
        for key, value in metrics.items():
            writer.add_scalar(key, value, step)
    if step % cfg.logging.log_every == 0 or step == cfg.train.steps:
        m = metrics
        print0(f"step {step}/{cfg.train.steps} | reward {m['rollout/reward_mean']:.3f} | loss {m['train/loss']:+.2e} "
               f"| gnorm {m['train/grad_norm']:.3f} | kept {m['rollout/kept_group_frac']:.2f} "
               f"| len {m['rollout/response_len_mean']:.1f} | mismatch {m['train/mismatch_mean']:.1e} "
               f"| gen {m['perf/time_generate']:.1f}s upd {m['perf/time_update']:.1f}s "
               f"sync {m['perf/time_sync']:.1f}s | {m['perf/tokens_per_s']:.0f} tok/s/rank")
        evals = {k[len("eval/"):]: v for k, v in m.items() if k.startswith("eval/") and k.endswith("_acc")}
        if evals:
            print0("  eval " + " | ".join(f"{k} {v:.3f}" for k, v in evals.items()))


def dump_samples(out_dir: Path, step: int, groups: list[Group], rewards: torch.Tensor, tokenizer,
                 limit: int) -> None:
    with open(out_dir / "samples.jsonl", "a") as f:
        for group, group_rewards in list(zip(groups, rewards))[:limit]:
            f.write(json.dumps({
                "step": step, "doc_id": group.sample.doc_id, "position": group.sample.position,
                "prompt": tokenizer.decode(group.prompt_ids),
                "continuation": tokenizer.decode(group.sample.continuation_ids),
                "responses": group.responses, "rewards": group_rewards.tolist(),
            }) + "\n")  # ASCII escapes: a response cut inside a UTF-8 character holds lone surrogates

