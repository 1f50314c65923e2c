"""Pattern counting (Table 9) against hand-labelled responses, including words that must not match."""
import json

import pytest

from rpt.eval.patterns import (PATTERN_GROUPS, compute_pattern_shares, compute_relative_change, find_pattern_groups,
                               format_pattern_table, read_responses)

NONE = dict.fromkeys(PATTERN_GROUPS, False)


@pytest.mark.parametrize("text, expected_groups", [
    # one keyword of each group, in varied case and punctuation
    ("Alternatively, the next word is 'the'.", {"transition"}),
    ("Let me THINK   DIFFERENTLY about this.", {"transition"}),
    ("Wait, that is not right.", {"reflection"}),
    ("Looking back at the context...", {"reflection"}),
    ("my thought\nprocess was", {"reflection"}),  # any whitespace between the words of a keyword
    ("Let's break this down.", {"breakdown"}),
    ("It is probably a space.", {"hypothesis"}),
    ("something like 'x'", {"hypothesis"}),
    ("fractions, roots, etc. all appear", {"divergent_thinking"}),
    ("either a comma or a period", {"divergent_thinking"}),
    ("the options are", {"divergent_thinking"}),
    ("In conclusion: '='.", {"deduction"}),
    ("Finally! Consequently we pick it.", {"deduction"}),
    # several groups at once
    ("Wait, it is probably 'x'; alternatively 'y'. Finally, x.", {"reflection", "hypothesis", "transition",
                                                                  "deduction"}),
    # must NOT match: the keyword only inside a longer word, or an unlisted inflection
    ("neither of them", set()),  # "either" inside "neither"
    ("I awaited the answer while waiting", set()),  # "wait" inside "awaited", "waiting"
    ("one option only", set()),  # "options" is listed, "option" is not
    ("we concluded and summarized", set()),  # "conclude", "summarize" are listed, past tenses are not
    ("improbably finally_ish", set()),  # prefix "im", underscore is a word character
    ("etcetera", set()),  # "etc." needs its period
    ("breakdown of the problem", set()),  # "break down" is two words
    ("", set()),
])
def test_find_pattern_groups_hand_labelled(text, expected_groups):
    assert find_pattern_groups(text) == {**NONE, **dict.fromkeys(expected_groups, True)}


def test_shares_and_relative_change_by_hand():
    baseline = ["probably x", "wait", "nothing here", "neither"]  # hypothesis 1/4, reflection 1/4
    other = ["probably", "Probably not", "something like this", "wait, finally"]  # hypothesis 3/4, deduction 1/4
    base_shares, other_shares = compute_pattern_shares(baseline), compute_pattern_shares(other)
    assert base_shares["hypothesis"] == 0.25 and base_shares["reflection"] == 0.25
    assert other_shares["hypothesis"] == 0.75 and other_shares["deduction"] == 0.25
    change = compute_relative_change(base_shares, other_shares)
    assert change["hypothesis"] == pytest.approx(200.0)  # 0.25 -> 0.75
    assert change["reflection"] == pytest.approx(0.0)  # 0.25 -> 0.25
    assert change["deduction"] is None  # baseline 0: undefined
    table = format_pattern_table([base_shares, other_shares], ["r1", "rpt"])
    assert "+200.0%" in table and "n/a" in table and "75.0%" in table
    assert compute_pattern_shares([]) == dict.fromkeys(PATTERN_GROUPS, 0.0)


def test_read_responses_flattens_lists_and_names_bad_lines(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"response": "a"}) + "\n\n" + json.dumps({"response": ["b", "c"]}) + "\n")
    assert read_responses(path) == ["a", "b", "c"]
    path.write_text(json.dumps({"response": "a"}) + "\n" + json.dumps({"text": "b"}) + "\n")
    with pytest.raises(KeyError, match=r"r.jsonl:2 has no field 'response'"):
        read_responses(path)


def test_patterns_cli_compares_two_runs(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("evaluate_cli", Path(__file__).parents[2] / "launch" / "evaluate.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    # an eval run's reasoning_responses.jsonl: one "response" per line
    (tmp_path / "base.jsonl").write_text("".join(json.dumps({"response": text}) + "\n"
                                                 for text in ["probably", "wait", "x", "y"]))
    # the trainer's samples.jsonl: a list of G "responses" per line
    (tmp_path / "rpt.jsonl").write_text(json.dumps({"responses": ["probably", "Probably.", "neither", "wait"]}) + "\n")
    cli.main(["patterns", str(tmp_path / "base.jsonl"), str(tmp_path / "rpt.jsonl"), "--field", "response",
              "responses", "--names", "base", "rpt", "--out", str(tmp_path / "p.json")])
    printed = capsys.readouterr().out
    assert "base: 4 responses, rpt: 4 responses" in printed
    assert "hypothesis         | 25.0% | 50.0% | +100.0%" in printed
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["rpt"]["shares"]["hypothesis"] == 0.5
    assert report["relative_change_percent"]["hypothesis"] == pytest.approx(100.0)
    assert report["relative_change_percent"]["deduction"] is None
    with pytest.raises(KeyError, match="has no field 'response'"):  # one field for both files
        cli.main(["patterns", str(tmp_path / "base.jsonl"), str(tmp_path / "rpt.jsonl")])
