"""Train a policy with RPT (next-token reasoning + GRPO).

CPU, 2 ranks, the tiny default (prepare its data first: `make tiny` does both):
    torchrun --nproc_per_node=2 launch/train.py --config launch/configs/tiny.yaml
The paper's run on one 8-GPU node:
    torchrun --nproc_per_node=8 launch/train.py --config launch/configs/rpt_14b.yaml \
        --model.path=/models/DeepSeek-R1-Distill-Qwen-14B --data.path=/data/omnimath_rpt
Any field can be overridden: --section.key=value (see rpt/config.py); --resume auto continues the latest
checkpoint in train.output_dir.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from rpt.cli import check_paths, check_training_splits  # noqa: E402
from rpt.config import ConfigError, load_config  # noqa: E402


def main(argv: list[str]) -> None:
    config_path, overrides, i = None, [], 0
    while i < len(argv):
        if argv[i] in ("--config", "--resume"):
            if i + 1 >= len(argv):
                sys.exit(f"{argv[i]} needs a value")
            if argv[i] == "--config":
                config_path = argv[i + 1]
            else:
                overrides.append(f"--train.resume={argv[i + 1]}")
            i += 2
        else:
            overrides.append(argv[i])
            i += 1
    try:
        cfg = load_config(config_path, overrides)
        check_paths(cfg)  # before any import or load: a missing model path is named as such
        check_training_splits(cfg)
    except ConfigError as error:
        sys.exit(f"config error: {error}")
    from rpt.dist import cleanup
    from rpt.train import train

    train(cfg)
    cleanup()


if __name__ == "__main__":
    main(sys.argv[1:])
