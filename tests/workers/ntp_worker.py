"""Continual-NTP steps on stories260K: `run` is called in-process by tests/test_ntp.py (1 process) and, as a
script, under torchrun (2 ranks, FSDP2); both walk the same global batches.

    torchrun --nproc_per_node=2 tests/workers/ntp_worker.py MODEL_DIR DATA_DIR OUT_JSON STEPS
"""
import json
import sys
from pathlib import Path

import torch

from rpt.data.prompts import special_prefix_ids
from rpt.data.windows import WindowStream
from rpt.dist import cleanup, get_rank, get_world_size, init_distributed
from rpt.eval.accuracy import shard_evenly
from rpt.fsdp import build_policy
from rpt.model import load_tokenizer
from rpt.ntp import ntp_eval_loss, ntp_update

WINDOW_TOKENS, GLOBAL_BATCH, LR = 32, 4, 1e-3
PACKING = {"micro_batch_tokens": 70, "packed_rows": False, "chunk_size": 16}  # 2+ micro-batches per rank


def run(model_dir, data_dir, steps: int, device=torch.device("cpu")) -> dict:
    rank, world_size = get_rank(), get_world_size()
    prefix = special_prefix_ids(load_tokenizer(model_dir))
    policy = build_policy(str(model_dir), device=device)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=LR, weight_decay=0.0)
    stream = WindowStream(data_dir, WINDOW_TOKENS, prefix, rank=rank, world_size=world_size, seed=1)
    heldout = WindowStream(data_dir, WINDOW_TOKENS, prefix, doc_split="heldout", shuffle=False)
    indices, counts = shard_evenly(heldout.num_windows, rank, world_size)
    heldout_windows = [heldout.window(i) for i, counted in zip(indices, counts) if counted]

    def evaluate() -> float:
        return ntp_eval_loss(policy, heldout_windows, device=device, **PACKING)

    history = {"heldout_loss": [evaluate()], "train_loss": [], "grad_norm": []}
    for _ in range(steps):
        metrics = ntp_update(policy, optimizer, stream.next_batch(GLOBAL_BATCH // world_size), grad_clip=1.0,
                             device=device, world_size=world_size, **PACKING)
        history["train_loss"].append(metrics["loss"])
        history["grad_norm"].append(metrics["grad_norm"])
    history["heldout_loss"].append(evaluate())
    history["stream_position"] = stream.indices.position
    return history


if __name__ == "__main__":
    model_dir, data_dir, out_path, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    rank, world_size, device = init_distributed()
    history = run(model_dir, data_dir, steps, device)
    if rank == 0:
        Path(out_path).write_text(json.dumps({"world_size": world_size, **history}))
    cleanup()
