"""rpt.report and launch/plot.py: the PNG holds the six panels, each plotting exactly the values of
metrics.jsonl, and the end-of-run summary compares the right steps."""
import json
import subprocess
import sys

import pytest
from PIL import Image

from rpt.report import EVAL_TITLE, PANELS, plot_metrics, plot_run, read_metrics, summarize
from tests.conftest import REPO


def record(step, reward, **extra):
    return {"step": step, "rollout/reward_mean": reward, "rollout/kept_group_frac": 1.0 if step < 4 else 0.5,
            "rollout/response_len_mean": 1.0 + step, "train/mismatch_mean": 1e-6 * step,
            "train/grad_norm": 10.0 - step, **extra}


@pytest.fixture
def run_dir(tmp_path):
    lines = [record(0, 0.0, **{"eval/easy/reasoning_acc": 0.30, "eval/hard/reasoning_acc": 0.10}),
             record(1, 0.5), record(2, 0.9),  # step 2 is repeated below: a resumed run's record wins
             record(3, 0.4), record(4, 0.6), record(5, 0.7),
             record(6, 0.8, **{"eval/easy/reasoning_acc": 0.40, "eval/hard/reasoning_acc": 0.20})]
    text = "\n".join(json.dumps(r) for r in lines[:3]) + "\n" + '{"step": 3, "rollout/rew\n'  # killed mid-write
    text += "\n".join(json.dumps(r) for r in [record(2, 0.2)] + lines[3:]) + "\n"
    (tmp_path / "metrics.jsonl").write_text(text)
    return tmp_path


def test_read_metrics_keeps_the_last_record_of_a_step_and_counts_bad_lines(run_dir):
    records, bad = read_metrics(run_dir / "metrics.jsonl")
    assert bad == 1
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4, 5, 6]
    assert records[2]["rollout/reward_mean"] == 0.2


def test_panels_plot_the_logged_values(run_dir):
    records, _ = read_metrics(run_dir / "metrics.jsonl")
    figure = plot_metrics(records)
    assert [ax.get_title() for ax in figure.axes] == [name for name, _, _ in PANELS] + [EVAL_TITLE]
    reward_ax = figure.axes[0]
    per_step, running = reward_ax.lines
    assert list(per_step.get_xdata()) == [0, 1, 2, 3, 4, 5, 6]
    assert list(per_step.get_ydata()) == [0.0, 0.5, 0.2, 0.4, 0.6, 0.7, 0.8]
    # mean of 5 from step 4: (0+.5+.2+.4+.6)/5, (.5+.2+.4+.6+.7)/5, (.2+.4+.6+.7+.8)/5
    assert list(running.get_xdata()) == [4, 5, 6]
    assert running.get_ydata() == pytest.approx([0.34, 0.48, 0.54])
    grad_norm_ax = figure.axes[4]
    assert list(grad_norm_ax.lines[0].get_ydata()) == [10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0]
    eval_lines = {line.get_label(): line for line in figure.axes[5].lines}
    assert sorted(eval_lines) == ["easy/reasoning", "hard/reasoning"]
    assert list(eval_lines["easy/reasoning"].get_xdata()) == [0, 6]
    assert list(eval_lines["easy/reasoning"].get_ydata()) == [0.30, 0.40]
    assert list(eval_lines["hard/reasoning"].get_ydata()) == [0.10, 0.20]


def test_a_panel_without_data_says_so():
    figure = plot_metrics([{"step": 1, "rollout/reward_mean": 0.5}])
    eval_ax = figure.axes[5]
    assert not eval_ax.lines and [t.get_text() for t in eval_ax.texts] == ["not logged"]


def test_cli_writes_the_png(run_dir, tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "launch/plot.py"), str(run_dir)], capture_output=True,
                            text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    png = run_dir / "metrics.png"
    assert f"wrote {png}" in result.stdout and "skipped 1 unreadable lines" in result.stdout
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (15 * 80, 8 * 80)
    assert plot_run(run_dir, tmp_path / "other.png") == tmp_path / "other.png"


def test_missing_run_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.jsonl not found"):
        plot_run(tmp_path / "nowhere")


def test_summary_compares_first_and_last_steps(run_dir):
    records, _ = read_metrics(run_dir / "metrics.jsonl")
    # rewards by step 0..6: 0, .5, .2, .4, .6, .7, .8; first 5 mean 0.34, last 5 (steps 2-6) mean 0.54
    assert summarize(records) == [
        "sampled reward 0.340 (steps 0-4) -> 0.540 (steps 2-6): +0.200",
        "eval easy/reasoning 0.300 (step 0) -> 0.400 (step 6): +0.100",
        "eval hard/reasoning 0.100 (step 0) -> 0.200 (step 6): +0.100",
    ]
    assert summarize(records, window=2)[0] == "sampled reward 0.250 (steps 0-1) -> 0.750 (steps 5-6): +0.500"
