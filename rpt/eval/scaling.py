"""Scaling of next-token accuracy with training compute (Section 4 of the paper, Figure 5).

Fits P(C) = P* - A * C^(-alpha) to (compute, accuracy) points by least squares and scores the fit with the
coefficient of determination R^2, as the paper does, one fit per validation split.

How the fit is made robust: training compute is ~1e18-1e22 FLOPs, where C^(-alpha) underflows the scale
of A. So C is divided by the smallest compute C_ref first and the fit is made on c = C / C_ref:
P = P* - a * c^(-alpha), then A = a * C_ref^alpha is reported in the caller's units. For a fixed alpha the
model is linear in (P*, a), so a grid over alpha solved by linear least squares gives a global starting
point that scipy's `least_squares` then refines.

Training compute comes from the trainer's `perf/train_compute` scalar (6 x params x trained tokens +
2 x params x generated tokens, cumulative); points with C <= 0 (step 0) are excluded by the caller.

Deviation from the paper: it does not say how it converts its steps (100 ... 1,200) to training compute;
the count above is ours.
"""
import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares


@dataclass(frozen=True)
class PowerLawFit:
    p_star: float  # asymptotic accuracy P*
    a: float  # A, in the units of the compute given to the fit
    alpha: float
    r_squared: float
    num_points: int

    def predict(self, compute: np.ndarray) -> np.ndarray:
        """P(C) = P* - A * C^(-alpha)."""
        return self.p_star - self.a * np.asarray(compute, dtype=np.float64) ** (-self.alpha)


def compute_r_squared(observed: np.ndarray, predicted: np.ndarray) -> float:
    """1 - SS_res / SS_tot; 0 when the observations are all equal (nothing to explain)."""
    ss_res = float(np.sum((observed - predicted) ** 2))
    ss_tot = float(np.sum((observed - observed.mean()) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0


def fit_power_law(compute: np.ndarray, accuracy: np.ndarray) -> PowerLawFit:
    """Least-squares fit of P(C) = P* - A * C^(-alpha).

    compute: (P,) positive training compute; accuracy: (P,) accuracy at that compute. Needs P >= 3 points
    with at least two distinct compute values (three parameters).
    """
    compute = np.asarray(compute, dtype=np.float64)  # (P,)
    accuracy = np.asarray(accuracy, dtype=np.float64)  # (P,)
    if compute.shape != accuracy.shape or compute.ndim != 1:
        raise ValueError(f"compute {compute.shape} and accuracy {accuracy.shape} must be equal-length vectors")
    if len(compute) < 3 or len(np.unique(compute)) < 2:
        raise ValueError(f"a 3-parameter fit needs >= 3 points over >= 2 compute values, got {len(compute)}")
    if np.any(compute <= 0):
        raise ValueError("compute must be positive (drop the step-0 point: C^(-alpha) is infinite there)")
    compute_ref = compute.min()
    scaled = compute / compute_ref  # (P,) >= 1

    def solve_linear(alpha: float) -> tuple[np.ndarray, float]:
        # For fixed alpha, accuracy = P* * 1 + (-a) * c^(-alpha): ordinary least squares in (P*, -a).
        design = np.stack([np.ones_like(scaled), scaled ** (-alpha)], axis=1)  # (P, 2)
        coefficients, *_ = np.linalg.lstsq(design, accuracy, rcond=None)
        residual = float(np.sum((design @ coefficients - accuracy) ** 2))
        return np.array([coefficients[0], -coefficients[1]]), residual

    alpha_grid = np.logspace(-3, 1, 200)
    residuals = [solve_linear(alpha)[1] for alpha in alpha_grid]
    alpha_start = float(alpha_grid[int(np.argmin(residuals))])
    (p_star_start, a_start), _ = solve_linear(alpha_start)

    def residual_fn(params: np.ndarray) -> np.ndarray:
        p_star, a, log_alpha = params
        return p_star - a * scaled ** (-np.exp(log_alpha)) - accuracy  # (P,)

    # alpha is optimized as log(alpha): positive by construction; bounded so that a fit to noise cannot
    # run off to exponents where c^(-alpha) underflows.
    infinity = np.inf
    result = least_squares(residual_fn, x0=[p_star_start, a_start, np.log(alpha_start)],
                           bounds=([-infinity, -infinity, np.log(1e-4)], [infinity, infinity, np.log(20.0)]),
                           ftol=1e-12, xtol=1e-12, gtol=1e-12)
    p_star, a_scaled, log_alpha = result.x
    alpha = float(np.exp(log_alpha))
    predicted = p_star - a_scaled * scaled ** (-alpha)  # (P,)
    return PowerLawFit(
        p_star=float(p_star),
        a=float(a_scaled * compute_ref**alpha),
        alpha=alpha,
        r_squared=compute_r_squared(accuracy, predicted),
        num_points=len(compute),
    )


def read_points(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(compute, accuracy) points per split from a csv (header split,compute,accuracy) or a json list of
    {"split", "compute", "accuracy"} objects -> {split: (compute (P,), accuracy (P,))} sorted by compute."""
    path = Path(path)
    if path.suffix == ".json":
        records = json.loads(path.read_text())
    else:
        with open(path, newline="") as file:
            records = list(csv.DictReader(file))
    points: dict[str, list[tuple[float, float]]] = {}
    for record in records:
        points.setdefault(str(record["split"]), []).append((float(record["compute"]), float(record["accuracy"])))
    return {split: _as_sorted_arrays(pairs) for split, pairs in points.items()}


def read_points_from_run(run_dir: str | Path, x_axis: str = "compute") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(x, accuracy) points per eval series from a run directory's TensorBoard event files (the trainer
    writes them to `<train.output_dir>/tensorboard`; a directory holding the event files works too).

    Every scalar tag under `eval/` ending in `_acc` is one series, named by the tag without `eval/`
    (e.g. "easy/standard_acc"). x_axis="compute" pairs each eval step with the latest `perf/train_compute`
    logged at or before it; x_axis="step" uses the step itself.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = Path(run_dir)
    events_dir = run_dir / "tensorboard" if (run_dir / "tensorboard").is_dir() else run_dir
    accumulator = EventAccumulator(str(events_dir), size_guidance={"scalars": 0})  # 0: keep every event
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    eval_tags = [tag for tag in tags if tag.startswith("eval/") and tag.endswith("_acc")]
    if not eval_tags:
        raise ValueError(f"no eval/*_acc scalars in {run_dir} (tags: {sorted(tags)})")
    if x_axis == "compute":
        if "perf/train_compute" not in tags:
            raise ValueError(f"no perf/train_compute scalar in {run_dir}; use x_axis='step'")
        compute_events = accumulator.Scalars("perf/train_compute")
        compute_steps = np.array([event.step for event in compute_events])  # (E,)
        compute_values = np.array([event.value for event in compute_events])  # (E,)
        order = np.argsort(compute_steps, kind="stable")
        compute_steps, compute_values = compute_steps[order], compute_values[order]
    elif x_axis != "step":
        raise ValueError(f"x_axis must be 'compute' or 'step', got {x_axis!r}")
    series = {}
    for tag in eval_tags:
        pairs = []
        for event in accumulator.Scalars(tag):
            if x_axis == "step":
                pairs.append((float(event.step), event.value))
                continue
            latest = np.searchsorted(compute_steps, event.step, side="right") - 1
            compute = compute_values[latest] if latest >= 0 else 0.0  # before any training step: no compute
            pairs.append((float(compute), event.value))
        series[tag.removeprefix("eval/")] = _as_sorted_arrays(pairs)
    return series


def _as_sorted_arrays(pairs: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    pairs = sorted(pairs)
    return np.array([x for x, _ in pairs], dtype=np.float64), np.array([y for _, y in pairs], dtype=np.float64)


def plot_scaling(series: dict[str, tuple[np.ndarray, np.ndarray, PowerLawFit]], path: str | Path,
                 x_label: str = "training compute (FLOPs)") -> None:
    """One panel per series (Figure 5's layout): the points, the fitted curve, its formula and R^2; log x."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    figure, axes = plt.subplots(1, len(series), figsize=(4.5 * len(series), 3.8), squeeze=False)
    for axis, (name, (x, accuracy, fit)) in zip(axes[0], series.items()):
        curve_x = np.geomspace(x.min(), x.max(), 200)
        axis.scatter(x, accuracy, color="tab:blue", zorder=3, label="eval")
        axis.plot(curve_x, fit.predict(curve_x), color="tab:red",
                  label=f"$P^*$={fit.p_star:.4g}, $\\alpha$={fit.alpha:.3g}\n$R^2$={fit.r_squared:.4f}")
        axis.set_xscale("log")
        axis.xaxis.set_minor_formatter(NullFormatter())  # minor labels on a short log axis overlap
        axis.set_title(name)
        axis.set_xlabel(x_label)
        axis.set_ylabel("next-token accuracy")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
