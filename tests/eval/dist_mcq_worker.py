"""Run under torchrun by tests/eval/test_mcq.py: both multiple-choice modes on every rank's share, in one
launch. Standard mode runs on the trainer's FSDP2 policy (rpt.fsdp.build_policy, `next_token_logits`);
reasoning mode on a per-rank HF engine. Each rank writes its records, rank 0 the reduced results.

    torchrun --nproc_per_node=2 tests/eval/dist_mcq_worker.py MODEL_DIR MCQ_FILE OUT_DIR
"""
import json
import sys
from pathlib import Path

from rpt.data.mcq import load_choice_questions
from rpt.dist import cleanup, init_distributed
from rpt.eval.mcq import evaluate_choice
from rpt.fsdp import build_policy
from rpt.model import load_model, load_tokenizer
from rpt.rollout.hf_engine import HFEngine

model_dir, mcq_file, out_dir = sys.argv[1:4]
rank, world_size, device = init_distributed()
tokenizer = load_tokenizer(model_dir)
questions, _ = load_choice_questions(mcq_file, "mmlu_pro")
policy = build_policy(model_dir, device=device)
standard, standard_records = evaluate_choice(policy, tokenizer, None, questions, "standard", batch_size=2)
assert policy.training  # put back in train mode
engine = HFEngine(load_model(model_dir), tokenizer.eos_token_id, tokenizer.pad_token_id)
reasoning, reasoning_records = evaluate_choice(None, tokenizer, engine, questions, "reasoning", batch_size=2,
                                               num_samples=2, max_tokens=6, seed=5, chat=False)
Path(out_dir, f"records{rank}.json").write_text(json.dumps({"standard": standard_records,
                                                            "reasoning": reasoning_records}))
if rank == 0:
    Path(out_dir, "results.json").write_text(json.dumps({"world_size": world_size, "standard": standard,
                                                         "reasoning": reasoning}))
cleanup()
