"""`launch/evaluate.py math` and `mcq` in one process on the tiny Qwen2: the command writes what the library
functions compute for the same settings (their rank invariance: test_downstream_ranks.py)."""
import importlib.util
import json

import pytest

from rpt.data.mcq import load_choice_questions
from rpt.data.questions import load_questions
from rpt.eval.math import evaluate_math
from rpt.eval.mcq import evaluate_choice
from rpt.model import load_model, load_tokenizer
from rpt.rollout.hf_engine import HFEngine
from tests.conftest import REPO
from tests.mcq_files import write_mmlu_pro


@pytest.fixture(scope="module")
def cli():
    spec = importlib.util.spec_from_file_location("evaluate_cli", REPO / "launch" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_math_and_mcq_commands(cli, tiny_qwen2_dir, assets_dir, tmp_path, capsys):
    math_file = assets_dir / "math500" / "test.jsonl"
    common = ["--config", str(REPO / "launch/configs/rlvr_tiny.yaml"), f"--model.path={tiny_qwen2_dir}",
              "--data.chat=true", "--data.think_prefill=true", "--train.seed=3"]
    cli.main(["math", *common, "--max-questions", "3", "--num-samples", "2", "--pass-k", "1", "2",
              "--max-tokens", "5", "--out", str(tmp_path / "math")])
    written = json.loads((tmp_path / "math" / "math.json").read_text())
    tokenizer = load_tokenizer(tiny_qwen2_dir)
    engine = HFEngine(load_model(tiny_qwen2_dir), tokenizer.eos_token_id, tokenizer.pad_token_id)
    questions, _ = load_questions(math_file, max_questions=3)
    result, records = evaluate_math(tokenizer, engine, questions, num_samples=2, pass_k=(1, 2), temperature=0.6,
                                    max_tokens=5, seed=3)
    assert {k: written[k] for k in result} == result and written["records"] == records
    assert "accuracy 0.0 (mean over 2 samples of 3 questions) | pass@1 0.0 | pass@2 0.0" in capsys.readouterr().out

    mcq_file = write_mmlu_pro(tmp_path / "mmlu.jsonl")
    cli.main(["mcq", *common, "--file", str(mcq_file), "--schema", "mmlu_pro", "--mode", "standard",
              "--out", str(tmp_path / "mcq")])
    written = json.loads((tmp_path / "mcq" / "mmlu_pro_standard.json").read_text())
    choice_questions, _ = load_choice_questions(mcq_file, "mmlu_pro")
    result, records = evaluate_choice(load_model(tiny_qwen2_dir), tokenizer, None, choice_questions, "standard")
    assert written["overall"] == result["overall"] and written["categories"] == result["categories"]
    assert written["records"] == records
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if "Overall" in line)  # Appendix C's layout: categories, then Overall
    assert [cell.strip() for cell in header.split("|")[2:-1]] == ["biology", "math", "other", "physics", "Overall"]
    assert any(line.startswith("| Standard next-token prediction mode") for line in lines)
