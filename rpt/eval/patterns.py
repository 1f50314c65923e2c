"""Reasoning-pattern statistics (Section 4.3 / Figure 6 of the paper, keywords of Table 9 in Appendix E).

For each of the six pattern groups, the share of responses that contain at least one of the group's
keywords. Two runs side by side give the relative change the paper quotes ("+161.8% hypothesis" for
RPT-14B next-token reasoning against R1-Distill-Qwen-14B problem solving).

Matching rule (the paper does not state one; this is ours):
- case-insensitive;
- whole words: a keyword matches only where it is not preceded or followed by a word character (letter,
  digit or underscore, Unicode-aware). So "either" does not match inside "neither", "wait" does not match
  "await" or "waiting", "options" does not match "option", and "conclude" does not match "concluded";
  inflections count only when Table 9 lists them ("conclusion" and "conclude" are both listed);
- punctuation inside a keyword is literal: "etc." needs its period;
- the words of a multi-word keyword may be separated by any run of whitespace ("break\\ndown" matches
  "break down").

Deviation: the paper counts 200 sampled responses per model; here any number of responses is counted,
whatever jsonl they come from (the trainer's sample dumps or `launch/evaluate.py accuracy` output).
"""
import json
import re
from pathlib import Path

# Table 9 of the paper, verbatim.
PATTERN_GROUPS: dict[str, tuple[str, ...]] = {
    "transition": ("alternatively", "think differently"),
    "reflection": ("wait", "initial answer", "original answer", "looking back", "thought process"),
    "breakdown": ("break down", "break this down"),
    "hypothesis": ("probably", "something like"),
    "divergent_thinking": (
        "etc.", "or something", "either", "sometimes it refers", "otherwise", "exploring", "options",
    ),
    "deduction": ("summarize", "conclusion", "conclude", "finally", "logically", "consequently"),
}


def compile_keyword(keyword: str) -> re.Pattern:
    """Regex for one keyword under the module's matching rule (whole words, any whitespace between words)."""
    words = [re.escape(word) for word in keyword.split()]
    return re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", re.IGNORECASE)


_GROUP_REGEXES: dict[str, list[re.Pattern]] = {
    group: [compile_keyword(keyword) for keyword in keywords] for group, keywords in PATTERN_GROUPS.items()
}


def find_pattern_groups(text: str) -> dict[str, bool]:
    """Which pattern groups occur in one response: {group: True if any of its keywords matches}."""
    return {group: any(regex.search(text) for regex in regexes) for group, regexes in _GROUP_REGEXES.items()}


def compute_pattern_shares(responses: list[str]) -> dict[str, float]:
    """Share of responses (0..1) containing each pattern group; an empty list gives all zeros."""
    counts = dict.fromkeys(PATTERN_GROUPS, 0)
    for text in responses:
        for group, present in find_pattern_groups(text).items():
            counts[group] += present
    return {group: count / len(responses) if responses else 0.0 for group, count in counts.items()}


def compute_relative_change(baseline: dict[str, float], other: dict[str, float]) -> dict[str, float | None]:
    """(other - baseline) / baseline per group, in percent; None where the baseline share is 0."""
    return {
        group: 100.0 * (other[group] - baseline[group]) / baseline[group] if baseline[group] > 0 else None
        for group in baseline
    }


def read_responses(path: str | Path, field: str = "response") -> list[str]:
    """The `field` of every line of a jsonl file (a list of texts counts as that many responses); a line
    without the field is an error naming the line."""
    responses = []
    with open(path) as lines:
        for line_number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            if field not in record:
                raise KeyError(f"{path}:{line_number} has no field {field!r} (fields: {sorted(record)})")
            value = record[field]
            responses += value if isinstance(value, list) else [value]
    return responses


def format_pattern_table(shares: list[dict[str, float]], names: list[str]) -> str:
    """Groups as rows, one column of shares (%) per run; with two runs a relative-change column is added."""
    header = ["pattern group"] + names + (["relative change"] if len(shares) == 2 else [])
    rows = []
    for group in PATTERN_GROUPS:
        row = [group] + [f"{100 * run[group]:.1f}%" for run in shares]
        if len(shares) == 2:
            change = compute_relative_change(shares[0], shares[1])[group]
            row.append("n/a" if change is None else f"{change:+.1f}%")
        rows.append(row)
    widths = [max(len(line[i]) for line in [header] + rows) for i in range(len(header))]
    lines = [" | ".join(cell.ljust(width) for cell, width in zip(line, widths)) for line in [header] + rows]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)
