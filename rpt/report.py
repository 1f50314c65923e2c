"""What a run shows at its end, read from its metrics.jsonl: the curves a researcher looks at first as one PNG,
and a few summary lines (reward and eval accuracy at the start vs the end).

Six panels against the training step: sampled reward (every generated sample, and its running mean over 5
steps), kept-group fraction (what dynamic sampling keeps), mean response length, engine-trainer log-prob
mismatch, gradient norm before clipping, and eval accuracy per split (step 0 is the policy before training
when the loop evaluated it there). Written by the loop at the end of every run and by `launch/plot.py`.
"""
import json
from pathlib import Path

from matplotlib.figure import Figure

# (title, metrics.jsonl key, y label); the eval panel gathers every eval/<split>/<mode>_acc key
PANELS = [
    ("sampled reward", "rollout/reward_mean", "mean reward"),
    ("kept-group fraction", "rollout/kept_group_frac", "kept / generated groups"),
    ("response length", "rollout/response_len_mean", "tokens"),
    ("log-prob mismatch", "train/mismatch_mean", "|engine - trainer|"),
    ("grad norm", "train/grad_norm", "norm before clipping"),
]
EVAL_TITLE = "eval accuracy"
RUNNING_MEAN = 5


def read_metrics(path: str | Path) -> tuple[list[dict], int]:
    """The records of a metrics.jsonl by step (a resumed run repeats steps: the last record of a step wins) and
    the number of lines skipped as unreadable (a run killed mid-write leaves a partial last line)."""
    by_step, bad = {}, 0
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
                step = int(record["step"])
            except (ValueError, KeyError, TypeError):
                bad += 1
                continue
            by_step[step] = record
    return [by_step[step] for step in sorted(by_step)], bad


def eval_keys_of(records: list[dict]) -> list[str]:
    return sorted({key for r in records for key in r if key.startswith("eval/") and key.endswith("_acc")})


def eval_name(key: str) -> str:
    return key[len("eval/"):-len("_acc")]  # eval/easy/reasoning_acc -> easy/reasoning


def series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], float(r[key])) for r in records if isinstance(r.get(key), (int, float))]
    return [step for step, _ in points], [value for _, value in points]


def plot_metrics(records: list[dict], title: str = "") -> Figure:
    figure = Figure(figsize=(15, 8), layout="constrained")
    axes = figure.subplots(2, 3).flatten()
    for ax, (name, key, ylabel) in zip(axes, PANELS):
        steps, values = series(records, key)
        ax.plot(steps, values, marker="." if len(steps) < 50 else None, label="per step")
        if key == "rollout/reward_mean" and len(values) >= RUNNING_MEAN:
            ends = range(RUNNING_MEAN, len(values) + 1)
            means = [sum(values[end - RUNNING_MEAN:end]) / RUNNING_MEAN for end in ends]
            ax.plot(steps[RUNNING_MEAN - 1:], means, linewidth=2, label=f"mean of {RUNNING_MEAN}")
            ax.legend()
        ax.set(title=name, xlabel="step", ylabel=ylabel)
    ax = axes[len(PANELS)]
    eval_keys = eval_keys_of(records)
    for key in eval_keys:
        steps, values = series(records, key)
        ax.plot(steps, values, marker="o", label=eval_name(key))
    if eval_keys:
        ax.legend()
    ax.set(title=EVAL_TITLE, xlabel="step", ylabel="accuracy")
    for ax in axes:
        if not ax.lines:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
        ax.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    return figure


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write run_dir/metrics.png (or `out`) from run_dir/metrics.jsonl; returns the PNG's path."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise FileNotFoundError(f"{metrics} not found: is {run_dir} a training run directory?")
    records, bad = read_metrics(metrics)
    if not records:
        raise ValueError(f"{metrics} holds no readable records ({bad} unreadable lines)")
    if bad:
        print(f"{metrics}: skipped {bad} unreadable lines")
    out = Path(out) if out else run_dir / "metrics.png"
    plot_metrics(records, title=str(run_dir)).savefig(out, dpi=80)
    return out


def summarize(records: list[dict], window: int = 5) -> list[str]:
    """Sampled reward over the first vs the last `window` logged steps, and every eval accuracy at its first
    vs its last evaluation (the first is step 0, the policy before training, when the loop evaluated there)."""
    lines = []
    steps, rewards = series(records, "rollout/reward_mean")
    if rewards:
        first, last = rewards[:window], rewards[-window:]
        start, end = sum(first) / len(first), sum(last) / len(last)
        lines.append(f"sampled reward {start:.3f} (steps {steps[0]}-{steps[len(first) - 1]}) -> {end:.3f} "
                     f"(steps {steps[-len(last)]}-{steps[-1]}): {end - start:+.3f}")
    for key in eval_keys_of(records):
        steps, values = series(records, key)
        lines.append(f"eval {eval_name(key)} {values[0]:.3f} (step {steps[0]}) -> {values[-1]:.3f} "
                     f"(step {steps[-1]}): {values[-1] - values[0]:+.3f}")
    return lines


def rollout_sums(groups: list, rewards, rollout_stats: dict, group_size: int) -> dict[str, float]:
    """This rank's sums behind a step's rollout metrics (rpt.dist.reduce_metrics sums them over ranks):
    rewards (b, G) of the groups it trains on; rollout_stats: the sums over every sample it generated."""
    lengths = [len(c.token_ids) for group in groups for c in group.completions]
    return {
        "reward_sum": float(rewards.sum()), "correct": float((rewards == 1).sum()), "samples": rewards.numel(),
        "think": sum(float(group.diagnostics["had_think"].sum()) for group in groups),
        "box": sum(float(group.diagnostics["had_box"].sum()) for group in groups),
        "gen_tokens": sum(lengths),
        "truncated": sum(c.finish_reason == "length" for group in groups for c in group.completions),
        "prompt_tokens": sum(len(group.prompt_ids) for group in groups) * group_size,
        "all_reward_sum": rollout_stats["all_reward_sum"], "all_samples": rollout_stats["all_samples"],
        "all_tokens": rollout_stats["all_tokens"],
    }


def rollout_step_metrics(sums: dict, maxima: dict, pool: dict, update: dict, times: dict, *, lr: float,
                         totals: dict, world_size: int) -> dict[str, float]:
    """A GRPO step's logged metrics from numbers already reduced over ranks: `sums` (rollout_sums, summed),
    `maxima` (response_len_max and the per-phase memory, the rank that used most / had least free), `pool`
    (the pooled collector's decisions, global), `update` (update_policy's), `times` (seconds: generate,
    reward, update, sync, step), `totals` (running over the run: skipped_updates, train_compute)."""
    n = max(sums["samples"], 1)
    return {
        # all generated samples; the kept_ metrics are what the update trained on (after dynamic sampling)
        "rollout/reward_mean": sums["all_reward_sum"] / max(sums["all_samples"], 1),
        "rollout/kept_reward_mean": sums["reward_sum"] / n, "rollout/kept_accuracy": sums["correct"] / n,
        "rollout/had_think": sums["think"] / n, "rollout/had_box": sums["box"] / n,
        "rollout/response_len_mean": sums["gen_tokens"] / n, "rollout/response_len_max": maxima["response_len_max"],
        "rollout/truncated_frac": sums["truncated"] / n,
        "rollout/kept_group_frac": pool["groups_kept"] / max(pool["groups_generated"], 1),
        "rollout/groups_filtered": pool["groups_filtered"], "rollout/groups_surplus": pool["groups_surplus"],
        "rollout/generation_rounds": pool["rounds"], "rollout/partial_batch": pool["partial"],
        **{f"train/{k}": v for k, v in update.items() if k != "skipped_updates"},
        "train/skipped_updates": totals["skipped_updates"], "train/lr": lr,
        "perf/time_generate": times["generate"], "perf/time_reward": times["reward"],
        "perf/time_update": times["update"], "perf/time_sync": times["sync"], "perf/time_step": times["step"],
        "perf/tokens_per_s": sums["all_tokens"] / max(times["generate"], 1e-9) / world_size,
        "perf/train_compute": totals["train_compute"],
        **{key: value for key, value in maxima.items() if key.startswith("perf/mem_")},
    }
