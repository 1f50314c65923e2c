"""Scaling fit (Figure 5): known parameters recovered from synthetic points, low R^2 on noise, a real PNG."""
import json

import numpy as np
import pytest

from rpt.eval.scaling import (PowerLawFit, compute_r_squared, fit_power_law, plot_scaling, read_points,
                              read_points_from_run)

# The paper's eval steps, converted to compute at a made-up 6e17 FLOPs per step.
STEPS = np.array([100, 200, 400, 800, 1000, 1200], dtype=np.float64)
COMPUTE = STEPS * 6e17


@pytest.mark.parametrize("p_star, a, alpha", [(0.5, 3e4, 0.25), (0.3, 2.0e2, 0.12), (0.45, 1e9, 0.5)])
def test_fit_recovers_known_parameters(p_star, a, alpha):
    accuracy = p_star - a * COMPUTE ** (-alpha)
    fit = fit_power_law(COMPUTE, accuracy)
    assert fit.r_squared > 0.999999
    assert fit.p_star == pytest.approx(p_star, rel=1e-4)
    assert fit.alpha == pytest.approx(alpha, rel=1e-4)
    assert fit.a == pytest.approx(a, rel=1e-3)
    np.testing.assert_allclose(fit.predict(COMPUTE), accuracy, atol=1e-8)


def test_fit_with_small_noise_keeps_high_r_squared():
    rng = np.random.default_rng(0)
    accuracy = 0.5 - 3e4 * COMPUTE ** (-0.25) + rng.normal(0, 0.002, len(COMPUTE))
    fit = fit_power_law(COMPUTE, accuracy)
    assert fit.r_squared > 0.99
    assert fit.p_star == pytest.approx(0.5, abs=0.05)


def test_fit_on_noise_reports_low_r_squared():
    rng = np.random.default_rng(1)
    compute = np.geomspace(1e18, 1e21, 30)
    accuracy = rng.normal(0.3, 0.05, 30)  # no trend at all
    assert fit_power_law(compute, accuracy).r_squared < 0.3


def test_r_squared_by_hand():
    observed = np.array([1.0, 2.0, 3.0])
    assert compute_r_squared(observed, np.array([1.0, 2.0, 4.0])) == pytest.approx(1 - 1 / 2)  # SS_res 1, SS_tot 2
    assert compute_r_squared(observed, np.full(3, 2.0)) == 0.0


def test_fit_rejects_step_zero_and_too_few_points():
    with pytest.raises(ValueError, match="positive"):
        fit_power_law(np.array([0.0, 1.0, 2.0]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match=">= 3 points"):
        fit_power_law(np.array([1.0, 2.0]), np.array([0.1, 0.2]))


def test_plot_is_a_real_png(tmp_path):
    fit = PowerLawFit(p_star=0.5, a=3e4, alpha=0.25, r_squared=1.0, num_points=6)
    accuracy = fit.predict(COMPUTE)
    path = tmp_path / "scaling.png"
    plot_scaling({"easy": (COMPUTE, accuracy, fit), "hard": (COMPUTE, accuracy - 0.1, fit)}, path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000  # two panels with points, curves and labels, not an empty canvas
    import matplotlib.image

    pixels = matplotlib.image.imread(path)  # (H, W, 4)
    assert pixels.shape[1] > pixels.shape[0]  # two panels side by side
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 50  # drawn, not blank


def test_read_points_csv_and_json_agree(tmp_path):
    rows = [("easy", 2e20, 0.4), ("easy", 1e20, 0.3), ("hard", 1e20, 0.1)]
    (tmp_path / "p.csv").write_text("split,compute,accuracy\n" + "".join(f"{s},{c},{a}\n" for s, c, a in rows))
    (tmp_path / "p.json").write_text(json.dumps([{"split": s, "compute": c, "accuracy": a} for s, c, a in rows]))
    for name in ("p.csv", "p.json"):
        points = read_points(tmp_path / name)
        np.testing.assert_array_equal(points["easy"][0], [1e20, 2e20])  # sorted by compute
        np.testing.assert_array_equal(points["easy"][1], [0.3, 0.4])
        np.testing.assert_array_equal(points["hard"][1], [0.1])


@pytest.mark.parametrize("events_subdir", ["", "tensorboard"])  # event files given directly, or a trainer run dir
def test_read_points_from_tensorboard_run(tmp_path, events_subdir):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / events_subdir))
    for step in range(1, 7):
        writer.add_scalar("perf/train_compute", 10.0 * step, step)  # cumulative compute, every step
    for step in (0, 2, 4, 6):  # eval before training and every 2 steps
        writer.add_scalar("eval/easy/standard_acc", 0.1 * step, step)
        writer.add_scalar("eval/easy/reasoning_pass@8", 0.9, step)  # not an accuracy series: ignored
    writer.close()
    by_compute = read_points_from_run(tmp_path)
    assert list(by_compute) == ["easy/standard_acc"]
    np.testing.assert_allclose(by_compute["easy/standard_acc"][0], [0.0, 20.0, 40.0, 60.0])  # step 0: no compute
    np.testing.assert_allclose(by_compute["easy/standard_acc"][1], [0.0, 0.2, 0.4, 0.6], atol=1e-6)
    by_step = read_points_from_run(tmp_path, x_axis="step")
    np.testing.assert_allclose(by_step["easy/standard_acc"][0], [0, 2, 4, 6])


def test_fit_cli_from_points_and_from_run(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    from torch.utils.tensorboard import SummaryWriter

    spec = importlib.util.spec_from_file_location("evaluate_cli", Path(__file__).parents[2] / "launch" / "evaluate.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)

    accuracy = 0.5 - 3e4 * COMPUTE ** (-0.25)
    rows = "".join(f"easy,{c},{a}\n" for c, a in zip(COMPUTE, accuracy))
    (tmp_path / "points.csv").write_text("split,compute,accuracy\n" + rows + "hard,0,0.1\nhard,1e20,0.2\n")
    cli.main(["fit", "--points", str(tmp_path / "points.csv"), "--out", str(tmp_path / "fit.png"),
              "--json", str(tmp_path / "fit.json")])
    printed = capsys.readouterr().out
    assert "hard: dropped 1 point(s) at x <= 0" in printed and "hard: only 1 point(s)" in printed
    report = json.loads((tmp_path / "fit.json").read_text())
    assert list(report) == ["easy"]
    assert report["easy"]["p_star"] == pytest.approx(0.5, rel=1e-4) and report["easy"]["r_squared"] > 0.999
    assert (tmp_path / "fit.png").stat().st_size > 10_000

    writer = SummaryWriter(str(tmp_path / "run"))
    for step, (compute, value) in enumerate(zip(COMPUTE, accuracy), start=1):
        writer.add_scalar("perf/train_compute", compute, step)
        writer.add_scalar("eval/hard/standard_acc", value, step)
    writer.close()
    cli.main(["fit", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "run.png"),
              "--json", str(tmp_path / "run.json")])
    report = json.loads((tmp_path / "run.json").read_text())
    # TensorBoard stores float32 scalars: parameters agree to float32 precision.
    assert report["hard/standard_acc"]["alpha"] == pytest.approx(0.25, rel=1e-2)
    assert report["hard/standard_acc"]["r_squared"] > 0.9999
