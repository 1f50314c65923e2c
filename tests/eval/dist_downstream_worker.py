"""Run under torchrun by tests/eval/test_downstream_ranks.py: the downstream evaluators on every rank's
share, in one launch (a launch costs ~15 s here). Multiple choice in standard mode on the trainer's FSDP2
policy (rpt.fsdp.build_policy, `next_token_logits`), in reasoning mode and math accuracy on a per-rank HF
engine. Each rank writes its records, rank 0 the reduced results. `evaluate_all` is also what the test runs
in one process.

    torchrun --nproc_per_node=2 tests/eval/dist_downstream_worker.py MODEL_DIR MCQ_FILE MATH_FILE OUT_DIR
"""
import json
import sys
from pathlib import Path

from rpt.data.mcq import load_choice_questions
from rpt.data.questions import load_questions
from rpt.dist import cleanup, get_rank, init_distributed
from rpt.eval.math import evaluate_math
from rpt.eval.mcq import evaluate_choice
from rpt.fsdp import build_policy
from rpt.model import load_model, load_tokenizer
from rpt.rollout.hf_engine import HFEngine


def evaluate_all(model_dir, mcq_file, math_file, policy=None) -> tuple[dict, dict]:
    """-> (reduced results, this rank's records) of the three evaluations."""
    tokenizer = load_tokenizer(model_dir)
    choice_questions, _ = load_choice_questions(mcq_file, "mmlu_pro")
    math_questions, _ = load_questions(math_file, max_questions=5)
    policy = policy if policy is not None else load_model(model_dir)
    engine = HFEngine(load_model(model_dir), tokenizer.eos_token_id, tokenizer.pad_token_id)
    results, records = {}, {}
    results["standard"], records["standard"] = evaluate_choice(policy, tokenizer, None, choice_questions, "standard",
                                                               batch_size=2)
    results["reasoning"], records["reasoning"] = evaluate_choice(
        None, tokenizer, engine, choice_questions, "reasoning", batch_size=2, num_samples=2, max_tokens=6, seed=5,
        chat=False)
    results["math"], records["math"] = evaluate_math(tokenizer, engine, math_questions, num_samples=3, pass_k=(1, 2),
                                                     max_tokens=8, seed=7, batch_size=2)
    return results, records


if __name__ == "__main__":
    model_dir, mcq_file, math_file, out_dir = sys.argv[1:5]
    rank, world_size, device = init_distributed()
    policy = build_policy(model_dir, device=device)
    results, records = evaluate_all(model_dir, mcq_file, math_file, policy)
    assert policy.training  # put back in train mode for the trainer
    Path(out_dir, f"records{rank}.json").write_text(json.dumps(records))
    if get_rank() == 0:
        Path(out_dir, "results.json").write_text(json.dumps({"world_size": world_size, **results}))
    cleanup()
