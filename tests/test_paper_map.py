"""The paper-to-code map (docs/paper_map.md) cannot drift from the code: its Table 5 rows hold the paper's
values and equal the config defaults, every row with a literal value and one config field equals that
default, and every `rpt.module.name` it cites imports."""
import ast
import dataclasses
import importlib
import re

from tests.conftest import REPO

from rpt.config import Config

# Appendix B, Table 5 of the paper, as printed (the independent reference the map is checked against)
PAPER_TABLE_5 = {"Actor gradient clip": 0.2, "Batch size": 256, "PPO mini batch size": 256, "Rollout number": 8,
                 "Learning rate": 1e-6, "Adam β": (0.9, 0.999), "Weight decay": 0.01,
                 "Sampling temperature": 0.8, "Max prompt length": 4096, "Max response length": 8192,
                 "Entropy loss coefficient": 0.0}
CONFIG_FIELD = re.compile(r"^(" + "|".join(f.name for f in dataclasses.fields(Config)) + r")\.(\w+)$")


def read_map_rows() -> list[list[str]]:
    """The cells of every body row of the table under '## The paper, item by item'."""
    text = (REPO / "docs" / "paper_map.md").read_text()
    section = text.split("\n## The paper, item by item\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| paper | value | code |"), rows[0]
    # a "|" inside a cell is written "\|"
    return [[cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows[2:]]


def code_names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def config_default(dotted: str):
    section, key = CONFIG_FIELD.match(dotted).groups()
    return getattr(getattr(Config(), section), key)


def test_table_5_rows_are_the_paper_values_and_the_config_defaults():
    rows = {row[0].removeprefix("Table 5: "): row for row in read_map_rows() if row[0].startswith("Table 5: ")}
    assert sorted(rows) == sorted(PAPER_TABLE_5)
    for name, (_, value, code, _) in rows.items():
        literal = ast.literal_eval(code_names(value)[0])
        fields = [n for n in code_names(code) if CONFIG_FIELD.match(n)]
        assert len(fields) == 1, f"Table 5 row {name!r} must name one config field, found {fields}"
        assert literal == PAPER_TABLE_5[name], f"the map misquotes Table 5's {name!r}"
        assert config_default(fields[0]) == literal, f"{fields[0]} default differs from Table 5's {name!r}"


def test_every_literal_row_equals_its_config_default():
    checked = 0
    for paper, value, code, _ in read_map_rows():
        fields = [n for n in code_names(code) if CONFIG_FIELD.match(n)]
        values = code_names(value)
        if len(fields) != 1 or len(values) != 1:
            continue
        assert config_default(fields[0]) == ast.literal_eval(values[0]), paper
        checked += 1
    assert checked >= len(PAPER_TABLE_5) + 3  # Table 5 and Section 3.3's KL, steps and dynamic-sampling start


def test_every_config_field_and_code_name_in_the_map_exists():
    names = [name for row in read_map_rows() for cell in row[2:] for name in code_names(cell)]
    heads = [re.split(r"[: ]", name)[0] for name in names]  # `reward.kind: dense` names reward.kind
    fields = [head for head in heads if CONFIG_FIELD.match(head)]
    objects = [name for name in names if name.startswith("rpt.")]
    assert len(objects) >= 30 and len(fields) >= 20
    for field in fields:
        section, key = CONFIG_FIELD.match(field).groups()
        assert hasattr(getattr(Config(), section), key), f"the map names {field}, which rpt/config.py lacks"
    for name in objects:
        parts = name.split(".")
        for split in range(len(parts) - 1, 0, -1):  # the longest importable module prefix, then attributes
            try:
                target = importlib.import_module(".".join(parts[:split]))
            except ModuleNotFoundError:
                continue
            for attribute in parts[split:]:
                assert hasattr(target, attribute), f"the map names {name}: {attribute!r} not found"
                target = getattr(target, attribute)
            break
        else:
            raise AssertionError(f"the map names {name}, whose module does not import")
