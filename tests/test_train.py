"""The training loop end to end on CPU with stories260K and the transformers engine:
- 2-rank FSDP vs 1 process over the same 3 steps and the same rollouts (losses 1e-6, params 1e-4),
- kill -9 after a checkpoint and resume: the following steps are bit-identical to an uninterrupted run,
- a planted NaN skips one update and the run goes on."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import rpt.rollout.groups as rollout_groups
import rpt.train as trainer
import rpt.update as update
from rpt.data import SampleStream
from rpt.config import load_config
from rpt.report import summarize
from tests.conftest import REPO, run_torchrun

TRAIN = REPO / "launch/train.py"


def overrides(data_dir, out_dir, steps=3, **extra) -> list[str]:
    args = {"data.path": data_dir, "train.output_dir": out_dir, "train.steps": steps, "train.batch_size": 4,
            "train.mini_batch_size": 4, "rollout.n": 4, "rollout.max_response_tokens": 2, "train.lr": 1e-3,
            "train.save_every": 0, "logging.tensorboard": False, "logging.samples_every": 1,
            "data.max_prompt_tokens": 64, "train.micro_batch_tokens": 256, "logging.eval_every": 0, **extra}
    return ["--config", "launch/configs/tiny.yaml"] + [f"--{k}={v}" for k, v in args.items()]


def read_metrics(out_dir) -> dict[int, dict]:
    """step -> metrics; each step is logged once (a resume truncates the log to its checkpoint's step)."""
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    assert len({record["step"] for record in records}) == len(records), [record["step"] for record in records]
    return {record["step"]: record for record in records}


def run_single_process(args, env=None):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    env.pop("RANK", None)
    result = subprocess.run([sys.executable, str(TRAIN), *args], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_two_ranks_match_one_process(tiny_data_dir, stories_dir, tmp_path):
    """1 process vs 2 FSDP2 ranks over 3 steps: the same rollouts, gradient norms, KL to the (sharded)
    reference and parameter updates.

    The dense reward (Appendix A) always has spread within a group, so every step updates (a prefix-match
    reward of stories260K on OmniMATH text is almost always 0 for every sample, and would compare nothing)."""
    with_eval = {"logging.eval_every": 3, "logging.eval_max_samples": 9, "reward.kind": "dense", "grpo.kl_coef": 5,
                 "logging.eval_mode": "standard"}
    result = run_single_process(overrides(tiny_data_dir, tmp_path / "one", **with_eval))
    run_torchrun(TRAIN, overrides(tiny_data_dir, tmp_path / "two", **with_eval), nproc=2)
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    # the end of the run: the summary of metrics.jsonl (eval from step 0 to 3) and where the outputs are
    summary = summarize([one[step] for step in sorted(one)])
    assert summary[1].startswith("eval easy/standard ") and "(step 0) -> " in summary[1]
    assert "summary:\n  " + "\n  ".join(summary) + "\n" in result.stdout
    run_dir = tmp_path / "one"
    assert f"  run dir {run_dir} | HF export {run_dir / 'hf'} | plot {run_dir / 'metrics.png'}" in result.stdout
    assert (run_dir / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(one) == sorted(two) == [0, 1, 2, 3]  # step 0: the eval before training
    for step in (1, 2, 3):
        # step 1 starts from the same weights: equal to fp32 summation order. Later steps start from updates
        # that differ where a gradient entry nearly cancels: AdamW's first step moves every entry by ~lr
        # whatever its size, so an entry of ~1e-12 whose sign the summation order decides moves by +-lr
        # (measured: grad norms 1.1e-4 and 4.6e-4 apart, relative, at steps 2 and 3, same sampled tokens)
        tolerance = 1e-6 if step == 1 else 1e-3
        # the same rollouts; dense rewards are policy probabilities, computed by a sharded forward on 2 ranks
        assert one[step]["rollout/reward_mean"] == pytest.approx(two[step]["rollout/reward_mean"],
                                                                 rel=max(tolerance, 1e-5))
        assert one[step]["train/grad_norm"] > 1e-3  # every step learns something
        assert abs(one[step]["train/grad_norm"] - two[step]["train/grad_norm"]) <= tolerance * one[step]["train/grad_norm"]
        assert two[step]["train/kl_ref"] == pytest.approx(one[step]["train/kl_ref"], rel=1e-3, abs=1e-9)
    assert one[3]["train/kl_ref"] > 1e-6
    for step in (0, 3):
        evals = {k: v for k, v in two[step].items() if k.startswith("eval/")}
        assert evals["eval/hard/num_samples"] == 9 and "eval/easy/standard_acc" in evals
        assert evals == {k: v for k, v in one[step].items() if k.startswith("eval/")}  # rank-invariant
    assert set(one[0]) == {"step", *(k for k in one[3] if k.startswith("eval/"))}  # eval only, before step 1
    initial = load_file(stories_dir / "model.safetensors")
    params_one = load_file(tmp_path / "one" / "hf" / "model.safetensors")
    params_two = load_file(tmp_path / "two" / "hf" / "model.safetensors")
    update_one = torch.cat([(params_one[name] - initial[name]).flatten() for name in sorted(initial)])  # (P,)
    update_two = torch.cat([(params_two[name] - initial[name]).flatten() for name in sorted(initial)])  # (P,)
    largest = update_one.abs().max().item()
    assert largest > 1e-4  # three AdamW steps at lr 1e-3 moved the weights
    # the updates agree as a whole; single entries may not: fp32 sums in another order decide the sign of a
    # gradient entry that nearly cancels, and AdamW moves such an entry by ~lr either way (measured: the
    # difference is 5.9e-4 of the update's norm; 15 of 292,800 entries differ by over 1% of the largest
    # entry, the worst by 5%)
    assert (update_two - update_one).norm() <= 5e-3 * update_one.norm()
    assert ((update_two - update_one).abs() > 2e-2 * largest).sum() <= 1e-3 * update_one.numel()
    samples = [json.loads(line) for line in (tmp_path / "two" / "samples.jsonl").read_text().splitlines()]
    assert samples and len(samples[0]["responses"]) == 4 and len(samples[0]["rewards"]) == 4


def test_kill_and_resume_is_bit_identical(tiny_data_dir, tmp_path):
    steps = 4
    args = lambda out: overrides(tiny_data_dir, out, steps=steps, **{"train.save_every": 1})  # noqa: E731
    run_torchrun(TRAIN, args(tmp_path / "full"), nproc=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                str(TRAIN), *args(tmp_path / "killed")], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoint = tmp_path / "killed" / "checkpoints" / "step_00000002"
    deadline = time.time() + 240
    while not checkpoint.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the launcher and both ranks, mid-run
    process.wait()
    assert checkpoint.exists(), "the run never wrote its step-2 checkpoint"
    resumed_from = max(int(p.name.split("_")[1]) for p in checkpoint.parent.glob("step_*"))
    assert resumed_from < steps, "the run finished before it was killed; nothing to resume"
    run_torchrun(TRAIN, args(tmp_path / "killed") + ["--resume", "auto"], nproc=2)
    full, killed = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "killed")
    assert sorted(killed) == list(range(1, steps + 1))
    for step in range(resumed_from + 1, steps + 1):
        for key in ("train/loss", "rollout/reward_mean", "train/grad_norm", "perf/train_compute"):
            assert killed[step][key] == full[step][key], (step, key)


def test_planted_nan_skips_one_update(tiny_data_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    calls = {"n": 0}
    real_policy_loss = update.policy_loss

    def poisoned_on_second_step(*args, **kwargs):
        loss, metrics = real_policy_loss(*args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan"), metrics) if calls["n"] == 2 else (loss, metrics)

    monkeypatch.setattr(update, "policy_loss", poisoned_on_second_step)
    argv = overrides(tiny_data_dir, tmp_path, **{"train.micro_batch_tokens": 4096, "train.export_hf": False})
    cfg = load_config(argv[1], argv[2:])
    history = trainer.train(cfg)
    assert calls["n"] == 3  # one micro-batch per step
    assert [h["train/skipped_updates"] for h in history] == [0, 1, 1]
    assert torch.isnan(torch.tensor(history[1]["train/grad_norm"]))
    assert torch.isfinite(torch.tensor(history[2]["train/loss"]))


def test_nan_on_one_rank_skips_the_update_on_every_rank(tiny_data_dir, tmp_path):
    """A NaN planted in rank 1's loss at step 2 poisons the all-reduced gradient norm: both ranks skip that
    update (neither hangs nor diverges) and the run goes on."""
    out = tmp_path / "history.json"
    args = overrides(tiny_data_dir, tmp_path / "run", **{"train.micro_batch_tokens": 4096, "train.export_hf": False,
                                                         "reward.kind": "dense"})
    run_torchrun(REPO / "tests/workers/train_worker.py", [str(out), "1", "2", "--", *args], nproc=2)
    history = json.loads(out.read_text())
    assert [h["train/skipped_updates"] for h in history] == [0, 1, 1]
    assert math.isnan(history[1]["train/grad_norm"])
    assert math.isfinite(history[2]["train/grad_norm"]) and history[2]["train/grad_norm"] > 0


def test_dense_reward_gets_the_policys_first_token_probability(tiny_data_dir, stories_dir, tmp_path, monkeypatch):
    """Appendix A's dense reward: the loop supplies P(y[0] | x_<t) under the current policy; checked against a
    plain transformers forward of the same weights (step 1: the initial model)."""
    from transformers import AutoModelForCausalLM

    monkeypatch.delenv("RANK", raising=False)
    seen = {}
    real_compute_rewards = rollout_groups.compute_rewards

    def capture(responses, continuations, **kwargs):
        seen.setdefault("kwargs", kwargs)
        return real_compute_rewards(responses, continuations, **kwargs)

    monkeypatch.setattr(rollout_groups, "compute_rewards", capture)
    argv = overrides(tiny_data_dir, tmp_path, steps=1, **{"reward.kind": "dense", "train.export_hf": False,
                                                           "rollout.max_response_tokens": 1})
    cfg = load_config(argv[1], argv[2:])
    history = trainer.train(cfg)
    kwargs = seen["kwargs"]
    assert kwargs["kind"] == "dense" and len(kwargs["first_token_probs"]) == 16
    samples = SampleStream(cfg.data.path, seed=cfg.train.seed).next_batch(4)  # the step's contexts
    model = AutoModelForCausalLM.from_pretrained(stories_dir).eval()
    for i, first in enumerate(kwargs["first_token_ids"]):
        context = torch.tensor([[1] + samples[i // 4].context_ids])  # stories260K's BOS, as the proxy saw it
        expected = torch.softmax(model(context).logits[0, -1], -1)[first].item()
        assert abs(kwargs["first_token_probs"][i] - expected) < 1e-5
    assert 0 < history[0]["rollout/reward_mean"] <= 1


def test_several_updates_per_step_fix_old_logprobs_first(tiny_data_dir, tmp_path, monkeypatch):
    """mini_batch_size < batch_size: two optimizer updates per step against old log-probs fixed before the
    first. The first mini-batch's ratios are exactly 1 (old = current, bit for bit); the second's are not
    (with detached current log-probs they would be 1 too, and the KL to old 0)."""
    monkeypatch.delenv("RANK", raising=False)
    real_policy_loss = update.policy_loss
    ratio_is_one = []  # per policy_loss call, in order: were old and current log-probs bitwise equal?

    def capture(logp, old_logp, *args, **kwargs):
        mask = args[1]
        ratio_is_one.append(torch.equal(logp.detach()[mask], old_logp[mask]))
        return real_policy_loss(logp, old_logp, *args, **kwargs)

    monkeypatch.setattr(update, "policy_loss", capture)
    # dense rewards always have spread, so both updates move the weights
    argv = overrides(tiny_data_dir, tmp_path, steps=1, **{"train.mini_batch_size": 2, "train.export_hf": False,
                                                           "rollout.max_response_tokens": 1, "reward.kind": "dense",
                                                           "train.micro_batch_tokens": 4096})
    history = trainer.train(load_config(argv[1], argv[2:]))
    assert ratio_is_one == [True, False]  # one micro-batch per mini-batch: the first exact, the second moved
    assert history[0]["train/grad_norm"] > 0
    assert history[0]["train/approx_kl_old"] > 0 and history[0]["train/ratio_mean"] != 1.0


def test_kl_to_the_reference(tiny_data_dir, tmp_path, monkeypatch):
    """grpo.kl_coef > 0: at step 1 the policy is the reference, so the KL and its gradient are 0 and the update
    is the kl 0 update; once the weights moved, train/kl_ref > 0 and the updates differ."""
    monkeypatch.delenv("RANK", raising=False)
    runs = {}
    for kl in (0, 5):
        argv = overrides(tiny_data_dir, tmp_path / f"kl{kl}", **{"grpo.kl_coef": kl, "reward.kind": "dense",
                                                                 "train.export_hf": False})
        runs[kl] = trainer.train(load_config(argv[1], argv[2:]))
    assert "train/kl_ref" not in runs[0][0]  # no reference at kl 0
    assert runs[5][0]["train/kl_ref"] == 0.0
    assert runs[5][0]["train/grad_norm"] == runs[0][0]["train/grad_norm"]
    assert runs[5][2]["train/kl_ref"] > 1e-6
    assert runs[5][2]["train/grad_norm"] != runs[0][2]["train/grad_norm"]


def test_dynamic_sampling_pooled_over_two_ranks_matches_one_process(tiny_data_dir, tmp_path):
    """Dynamic sampling from step 0, pooled over ranks: 2 ranks keep the very groups 1 process keeps (the same
    rounds, filtered and surplus counts, rewards) and train on them alike."""
    args = lambda out: overrides(tiny_data_dir, out, steps=2, **{  # noqa: E731
        "grpo.dynamic_sampling_start_step": 0, "grpo.max_generation_rounds": 3, "grpo.on_round_cap": "partial",
        "rollout.max_response_tokens": 1, "rollout.temperature": 1.5, "train.export_hf": False})
    run_single_process(args(tmp_path / "one"))
    run_torchrun(TRAIN, args(tmp_path / "two"), nproc=2)
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    keys = ("rollout/reward_mean", "rollout/kept_reward_mean", "rollout/kept_group_frac", "rollout/groups_filtered",
            "rollout/groups_surplus", "rollout/generation_rounds", "rollout/partial_batch", "perf/train_compute")
    for step in (1, 2):
        assert {k: one[step][k] for k in keys} == {k: two[step][k] for k in keys}
        assert abs(one[step]["train/grad_norm"] - two[step]["train/grad_norm"]) <= 1e-5 * max(1, one[step]["train/grad_norm"])
    assert sum(one[s]["rollout/groups_filtered"] for s in one) > 0  # groups were dropped ...
    assert any(one[s]["rollout/kept_group_frac"] > 0 and one[s]["train/grad_norm"] > 0 for s in one)  # ... and kept


def test_reasoning_eval_every_step_with_the_engine_awake(tiny_data_dir, tmp_path):
    """eval_mode reasoning generates with the engine: it must be awake, not weights-only after the sync (the
    old order: sleep, update_weights, evaluate -> EngineStateError here, a hang in vLLM on a GPU). 2 ranks,
    the HF engine, evaluation after every step; per-phase memory is logged."""
    run_torchrun(TRAIN, overrides(tiny_data_dir, tmp_path, steps=2, **{
        "logging.eval_every": 1, "logging.eval_mode": "reasoning", "logging.eval_max_samples": 4,
        "train.export_hf": False}), nproc=2)
    metrics = read_metrics(tmp_path)
    assert sorted(metrics) == [0, 1, 2]  # step 0: the untrained policy's evaluation
    for step, record in metrics.items():
        for split in ("easy", "medium", "hard"):
            assert record[f"eval/{split}/num_samples"] == 4
            assert 0 <= record[f"eval/{split}/reasoning_acc"] <= 1
        for phase in ("generate", "update", "sync") if step else ():  # CPU: the phase's peak RSS, > 100 MiB
            assert record[f"perf/mem_{phase}_peak_rss_gib"] > 0.1



def test_round_cap_error_on_one_rank_reaches_every_rank(tiny_data_dir, tmp_path):
    """on_round_cap=error with only rank 1's groups dropped: the pooled batch is short, and both ranks raise
    the cap error themselves, rather than one raising while the other waits in the update's collective for
    the process-group timeout (here 1 minute: train.dist_timeout_minutes, checked on the group as well)."""
    args = overrides(tiny_data_dir, tmp_path / "run", steps=1, **{
        "reward.kind": "dense", "grpo.dynamic_sampling_start_step": 0, "grpo.max_generation_rounds": 1,
        "grpo.on_round_cap": "error", "train.dist_timeout_minutes": 1, "train.export_hf": False})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(REPO / "tests/workers/round_cap_worker.py"), str(tmp_path), *args], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    rank0, rank1 = ((tmp_path / f"rank{r}.txt").read_text() for r in (0, 1))
    # rank 0 kept its 2 groups (dense rewards have spread), rank 1 none: 2 of the 4 the step needs
    assert rank0 == rank1
    assert rank0.startswith("RuntimeError: dynamic sampling kept 2 of 4 groups over all ranks after 1 generation "
                            "rounds (4 groups generated, 2 with all-equal rewards)")
    assert [(tmp_path / f"timeout{r}.txt").read_text() for r in (0, 1)] == ["60.0", "60.0"]


class ScriptedEngine:
    """A stand-in for the rollout engine whose sample i of every prompt is answers[i % len(answers)] + EOS; it
    records each generate call as (prompts, n). Generation is not what the tests using it check; the path
    from responses to rewards, evaluation and an update is. Default: the paper's format, half the samples
    closing the box on the right next token (" a}" after the prefilled `</think>\\n\\boxed{`), half on a
    wrong one (" b}")."""

    def __init__(self, tokenizer, answers=(" a}", " b}")):
        self.answers = [tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.eos_token_id]
                        for answer in answers]
        self.calls = []

    def generate(self, prompts, params, seeds=None):
        from rpt.rollout.engine import Completion

        self.calls.append((len(prompts), params.n))
        return [[Completion(list(self.answers[i % len(self.answers)]), None, "stop") for i in range(params.n)]
                for _ in prompts]

    def update_weights(self, named_tensors):
        for _ in named_tensors:  # consume the stream, as a real engine does
            pass

    def sleep(self):
        pass

    def wake(self):
        pass


def test_boxed_reward_through_the_loop_earns_and_trains(stories_dir, stories_tokenizer, tmp_path, monkeypatch):
    """The paper's answer format through the real loop: prompts prefilled up to `</think>\\n\\boxed{`, the
    prediction extracted from the box (boxed extraction), scored by Eq. 3 against a corpus whose every
    continuation starts with " a": half the samples earn 1, so every group has spread and the update moves."""
    from rpt.data.prepare import prepare

    monkeypatch.delenv("RANK", raising=False)
    corpus = tmp_path / "a.jsonl"
    corpus.write_text("".join(json.dumps({"text": "a" + " a" * (60 + i)}) + "\n" for i in range(6)))  # distinct
    prepare(corpus, stories_dir, tmp_path / "data", fields=("text",), threshold=-1.0, heldout_docs=1,
            min_context=8, max_context=64, docs_per_chunk=8, progress=False)
    monkeypatch.setattr(trainer, "build_engine", lambda cfg, tokenizer, device: ScriptedEngine(tokenizer))
    argv = overrides(tmp_path / "data", tmp_path / "run", steps=2, **{
        "reward.extraction": "boxed", "train.export_hf": False,
        "data.response_prefill": '"</think>\\n\\\\boxed{"'})  # YAML double quotes: a real newline
    history = trainer.train(load_config(argv[1], argv[2:]))
    for record in history:
        assert record["rollout/had_think"] == record["rollout/had_box"] == 1.0
        assert record["rollout/reward_mean"] == record["rollout/kept_accuracy"] == 0.5
        assert record["train/grad_norm"] > 0
    sample = json.loads((tmp_path / "run" / "samples.jsonl").read_text().splitlines()[0])
    assert sample["prompt"].endswith("</think>\n\\boxed{") and sample["rewards"] == [1.0, 0.0, 1.0, 0.0]
    assert sample["responses"][0] == "</think>\n\\boxed{ a}"
