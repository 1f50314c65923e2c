"""Evaluation after (or between) training runs: Table 1, Figure 5 and Figure 6 for your own model
(Section 4 of the paper, arXiv 2506.08007), and the downstream evaluations of Tables 2-3. Six subcommands:

accuracy  next-token accuracy on the easy/medium/hard splits of a prepared data directory, standard mode
          (argmax of one forward pass) and/or next-token reasoning (sampled through the rollout engine,
          scored with the prefix-matching reward); prints which model scored the splits (the data's
          split_proxy) and Table 1, writes accuracy.json and the per-sample predictions / responses (jsonl)
          to --out.
    python launch/evaluate.py accuracy --config runs/tiny/config.yaml --model.path=runs/tiny/hf \\
        --mode standard reasoning --num-samples 8 --pass-k 8 --out runs/eval_tiny
    torchrun --nproc_per_node=8 launch/evaluate.py accuracy --config launch/configs/rpt_14b.yaml \\
        --model.path=DIR --data.path=DIR --mode reasoning --out runs/eval_rpt   # the numbers match 1 process
table     several accuracy.json files as one Table 1 (one row per file and mode)
    python launch/evaluate.py table runs/eval_base/accuracy.json runs/eval_rpt/accuracy.json
fit       P(C) = P* - A * C^(-alpha) per split (Figure 5) from a csv/json of points or a training run's
          TensorBoard events (eval/*_acc against perf/train_compute); prints the parameters and R^2, saves
          a PNG with one panel per split
    python launch/evaluate.py fit --run runs/rpt --out runs/rpt/scaling.png
    python launch/evaluate.py fit --points points.csv --out scaling.png   # csv header: split,compute,accuracy
patterns  share of responses with each reasoning-pattern group of Table 9 in a jsonl (field "response" by
          default, a list of texts counts as that many); with two files, side by side with relative change
    python launch/evaluate.py patterns runs/eval_base/reasoning_responses.jsonl \\
        runs/eval_rpt/reasoning_responses.jsonl --names R1-Distill RPT --out patterns.json
    python launch/evaluate.py patterns runs/rpt/samples.jsonl --field responses   # the trainer's dumps
math      accuracy (mean reward over --num-samples responses per question) and pass@k on a question file
          (Table 2's column), answers verified by math-verify; the paper: temperature 0.6, 32,000 tokens
    python launch/evaluate.py math --config launch/configs/rlvr_tiny.yaml --model.path=runs/rlvr_tiny/hf \
        --max-questions 16 --num-samples 4 --pass-k 1 4 --max-tokens 64 --out runs/eval_math_tiny
    torchrun --nproc_per_node=8 launch/evaluate.py math --config launch/configs/rlvr_14b.yaml \
        --model.path=runs/rlvr_14b/hf --questions skywork_or1_test200.parquet --num-samples 8 --out runs/eval_math
mcq       zero-shot multiple choice (Table 3; per category, Appendix C) on an MMLU-Pro or SuperGPQA file:
          standard (option letter with the highest next-token probability after "Answer:") and/or reasoning
          (sampled, the letter read from the last box after </think>); the paper: temperature 0.8, 12,288 tokens
    torchrun --nproc_per_node=8 launch/evaluate.py mcq --config launch/configs/rpt_14b.yaml --model.path=DIR \
        --data.path=DIR --file mmlu_pro_test.parquet --schema mmlu_pro --mode standard reasoning \
        --max-per-category 200 --out runs/eval_mmlu_pro
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from rpt.cli import at_least  # noqa: E402


def setup(args, overrides: list[str], max_response_tokens: int | None = None):
    """The model-evaluating subcommands' start: config (--config + overrides; the model's paths checked, and
    the prepared data's where no response budget is given: accuracy reads the data, math and mcq their own
    files), ranks, tokenizer, output directory -> (cfg, rank, device, tokenizer, out_dir)."""
    from rpt.cli import check_model_paths, check_paths
    from rpt.config import ConfigError, load_config
    from rpt.dist import init_distributed
    from rpt.model import load_tokenizer

    try:
        cfg = load_config(args.config, overrides)
        (check_paths if max_response_tokens is None else check_model_paths)(cfg)
    except ConfigError as error:
        raise SystemExit(f"config error: {error}") from None
    cfg.rollout.sleep_level = 0  # evaluation never trains: the engine keeps its memory
    if max_response_tokens is not None:
        cfg.rollout.max_response_tokens = max_response_tokens  # sizes the vLLM context: prompt + response
    rank, _, device = init_distributed()
    tokenizer = load_tokenizer(cfg.model.tokenizer_path or cfg.model.path)
    out_dir = Path(args.out) if args.out else None
    if out_dir and rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    return cfg, rank, device, tokenizer, out_dir


def run_accuracy(args, overrides: list[str]) -> None:
    import dataclasses

    from rpt.build import build_engine, build_eval_model, prompt_settings, sampling_params
    from rpt.data.samples_io import check_vocabulary, describe_split_scorer, read_manifest, read_samples
    from rpt.dist import print0
    from rpt.eval.accuracy import (data_parallel_layout, evaluate_split, format_accuracy_table, reduce_split_results,
                                   rows_of_summary, select_evenly, write_sample_records)

    cfg, rank, device, tokenizer, out_dir = setup(args, overrides)
    manifest = read_manifest(cfg.data.path)
    print0(describe_split_scorer(manifest))  # the buckets depend on it (the paper: R1-Distill-Qwen-14B)
    try:
        check_vocabulary(cfg.data.path, tokenizer)  # before the model loads
    except ValueError as error:
        raise SystemExit(f"data error: {error}") from None
    split_samples = {split: select_evenly(read_samples(cfg.data.path, split), args.max_samples)
                     for split in args.splits}
    empty = [split for split, samples in split_samples.items() if not samples]
    if len(empty) == len(split_samples):
        raise SystemExit(f"every split asked for ({', '.join(empty)}) of {cfg.data.path} is empty: nothing to "
                         "evaluate (the held-out documents have no position above the split's entropy threshold)")
    for split in empty:
        print0(f"split '{split}' of {cfg.data.path} is empty (no held-out position above its entropy threshold): "
               "left out of the results")
    model = build_eval_model(cfg, device) if "standard" in args.mode else None
    engine = build_engine(cfg, tokenizer, device) if "reasoning" in args.mode else None
    name = args.name or Path(cfg.model.path).resolve().name
    settings = {"config": args.config, "overrides": overrides,
                **{key: value for key, value in vars(args).items() if key not in ("func", "config")}}
    summary = {"name": name, "model": str(cfg.model.path), "data": str(cfg.data.path), "settings": settings,
               "config": {section: dataclasses.asdict(getattr(cfg, section)) for section in ("data", "rollout",
                                                                                               "reward")},
               "empty_splits": empty, "results": {},
               "split_scorer": manifest.get("split_proxy", manifest["proxy"])}  # which model drew the buckets
    for mode in args.mode:
        shard, num_shards, counted = data_parallel_layout(engine, mode)
        results, records = {}, []
        for split, samples in split_samples.items():
            if not samples:
                continue
            print0(f"{mode} / {split}: {len(samples)} samples over {num_shards} shard(s)")
            results[split] = evaluate_split(
                model, tokenizer, engine, samples, mode, rank=shard, world_size=num_shards,
                batch_size=args.batch_size, prompt=prompt_settings(cfg),
                sampling=sampling_params(cfg, n=args.num_samples), extraction=cfg.reward.extraction,
                pass_k=tuple(args.pass_k), seed=cfg.train.seed, show_progress=rank == 0)
            if counted:
                records += [{"split": split, **record} for record in results[split].records]
        summary["results"][mode] = reduce_split_results(results, counted)
        if out_dir:
            write_sample_records(out_dir, mode, records)
    print0(format_accuracy_table(rows_of_summary(summary), args.splits))
    print0(describe_split_scorer(manifest))
    if out_dir and rank == 0:
        (out_dir / "accuracy.json").write_text(json.dumps(summary, indent=2))
        print0(f"wrote {out_dir / 'accuracy.json'}")


def run_table(args) -> None:
    from rpt.eval.accuracy import format_accuracy_table, rows_of_summary

    summaries = [json.loads(Path(path).read_text()) for path in args.files]
    rows = [row for summary in summaries for row in rows_of_summary(summary)]
    rows.sort(key=lambda row: row[0] != "standard")  # Table 1 lists standard prediction first
    print(format_accuracy_table(rows, args.splits))
    scorers = [summary.get("split_scorer", {}).get("path", "unknown") for summary in summaries]
    for summary, scorer in zip(summaries, scorers):
        print(f"{summary['name']}: held-out splits scored by {scorer}")
    if len(set(scorers)) > 1:
        print("warning: the rows' splits were bucketed by different models, so their difficulties differ")


def run_fit(args) -> None:
    from rpt.eval.scaling import fit_power_law, plot_scaling, read_points, read_points_from_run

    series = read_points(args.points) if args.points else read_points_from_run(args.run, args.x)
    fitted, report = {}, {}
    print(f"{'series':<24} {'P*':>10} {'A':>12} {'alpha':>8} {'R^2':>8} {'points':>6}")
    for name, (x, accuracy) in series.items():
        positive = x > 0  # C^(-alpha) is infinite at zero compute (the eval before the first step)
        if (~positive).any():
            print(f"{name}: dropped {int((~positive).sum())} point(s) at x <= 0")
        x, accuracy = x[positive], accuracy[positive]
        if len(x) < 3:
            print(f"{name}: only {len(x)} point(s) with x > 0, no fit")
            continue
        fit = fit_power_law(x, accuracy)
        fitted[name] = (x, accuracy, fit)
        report[name] = {"p_star": fit.p_star, "a": fit.a, "alpha": fit.alpha, "r_squared": fit.r_squared,
                        "x": x.tolist(), "accuracy": accuracy.tolist()}
        print(f"{name:<24} {fit.p_star:>10.4f} {fit.a:>12.4g} {fit.alpha:>8.4f} {fit.r_squared:>8.4f} {len(x):>6}")
    if not fitted:
        raise SystemExit("nothing to fit: every series has fewer than 3 points with x > 0")
    x_label = "training step" if args.run and args.x == "step" else "training compute (FLOPs)"
    plot_scaling(fitted, args.out, x_label=x_label)
    print(f"wrote {args.out}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")


def run_patterns(args) -> None:
    from rpt.eval.patterns import compute_pattern_shares, compute_relative_change, format_pattern_table, read_responses

    names = args.names or [Path(path).stem for path in args.files]
    if len(names) != len(args.files):
        raise SystemExit(f"--names needs one name per file ({len(args.files)})")
    fields = args.field * len(args.files) if len(args.field) == 1 else args.field
    if len(fields) != len(args.files):
        raise SystemExit(f"--field takes one name, or one per file ({len(args.files)})")
    responses = [read_responses(path, field) for path, field in zip(args.files, fields)]
    shares = [compute_pattern_shares(texts) for texts in responses]
    print(", ".join(f"{name}: {len(texts)} responses" for name, texts in zip(names, responses)))
    print(format_pattern_table(shares, names))
    if args.out:
        report = {name: {"num_responses": len(texts), "shares": share}
                  for name, texts, share in zip(names, responses, shares)}
        if len(shares) == 2:
            report["relative_change_percent"] = compute_relative_change(shares[0], shares[1])
        Path(args.out).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")


def gathered(records: list[dict]) -> list[dict]:
    """Every rank's records, in rank order."""
    from rpt.dist import all_gather_objects

    return [record for rank_records in all_gather_objects(records) for record in rank_records]


def run_math(args, overrides: list[str]) -> None:
    from rpt.build import build_engine, load_fitting_questions
    from rpt.dist import print0
    from rpt.eval.math import evaluate_math

    cfg, rank, device, tokenizer, out_dir = setup(args, overrides, args.max_tokens)
    path = args.questions or cfg.data.questions
    if not path:
        raise SystemExit("math needs --questions or data.questions in the config")
    questions = load_fitting_questions(cfg, tokenizer, path, args.max_questions)
    engine = build_engine(cfg, tokenizer, device)
    result, records = evaluate_math(
        tokenizer, engine, questions, num_samples=args.num_samples, pass_k=tuple(args.pass_k),
        temperature=args.temperature, top_p=cfg.rollout.top_p, max_tokens=args.max_tokens, seed=cfg.train.seed,
        chat=cfg.data.chat, think_prefill=cfg.data.think_prefill, batch_size=args.batch_size,
        verify_timeout_s=cfg.reward.verify_timeout_s)
    records = gathered(records)
    name = args.name or Path(cfg.model.path).resolve().name
    print0(f"{name}: accuracy {100 * result['acc']:.1f} (mean over {args.num_samples} samples of "
           f"{result['num_questions']} questions)" + "".join(f" | pass@{k} {100 * result[f'pass@{k}']:.1f}"
                                                             for k in args.pass_k)
           + f" | verify timeouts {result['verify_timeouts']}")
    if out_dir and rank == 0:
        settings = {key: value for key, value in vars(args).items() if key != "func"}
        (out_dir / "math.json").write_text(json.dumps({"name": name, "model": str(cfg.model.path), "questions": path,
                                                       "settings": settings, "overrides": overrides, **result,
                                                       "records": records}, indent=1))
        print0(f"wrote {out_dir / 'math.json'}")


def run_mcq(args, overrides: list[str]) -> None:
    from rpt.build import build_engine, build_eval_model
    from rpt.data.mcq import load_choice_questions
    from rpt.dist import print0
    from rpt.eval.mcq import evaluate_choice, format_choice_table, write_choice_results

    cfg, rank, device, tokenizer, out_dir = setup(args, overrides, args.max_tokens)
    questions, report = load_choice_questions(args.file, args.schema, max_per_category=args.max_per_category)
    print0(f"{len(questions)} questions from {args.file} ({report.num_bad} bad records skipped)")
    model = build_eval_model(cfg, device) if "standard" in args.mode else None
    engine = build_engine(cfg, tokenizer, device) if "reasoning" in args.mode else None
    name = args.name or Path(cfg.model.path).resolve().name
    rows, categories = [], sorted({q.category for q in questions})
    for mode in args.mode:
        result, records = evaluate_choice(
            model, tokenizer, engine, questions, mode, batch_size=args.batch_size, num_samples=args.num_samples,
            temperature=args.temperature, top_p=cfg.rollout.top_p, max_tokens=args.max_tokens, seed=cfg.train.seed,
            chat=cfg.data.chat, think_prefill=cfg.data.think_prefill)
        records = gathered(records)
        rows.append((mode, name, {**{c: result["categories"][c]["acc"] for c in categories},
                                  "Overall": result["overall"]}))
        if out_dir and rank == 0:
            write_choice_results(out_dir / f"{args.schema}_{mode}.json", args.schema, mode, name, result, records)
    print0(format_choice_table(rows, categories + ["Overall"]))


def add_generation_flags(command, items: str, *, temperature: float, max_tokens: int, batch_size: int,
                         out: str) -> None:
    """The downstream commands' shared flags, with the paper's sampling settings of each as defaults."""
    command.add_argument("--config", required=True, help="a preset (e.g. rlvr_14b.yaml) or a run's config.yaml")
    command.add_argument("--num-samples", type=int, default=1, help=f"responses per {items[:-1]} (accuracy = their "
                                                                    "mean)")
    command.add_argument("--temperature", type=float, default=temperature, help=f"the paper's: {temperature}")
    command.add_argument("--max-tokens", type=int, default=max_tokens, help=f"response budget; the paper's: "
                                                                            f"{max_tokens:,}")
    command.add_argument("--batch-size", type=int, default=batch_size, help=f"{items} per forward / generate call")
    command.add_argument("--name", default="", help="row name (default: the model directory)")
    command.add_argument("--out", default="", help=f"directory for {out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    accuracy = commands.add_parser(
        "accuracy", help="next-token accuracy by difficulty split (Table 1)",
        description="Model, data, prompt, rollout and reward settings come from --config (a preset or a run's "
                    "saved config.yaml) and --section.key=value overrides, exactly as in training.")
    accuracy.add_argument("--config", required=True, help="a preset or a run's config.yaml")
    accuracy.add_argument("--splits", nargs="+", default=["easy", "medium", "hard"])
    accuracy.add_argument("--mode", nargs="+", choices=["standard", "reasoning"], default=["standard"])
    accuracy.add_argument("--max-samples", type=at_least(0), default=0, help="N samples evenly spaced over each split "
                                                                     "(0: all)")
    accuracy.add_argument("--batch-size", type=at_least(1), default=16, help="contexts per forward / generate call")
    accuracy.add_argument("--num-samples", type=at_least(1), default=1, help="reasoning: responses per context (n)")
    accuracy.add_argument("--pass-k", type=at_least(1), nargs="*", default=[], help="reasoning: Pass@k for these k <= n")
    accuracy.add_argument("--name", default="", help="row name in the table (default: the model directory)")
    accuracy.add_argument("--out", default="", help="directory for accuracy.json and per-sample jsonl")
    accuracy.set_defaults(func=run_accuracy)

    table = commands.add_parser("table", help="several accuracy.json files as one Table 1")
    table.add_argument("files", nargs="+")
    table.add_argument("--splits", nargs="+", default=["easy", "medium", "hard"])
    table.set_defaults(func=run_table)

    fit = commands.add_parser("fit", help="power-law fit of accuracy against training compute (Figure 5)")
    source = fit.add_mutually_exclusive_group(required=True)
    source.add_argument("--points", help="csv (header split,compute,accuracy) or json list of such objects")
    source.add_argument("--run", help="training run directory with TensorBoard event files")
    fit.add_argument("--x", choices=["compute", "step"], default="compute", help="--run: x axis")
    fit.add_argument("--out", default="scaling.png", help="PNG path")
    fit.add_argument("--json", default="", help="also write the fitted parameters here")
    fit.set_defaults(func=run_fit)

    patterns = commands.add_parser("patterns", help="reasoning-pattern shares (Table 9, Figure 6)")
    patterns.add_argument("files", nargs="+", help="one jsonl, or two to compare (baseline first)")
    patterns.add_argument("--field", nargs="+", default=["response"],
                          help="jsonl field holding the response text, or one per file (the trainer's "
                               "samples.jsonl: responses)")
    patterns.add_argument("--names", nargs="+", help="column names (default: file names)")
    patterns.add_argument("--out", default="", help="write the shares as json here")
    patterns.set_defaults(func=run_patterns)

    math = commands.add_parser(
        "math", help="math accuracy and pass@k on a question file (Table 2)",
        description="Model, prompt and reward settings come from --config and --section.key=value overrides.")
    math.add_argument("--questions", default="", help="question file or directory (default: data.questions)")
    math.add_argument("--max-questions", type=int, default=0, help="the first N questions (0: all)")
    math.add_argument("--pass-k", type=int, nargs="*", default=[], help="pass@k for these k <= num-samples")
    add_generation_flags(math, "questions", temperature=0.6, max_tokens=32000, batch_size=16,
                         out="math.json (results and every response)")
    math.set_defaults(func=run_math)

    mcq = commands.add_parser(
        "mcq", help="zero-shot multiple choice, overall and per category (Table 3, Appendix C)",
        description="Model and prompt settings come from --config and --section.key=value overrides.")
    mcq.add_argument("--file", required=True, help="MMLU-Pro or SuperGPQA .jsonl/.parquet file or directory")
    mcq.add_argument("--schema", choices=["mmlu_pro", "supergpqa"], required=True)
    mcq.add_argument("--mode", nargs="+", choices=["standard", "reasoning"], default=["standard"])
    mcq.add_argument("--max-per-category", type=int, default=0, help="the first N of each category (paper: 200)")
    add_generation_flags(mcq, "questions", temperature=0.8, max_tokens=12288, batch_size=8,
                         out="<schema>_<mode>.json")
    mcq.set_defaults(func=run_mcq)
    return parser


def main(argv: list[str] | None = None) -> None:
    args, overrides = build_parser().parse_known_args(argv)
    if args.command in ("accuracy", "math", "mcq"):  # the unknown arguments are --section.key=value overrides
        return args.func(args, overrides)
    if overrides:
        raise SystemExit(f"unrecognized arguments: {' '.join(overrides)}")
    if args.command == "patterns" and len(args.files) > 2:
        raise SystemExit("patterns takes one file, or two to compare")
    args.func(args)


if __name__ == "__main__":
    main()
