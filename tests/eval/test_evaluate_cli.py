"""launch/evaluate.py accuracy on bad input: ranges named by flag, an empty split said to be empty (not
0.00), and a data dir made with another tokenizer refused before the model loads."""
import json
import shutil

import pytest

from tests.conftest import REPO
from tests.eval.test_accuracy import load_evaluate_cli


def accuracy_args(model_dir, data_dir, *extra):
    return ["accuracy", "--config", str(REPO / "launch/configs/tiny.yaml"), f"--model.path={model_dir}",
            f"--data.path={data_dir}", "--max-samples", "4", *extra]


@pytest.mark.parametrize("flag", ["--batch-size", "--num-samples", "--pass-k"])
def test_zero_counts_are_refused_naming_the_flag(flag, capsys):
    with pytest.raises(SystemExit):
        load_evaluate_cli().build_parser().parse_args(["accuracy", "--config", "c.yaml", flag, "0"])
    assert f"argument {flag}: must be >= 1, got 0" in capsys.readouterr().err


def test_empty_split_is_reported_not_scored(stories_dir, tiny_data_dir, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["thresholds"]["hard"] = 99.0  # no position has top-16 entropy above 99 nats: an empty split
    (data / "manifest.json").write_text(json.dumps(manifest))
    cli = load_evaluate_cli()
    cli.main(accuracy_args(stories_dir, data, "--splits", "easy", "hard", "--out", str(tmp_path / "out")))
    out = capsys.readouterr().out
    assert f"split 'hard' of {data} is empty" in out
    table_row = next(line for line in out.splitlines() if line.startswith(f"| {stories_dir.name}"))
    assert table_row.rstrip(" |").endswith("-")  # hard: no number, in particular not 0.00
    summary = json.loads((tmp_path / "out" / "accuracy.json").read_text())
    assert summary["empty_splits"] == ["hard"]
    assert sorted(summary["results"]["standard"]) == ["easy/num_samples", "easy/standard_acc"]
    with pytest.raises(SystemExit, match=r"every split asked for \(hard\) .* is empty"):
        cli.main(accuracy_args(stories_dir, data, "--splits", "hard"))


def test_data_of_another_tokenizer_is_refused_before_the_model_loads(tiny_qwen2_dir, tiny_data_dir, monkeypatch):
    import rpt.model

    def no_model_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the vocabulary check")

    monkeypatch.setattr(rpt.model, "load_model", no_model_load)
    with pytest.raises(SystemExit, match=r"data error: .*stories260K \(512 tokens.*prepare the data with the policy"):
        load_evaluate_cli().main(accuracy_args(tiny_qwen2_dir, tiny_data_dir))
