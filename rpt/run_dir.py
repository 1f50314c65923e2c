"""A run directory belongs to one run. `Run` carries it from start to end: claim the directory, compare the
resuming config with the run's, restore the checkpoint, truncate the logs to it, log each step (metrics.jsonl,
TensorBoard, the console line, samples.jsonl), save checkpoints when due, print the summary.

    run = Run.open(out_dir, config, defaults, resume=..., overwrite=..., ...)  # before any model loads
    start_step, totals = run.restore(policy, optimizer, scheduler, stream, lr=..., betas=..., weight_decay=...)
    run.log(step, metrics, groups, rewards, tokenizer); run.save_if_due(step, policy, optimizer, scheduler, extra)
    run.finish(policy, tokenizer, export=True)

The lock is `fcntl.flock` on `output_dir/.lock`, held by rank 0 for the life of the job: the kernel drops
it when the process dies (kill -9 included), so a crashed job never leaves a stale lock behind. flock works
across processes of one machine and on NFSv4 (Linux maps it to a POSIX lock there).
"""
import fcntl
import json
import math
import os
import shutil
import uuid
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from tqdm import tqdm

from rpt.checkpoint import latest_checkpoint, load_checkpoint, read_checkpoint_meta, save_checkpoint
from rpt.config import ConfigError
from rpt.data.sample import Question
from rpt.dist import print0
from rpt.fsdp import export_hf
from rpt.report import plot_run, read_metrics, summarize

RUN_FILE = "run.json"  # {"run_id": ...}: written when a fresh run claims the directory
LOCK_FILE = ".lock"
CONFIG_CHANGES_FILE = "config_changes.jsonl"  # one record per mutable field changed on a resume, with its step
# What a run writes into its directory; `train.overwrite` deletes exactly these, nothing else a user keeps there
RUN_ARTIFACTS = (RUN_FILE, "config.yaml", CONFIG_CHANGES_FILE, "checkpoints", "metrics.jsonl", "samples.jsonl",
                 "tensorboard", "hf")

# Fields that may change when a run is resumed: they take effect from the resumed step on (the optimizer's
# settings through apply_optimizer_settings, the rest because the loop reads them every step). Every other
# field, including any added later, must equal the run's: model, data, batch sizes, G, template, reward, seed
# and the GRPO settings define what the run is.
MUTABLE_FIELDS = frozenset({
    "train.steps", "train.lr", "train.betas", "train.weight_decay", "train.warmup_steps", "train.grad_clip",
    "train.save_every", "train.keep_checkpoints", "train.export_hf", "train.output_dir",
    "train.micro_batch_tokens",  # the loss does not depend on the micro-batch split
    "model.activation_checkpointing",  # recomputes the same values
    # how the engine runs, not what it samples from
    "rollout.gpu_memory_utilization", "rollout.kv_cache_memory_bytes", "rollout.enforce_eager",
    "rollout.sleep_level", "rollout.offload_optimizer",
})
MUTABLE_SECTIONS = frozenset({"logging"})
# How this job starts, not what the run is: never compared
JOB_FIELDS = frozenset({"train.resume", "train.overwrite"})


class RunDirError(RuntimeError):
    pass


class RunDirLock:
    """An exclusive flock on `directory/.lock`; released by `release()` or by the death of the process.
    `setting` names what chooses the directory, for the error (training's train.output_dir, prepare's --out)."""

    def __init__(self, directory: Path, setting: str = "train.output_dir"):
        self.path = Path(directory) / LOCK_FILE
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "unknown"
            self.file.close()
            raise RunDirError(f"{directory} is in use by another job ({holder} holds {self.path}); two jobs cannot "
                              f"write one directory: wait for it to end or choose another {setting}") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        self.file.flush()

    def release(self) -> None:
        if not self.file.closed:
            self.file.close()  # closing the descriptor drops the flock


def run_artifacts(directory: Path) -> list[str]:
    """The names of the run artifacts present in `directory` (empty: no run lives there)."""
    directory = Path(directory)
    return [name for name in RUN_ARTIFACTS if (directory / name).exists()]


def claim_run_dir(directory: str | Path, resume: str, overwrite: bool) -> tuple[RunDirLock | None, str]:
    """Lock `directory` for this job and make sure it holds this run only; -> (lock, run_id).

    A fresh run (resume == "") into a directory that holds another run's files is an error naming the way out,
    unless `overwrite`, which deletes those files (RUN_ARTIFACTS) first. A resume keeps the run's id. Under a
    process group, rank 0 claims and holds the lock (None elsewhere); every rank returns the run id or raises
    rank 0's error, so no rank is left waiting in a collective."""
    if not dist.is_initialized():
        return _claim(directory, resume, overwrite)
    lock, outcome = None, None
    if dist.get_rank() == 0:
        try:
            lock, run_id = _claim(directory, resume, overwrite)
            outcome = ("claimed", run_id)
        except RunDirError as error:
            outcome = ("refused", str(error))
    box = [outcome]
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "refused":
        raise RunDirError(value)
    return lock, value


def _claim(directory: str | Path, resume: str, overwrite: bool) -> tuple[RunDirLock, str]:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock = RunDirLock(directory)
    try:
        found = run_artifacts(directory)
        if resume:
            run_file = directory / RUN_FILE
            if run_file.exists():
                return lock, json.loads(run_file.read_text())["run_id"]
        elif found and not overwrite:
            raise RunDirError(
                f"{directory} holds another run ({', '.join(found)}); a fresh run would mix with it. To continue "
                "that run pass --resume auto; to start a new one choose another train.output_dir, or pass "
                f"--train.overwrite=true to delete {', '.join(found)} first")
        elif found:
            for name in found:
                path = directory / name
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        run_id = uuid.uuid4().hex
        write_atomic(directory / RUN_FILE, json.dumps({"run_id": run_id}) + "\n")
        return lock, run_id
    except BaseException:
        lock.release()
        raise


def _flatten(config: dict) -> dict[str, object]:
    return {f"{section}.{key}": value for section, values in config.items() for key, value in values.items()}


def _same(old, new) -> bool:
    if isinstance(old, float) and isinstance(new, float) and math.isnan(old) and math.isnan(new):
        return True
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return list(old) == list(new)
    return old == new


def compare_configs(saved: dict, new: dict, defaults: dict | None = None) -> list[tuple[str, object, object]]:
    """Compare the run's saved config with the resuming job's (both as rpt.config.to_dict gives them).

    A change to a field outside MUTABLE_FIELDS / MUTABLE_SECTIONS raises ConfigError naming every such field
    with both values; -> [(field, old, new)] for the mutable fields that changed. A field the saved config
    lacks (written before the field existed) counts as its default from `defaults`."""
    old = {**_flatten(defaults or {}), **_flatten(saved)}
    changes = [(key, old.get(key), value) for key, value in _flatten(new).items()
               if key in old and key not in JOB_FIELDS and not _same(old[key], value)]
    frozen = [(key, a, b) for key, a, b in changes
              if key not in MUTABLE_FIELDS and key.split(".")[0] not in MUTABLE_SECTIONS]
    if frozen:
        listed = "; ".join(f"{key}: {a!r} -> {b!r}" for key, a, b in frozen)
        raise ConfigError(f"cannot resume with changed {listed} (these fields define the run; resume with the "
                          "run's values, or start a fresh run in another train.output_dir)")
    return changes


def saved_run_config(checkpoint: Path, directory: Path) -> dict | None:
    """The config a resumed checkpoint was trained with: its meta.json's, else the run dir's config.yaml
    (a checkpoint written before checkpoints carried their config); None if neither exists."""
    config = read_checkpoint_meta(checkpoint).get("config")
    if config is None and (Path(directory) / "config.yaml").exists():
        config = yaml.safe_load((Path(directory) / "config.yaml").read_text())
    return config


def record_config_changes(directory: str | Path, step: int, changes: list[tuple[str, object, object]]) -> None:
    """Append one record per changed field, with the step it takes effect after, to config_changes.jsonl."""
    if not changes:
        return
    with open(Path(directory) / CONFIG_CHANGES_FILE, "a") as file:
        for key, old, new in changes:
            file.write(json.dumps({"step": step, "field": key, "old": old, "new": new}) + "\n")


def apply_optimizer_settings(optimizer, scheduler, lr: float, betas: tuple[float, float],
                             weight_decay: float) -> None:
    """Set the resuming config's AdamW settings on every param group after a checkpoint restored the run's.

    Loading a checkpoint restores the optimizer's param groups and the scheduler's base lrs as they were
    saved; the new lr becomes the scheduler's base, and the current lr is recomputed from the scheduler's
    multiplier at its restored position (the multiplier itself, e.g. a changed warmup, comes from the
    scheduler the loop built from the new config)."""
    scheduler.base_lrs = [lr for _ in optimizer.param_groups]
    current = [lr * scale(scheduler.last_epoch) for scale in scheduler.lr_lambdas]
    for group, group_lr in zip(optimizer.param_groups, current):
        group.update(lr=group_lr, initial_lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    scheduler._last_lr = current  # what get_last_lr() reports until the next scheduler.step()


def truncate_jsonl(path: str | Path, step: int) -> int:
    """Keep the records of `path` whose "step" is <= step, drop the rest (the steps a crashed run logged after
    its last checkpoint, which the resumed run logs again) and any line a kill cut short; -> lines dropped."""
    path = Path(path)
    if not path.exists():
        return 0
    kept, dropped = [], 0
    with open(path, "rb") as file:
        for line in file:
            try:
                record = json.loads(line)
                keep = line.endswith(b"\n") and record["step"] <= step
            except (ValueError, KeyError, TypeError):
                keep = False
            if keep:
                kept.append(line)
            else:
                dropped += 1
    if dropped:
        write_atomic(path, b"".join(kept))
    return dropped


def write_atomic(path: Path, data: str | bytes) -> None:
    temporary = path.with_name(path.name + f".tmp{os.getpid()}")
    temporary.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    os.replace(temporary, path)


class Run:
    """One training run's directory, from claiming it to the end-of-run summary. Every rank holds a Run;
    rank 0 holds the directory's lock and writes the files, every rank keeps the step history."""

    def __init__(self, directory: Path, lock: RunDirLock | None, run_id: str, checkpoint: Path | None,
                 config: dict, config_changes: list, *, steps: int, log_every: int, tensorboard: bool,
                 samples_every: int, samples_per_dump: int, save_every: int, keep_checkpoints: int):
        self.directory, self.lock, self.run_id, self.checkpoint = directory, lock, run_id, checkpoint
        self.config, self.config_changes = config, config_changes
        self.steps, self.log_every, self.tensorboard = steps, log_every, tensorboard
        self.samples_every, self.samples_per_dump = samples_every, samples_per_dump
        self.save_every, self.keep_checkpoints = save_every, keep_checkpoints
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.writer = None
        self.progress = None
        self.history: list[dict] = []

    @classmethod
    def open(cls, directory: Path, config: dict, defaults: dict, *, resume: str, overwrite: bool,
             **settings) -> "Run":
        """Find the checkpoint to resume ("auto": the latest complete one), compare `config` (rpt.config.to_dict)
        with the run's (`defaults` fill fields the run's config predates), claim the directory and write the
        config into it. Raises ConfigError or RunDirError on every rank alike."""
        checkpoint = latest_checkpoint(directory / "checkpoints") if resume == "auto" else \
            (Path(resume) if resume else None)
        saved = saved_run_config(checkpoint, directory) if checkpoint is not None else None
        changes = compare_configs(saved, config, defaults) if saved else []
        lock, run_id = claim_run_dir(directory, resume, overwrite)
        run = cls(directory, lock, run_id, checkpoint, config, changes, **settings)
        if run.rank == 0:
            write_atomic(directory / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        return run

    def restore(self, policy, optimizer, scheduler, stream, *, lr: float, betas: tuple[float, float],
                weight_decay: float) -> tuple[int, dict]:
        """Load the checkpoint being resumed, if any, with the resuming config's AdamW settings; cut the logs
        back to its step and open TensorBoard there. -> (start step, running totals)."""
        start_step, totals = 0, {"skipped_updates": 0, "train_compute": 0.0}
        if self.checkpoint is not None:
            start_step, extra = load_checkpoint(self.checkpoint, policy, optimizer, scheduler)
            # the checkpoint brought back the run's AdamW settings: the resuming config's take effect from here
            apply_optimizer_settings(optimizer, scheduler, lr, betas, weight_decay)
            stream.load_state_dict(extra["data"])
            totals = extra["totals"]
            print0(f"resumed from {self.checkpoint} at step {start_step}" + "".join(
                f"\n  {key}: {old!r} -> {new!r}" for key, old, new in self.config_changes))
        if self.rank == 0:
            record_config_changes(self.directory, start_step, self.config_changes)
            for log in ("metrics.jsonl", "samples.jsonl"):  # steps after the checkpoint are logged again
                truncate_jsonl(self.directory / log, start_step)
            if self.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.directory / "tensorboard"), purge_step=start_step + 1)
            # on a terminal only (disable=None): a CI log keeps the per-step lines alone
            self.progress = tqdm(total=self.steps, initial=start_step, unit="step", disable=None)
        return start_step, totals

    def log(self, step: int, metrics: dict, groups: list | None = None, rewards: torch.Tensor | None = None,
            tokenizer=None) -> None:
        """Record `step`'s metrics (step 0: the evaluation before training) and, when due, its samples."""
        if step > 0:
            self.history.append({"step": step, **metrics})
        if self.rank != 0:
            return
        with open(self.directory / "metrics.jsonl", "a") as file:
            file.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(key, value, step)
        self._print(step, metrics)
        if step > 0:
            if "rollout/reward_mean" in metrics:
                self.progress.set_postfix(reward=f"{metrics['rollout/reward_mean']:.3f}", refresh=False)
            self.progress.update()
        if self.samples_every and step % self.samples_every == 0 and groups:
            self._dump_samples(step, groups, rewards, tokenizer)

    def _print(self, step: int, metrics: dict) -> None:
        # tqdm.write keeps the progress bar below the lines
        if step == 0:
            tqdm.write("  eval at step 0 | " + " | ".join(f"{k[len('eval/'):]} {v:.3f}" for k, v in metrics.items()
                                                          if k.startswith("eval/") and k.endswith("_acc")))
            return
        if step % self.log_every and step != self.steps:
            return
        m = metrics
        if "rollout/reward_mean" not in m:  # the continual-NTP baseline
            tqdm.write(f"step {step}/{self.steps} | ntp loss {m['train/loss']:.4f} | gnorm {m['train/grad_norm']:.3f} "
                       f"| {m['train/tokens']:.0f} tokens | upd {m['perf/time_update']:.1f}s"
                       + "".join(f" | {k[5:]} {v:.4f}" for k, v in m.items() if k.startswith("eval/")))
            return
        tqdm.write(f"step {step}/{self.steps} | reward {m['rollout/reward_mean']:.3f} "
                   f"| loss {m['train/loss']:+.2e} | gnorm {m['train/grad_norm']:.3f} "
                   f"| kept {m['rollout/kept_group_frac']:.2f} | len {m['rollout/response_len_mean']:.1f} "
                   f"| mismatch {m['train/mismatch_mean']:.1e} | gen {m['perf/time_generate']:.1f}s "
                   f"upd {m['perf/time_update']:.1f}s sync {m['perf/time_sync']:.1f}s "
                   f"| {m['perf/tokens_per_s']:.0f} tok/s/rank")
        evals = {k[len("eval/"):]: v for k, v in m.items() if k.startswith("eval/") and k.endswith("_acc")}
        if evals:
            tqdm.write(f"  eval at step {step} | " + " | ".join(f"{k} {v:.3f}" for k, v in evals.items()))

    def _dump_samples(self, step: int, groups: list, rewards: torch.Tensor, tokenizer) -> None:
        with open(self.directory / "samples.jsonl", "a") as file:
            for group, group_rewards in list(zip(groups, rewards))[:self.samples_per_dump]:
                item = group.sample
                source = {"question_id": item.question_id, "answers": item.answers} if isinstance(item, Question) \
                    else {"doc_id": item.doc_id, "position": item.position,
                          "continuation": tokenizer.decode(item.continuation_ids)}
                file.write(json.dumps({
                    "step": step, **source, "prompt": tokenizer.decode(group.prompt_ids),
                    "responses": group.responses, "rewards": group_rewards.tolist(),
                }) + "\n")  # ASCII escapes: a response cut inside a UTF-8 character holds lone surrogates

    def save_if_due(self, step: int, policy, optimizer, scheduler, extra: dict) -> None:
        """A checkpoint every save_every steps and at the last step (rpt/checkpoint.py)."""
        if self.save_every and (step % self.save_every == 0 or step == self.steps):
            save_checkpoint(self.directory / "checkpoints", policy, optimizer, scheduler, step, extra,
                            keep=self.keep_checkpoints, run_id=self.run_id, config=self.config)

    def finish(self, policy, tokenizer, export: bool) -> list[dict]:
        """Export the policy as an HF directory (`export`), print the whole run's summary, release the
        directory. -> the step history."""
        if self.progress is not None:
            self.progress.close()
        if export:
            export_hf(policy, tokenizer, self.directory / "hf")
            print0(f"exported the policy to {self.directory / 'hf'}")
        if self.writer is not None:
            self.writer.close()
        if self.rank == 0:
            self._print_summary(export)
        if self.lock is not None:
            self.lock.release()
        return self.history

    def _print_summary(self, exported: bool) -> None:
        """The whole run (resumed parts included) from metrics.jsonl: start vs end, and where its outputs are."""
        records, _ = read_metrics(self.directory / "metrics.jsonl")
        if not records:
            return
        plot = plot_run(self.directory)
        print("summary:\n  " + "\n  ".join(summarize(records)), flush=True)
        print(f"  run dir {self.directory} | HF export {self.directory / 'hf' if exported else 'off (train.export_hf)'}"
              f" | plot {plot}", flush=True)
