"""Prepare next-token-reasoning data: read a corpus, score every token position with a proxy model's top-16
entropy, hold out documents for validation, and write shards plus a manifest (Section 3.3 of the paper).

One process (CPU, the tiny default):
    python launch/prepare_data.py --corpus assets/stories/stories.jsonl --fields text \
        --proxy assets/models/stories260K --out runs/tiny_stories --threshold -1 --heldout-docs 3 \
        --min-context 8 --max-context 128
The paper's setup (R1-Distill-Qwen-1.5B filters training positions, R1-Distill-Qwen-14B buckets the held-out
ones; 8 GPUs, each rank scoring its share of the documents):
    torchrun --nproc_per_node=8 launch/prepare_data.py --corpus omni_math.jsonl \
        --proxy DeepSeek-R1-Distill-Qwen-1.5B --split-proxy DeepSeek-R1-Distill-Qwen-14B --out data/omni_math \
        --dtype bfloat16
Rerunning the same command after a crash continues where it stopped. The trainer reads the output with
rpt.data.SampleStream, the evaluator with rpt.data.read_samples.
"""
import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing rpt
from rpt.cli import at_least  # noqa: E402
from rpt.data.entropy import DEFAULT_TRAIN_THRESHOLD, TOP_K  # noqa: E402
from rpt.data.prepare import prepare  # noqa: E402
from rpt.dist import cleanup, init_distributed  # noqa: E402


def finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", nargs="+", required=True, help=".jsonl, .parquet or .txt files, or directories")
    parser.add_argument("--proxy", required=True, help="HF model directory of the proxy scorer")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--split-proxy", default=None,
                        help="HF model directory that scores the held-out documents, so it sets the easy/medium/hard "
                             "buckets (the paper: the policy, R1-Distill-Qwen-14B; default: --proxy)")
    parser.add_argument("--tokenizer", default=None, help="policy tokenizer directory (default: the proxy's)")
    parser.add_argument("--fields", default="problem,solution", help="jsonl/parquet text fields, comma-separated")
    parser.add_argument("--threshold", type=finite_float, default=DEFAULT_TRAIN_THRESHOLD,
                        help="training keeps positions with entropy above this (nats)")
    parser.add_argument("--heldout-docs", type=at_least(0), default=200, help="documents held out for validation")
    parser.add_argument("--max-docs", type=at_least(1), default=None, help="use only the first N good documents")
    parser.add_argument("--min-context", type=at_least(1), default=32, help="no sample before this many tokens")
    parser.add_argument("--continuation-tokens", type=at_least(1), default=None,
                        help="cap each sample's ground truth at N tokens (default: the rest of the document, "
                             "as Eq. 3's x_>=t)")
    parser.add_argument("--max-context", type=at_least(1), default=4096, help="contexts are left-truncated to this")
    parser.add_argument("--top-k", type=at_least(1), default=TOP_K, help="entropy over the k largest logits")
    parser.add_argument("--docs-per-chunk", type=at_least(1), default=64, help="documents per shard (unit of resume)")
    parser.add_argument("--batch-tokens", type=at_least(1), default=16384, help="tokens per proxy forward (rows x length)")
    parser.add_argument("--head-chunk", type=at_least(1), default=256, help="positions per LM-head matmul")
    parser.add_argument("--max-record-bytes", type=at_least(1), default=1 << 20, help="larger records are skipped")
    parser.add_argument("--max-bad-fraction", type=fraction, default=0.01, help="more bad records is an error")
    parser.add_argument("--seed", type=int, default=0, help="held-out document selection")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    _, _, device = init_distributed()
    try:
        prepare(args.corpus, args.proxy, args.out, tokenizer=args.tokenizer, fields=tuple(args.fields.split(",")),
                threshold=args.threshold, heldout_docs=args.heldout_docs, max_docs=args.max_docs,
                min_context=args.min_context, continuation_tokens=args.continuation_tokens,
                max_context=args.max_context, top_k=args.top_k, docs_per_chunk=args.docs_per_chunk,
                batch_tokens=args.batch_tokens, head_chunk=args.head_chunk, max_record_bytes=args.max_record_bytes,
                max_bad_fraction=args.max_bad_fraction, seed=args.seed, dtype=args.dtype, device=device,
                split_proxy=args.split_proxy)
    finally:
        cleanup()


if __name__ == "__main__":
    main()
