"""Evaluation (Section 4 of the paper): next-token accuracy by difficulty split in standard and reasoning
modes (Table 1, Table 8), the power-law fit of accuracy against training compute (Figure 5), and
reasoning-pattern shares (Table 9, Figure 6). `evaluate` is what the trainer's periodic evaluation calls."""
from rpt.eval.accuracy import evaluate, evaluate_split, format_accuracy_table
from rpt.eval.patterns import PATTERN_GROUPS, compute_pattern_shares, compute_relative_change, find_pattern_groups
from rpt.eval.scaling import PowerLawFit, fit_power_law, plot_scaling, read_points, read_points_from_run

__all__ = ["PATTERN_GROUPS", "PowerLawFit", "compute_pattern_shares", "compute_relative_change", "evaluate",
           "evaluate_split", "find_pattern_groups", "fit_power_law", "format_accuracy_table", "plot_scaling",
           "read_points", "read_points_from_run"]
