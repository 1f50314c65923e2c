"""Print the per-GPU memory plan of a training config before allocating a node (rpt/plan.py).

    python launch/plan.py --config launch/configs/rpt_14b.yaml --model.path=/models/DeepSeek-R1-Distill-Qwen-14B \
        --world_size 8 --gpu_memory_gib 80

Reads only the model's config.json (no weights) and the training config (the same --config and
--section.key=value overrides as launch/train.py; data.path is not needed). Warnings are printed after the
table, naming the field to change.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from rpt.config import ConfigError, load_config  # noqa: E402
from rpt.plan import format_plan, plan_memory, read_model_shape  # noqa: E402


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="a YAML preset, e.g. launch/configs/rpt_14b.yaml")
    parser.add_argument("--world_size", type=int, default=8, help="GPUs in the job (default 8)")
    parser.add_argument("--gpus_per_node", type=int, default=8, help="for the host RAM per node (default 8)")
    parser.add_argument("--gpu_memory_gib", type=float, default=80.0, help="memory of one GPU (default 80)")
    args, overrides = parser.parse_known_args(argv)
    if not any(o.startswith("--data.path") for o in overrides):
        overrides.append("--data.path=unused-by-the-plan")
    try:
        cfg = load_config(args.config, overrides)
        shape = read_model_shape(cfg.model.path)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        sys.exit(f"plan error: {error}")
    plan = plan_memory(shape, cfg, args.world_size, args.gpu_memory_gib, args.gpus_per_node)
    print(f"{cfg.model.path}: {shape.params / 1e9:.2f}B params, {shape.num_layers} layers, hidden {shape.hidden_size}, "
          f"vocab {shape.vocab_size}; {args.world_size} GPUs x {args.gpu_memory_gib:g} GiB, "
          f"TP {cfg.rollout.tensor_parallel_size}, micro_batch_tokens {cfg.train.micro_batch_tokens}, "
          f"gpu_memory_utilization {cfg.rollout.gpu_memory_utilization}")
    print(format_plan(plan))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
