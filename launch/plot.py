"""Plot a training run: sampled reward, kept-group fraction, response length, log-prob mismatch, grad norm and
eval accuracy by split against step, from RUN_DIR/metrics.jsonl, into RUN_DIR/metrics.png (the loop writes
the same picture at the end of every run; this redraws it on demand, e.g. while a run is going).

    python launch/plot.py runs/tiny
    python launch/plot.py runs/tiny --out tiny.png
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing rpt
from rpt.report import plot_run  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a training run directory (train.output_dir), holding metrics.jsonl")
    parser.add_argument("--out", default=None, help="PNG path (default: RUN_DIR/metrics.png)")
    args = parser.parse_args(argv)
    print(f"wrote {plot_run(args.run_dir, args.out)}")


if __name__ == "__main__":
    main()
