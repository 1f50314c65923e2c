"""Rank invariance of the downstream evaluators (issue 15): multiple choice in both modes and math accuracy
on 2 ranks (FSDP2 policy for standard mode, per-rank HF engines) against 1 process, on the tiny Qwen2 with
the hand-written MMLU-Pro file and MATH-500's first questions. The tiny model's accuracy is ~0 and
meaningless; its numbers, predictions and sampled responses must be identical."""
import json
from pathlib import Path

from tests.conftest import run_torchrun
from tests.eval import dist_downstream_worker
from tests.mcq_files import write_mmlu_pro

WORKER = Path(dist_downstream_worker.__file__)


def test_two_ranks_agree_with_one_process(tiny_qwen2_dir, assets_dir, tmp_path):
    mcq_file, math_file = write_mmlu_pro(tmp_path / "mmlu.jsonl"), assets_dir / "math500" / "test.jsonl"
    results, records = dist_downstream_worker.evaluate_all(tiny_qwen2_dir, mcq_file, math_file)
    assert results["math"]["num_questions"] == 5 and results["standard"]["num_questions"] == 5
    assert len({r for record in records["math"] for r in record["responses"]}) > 1  # they were sampled
    run_torchrun(WORKER, [str(tiny_qwen2_dir), str(mcq_file), str(math_file), str(tmp_path)])
    distributed = json.loads((tmp_path / "results.json").read_text())
    assert distributed.pop("world_size") == 2
    assert distributed == results  # sums of 0, 1/n and pass@k terms: exact
    ranks = [json.loads((tmp_path / f"records{r}.json").read_text()) for r in range(2)]
    for key in ("standard", "reasoning", "math"):  # 3 + 2 questions, the padding copy not counted
        assert ranks[0][key] + ranks[1][key] == records[key], key
