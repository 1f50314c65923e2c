"""Run under torchrun by tests/eval/test_accuracy.py, two checks in one launch (a launch costs ~15 s here):

1. `launch/evaluate.py accuracy` with the arguments after `--`, every rank its share;
2. standard-mode accuracy of the trainer's policy (rpt.fsdp.build_policy: FSDP2 on every decoder block, then
   the root), each rank evaluating its share through `next_token_logits`, which gathers the shards;
   rank 0 writes the metrics to OUT_JSON.

    torchrun --nproc_per_node=2 tests/eval/dist_eval_worker.py MODEL_DIR DATA_DIR OUT_JSON -- CLI_ARGS...
"""
import importlib.util
import json
import sys
from pathlib import Path

from rpt.dist import cleanup, init_distributed
from rpt.eval.accuracy import evaluate
from rpt.fsdp import build_policy
from rpt.model import load_tokenizer

model_dir, data_dir, out_path = sys.argv[1:4]
cli_args = sys.argv[sys.argv.index("--") + 1:]
rank, world_size, device = init_distributed()

cli_path = Path(__file__).resolve().parents[2] / "launch" / "evaluate.py"
spec = importlib.util.spec_from_file_location("evaluate_cli", cli_path)
cli = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cli)
cli.main(cli_args)

tokenizer = load_tokenizer(model_dir)
model = build_policy(model_dir, device=device)
# An odd number of samples leaves rank 1 one short: it must still run every forward (padding) or rank 0 hangs.
metrics = evaluate(model, tokenizer, None, data_dir, mode="standard", max_samples=23, batch_size=4)
assert model.training  # put back in train mode for the trainer
if rank == 0:
    Path(out_path).write_text(json.dumps({"world_size": world_size, "metrics": metrics}))
cleanup()
