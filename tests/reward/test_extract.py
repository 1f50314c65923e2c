r"""extract_prediction: hand cases for every rule in rpt/reward/extract.py, agreement with a
character-by-character reference scanner on generated adversarial strings, and the measured share of real
OmniMATH tokens that survive being written in a box."""
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from rpt.reward import extract_prediction


def reference_extract(text: str) -> str | None:
    """The rules written out naively: every position checked, one character at a time."""
    think_ends = [i for i in range(len(text)) if text.startswith("</think>", i)]
    if not think_ends:
        return None
    after = think_ends[-1] + len("</think>")
    boxes = [i for i in range(after, len(text)) if text.startswith("\\boxed{", i)]
    if not boxes:
        return None
    start = boxes[-1] + len("\\boxed{")
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
    return None


def test_plain_box_after_think():
    assert extract_prediction("<think>\nthe next token is a space and a word\n</think>\n\n\\boxed{ para}") == " para"


def test_whitespace_inside_the_box_is_kept():
    assert extract_prediction("</think>\\boxed{ = }") == " = "
    assert extract_prediction("</think>\\boxed{\n}") == "\n"


def test_nested_braces_balanced():
    assert extract_prediction(r"</think> so \boxed{\frac{a}{b}} is it") == r"\frac{a}{b}"
    assert extract_prediction(r"</think>\boxed{x^{2_{3}}}") == "x^{2_{3}}"


def test_last_box_after_last_think_wins():
    response = r"\boxed{A}</think>\boxed{B} then \boxed{C}</think> final \boxed{D} and \boxed{E}"
    assert extract_prediction(response) == "E"


def test_box_only_before_last_think_gives_none():
    assert extract_prediction(r"</think>\boxed{A}</think> no box here") is None


def test_no_think_gives_none():
    assert extract_prediction(r"\boxed{ the}") is None
    assert extract_prediction("") is None


def test_last_box_unclosed_gives_none_even_after_a_closed_one():
    assert extract_prediction(r"</think>\boxed{A} and \boxed{B") is None
    assert extract_prediction(r"</think>\boxed{\frac{a}{b}") is None


def test_backslash_is_an_ordinary_character():
    assert extract_prediction(r"</think>\boxed{ \}") == " \\"  # the token ' \' before a LaTeX command
    assert extract_prediction(r"</think>\boxed{=\}") == "=\\"
    assert extract_prediction(r"</think>\boxed{\}}") == "\\"  # the first `}` closes; a stray one follows
    assert extract_prediction(r"</think>\boxed{\{}") is None  # `{` opens whatever precedes it
    assert extract_prediction(r"</think>\boxed{\\}") == "\\\\"


def test_nested_box_yields_the_inner_one():
    assert extract_prediction(r"</think>\boxed{a \boxed{b}}") == "b"


def test_empty_box_is_an_empty_prediction():
    assert extract_prediction(r"</think>\boxed{}") == ""


FRAGMENTS = ["</think>", "\\boxed{", "{", "}", "\\", "\\{", "\\}", "\\\\", "=\\", "a", " ", "\n", "日", "</think",
             "boxed{", "\\frac{", "🦜"]


@settings(max_examples=2500, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=24))
def test_agrees_with_reference_scanner(fragments):
    text = "".join(fragments)
    assert extract_prediction(text) == reference_extract(text)


ANY_CHARACTER = st.characters(exclude_categories=()) | st.characters(categories=["Cs"])  # lone surrogates too


@settings(max_examples=500, deadline=None)
@given(st.text(ANY_CHARACTER, max_size=200))
def test_never_raises_on_any_text(text):
    assert extract_prediction(text) == reference_extract(text)


def test_most_real_tokens_survive_a_box(qwen2_tokenizer, omni_math_path):
    """The reason backslashes are ordinary characters: tokens such as ' \\' and '=\\' come back exactly."""
    solutions = [json.loads(line)["solution"] for line in open(omni_math_path)][:100]
    tokens = [qwen2_tokenizer.decode([token_id]) for solution in solutions
              for token_id in qwen2_tokenizer.encode(solution, add_special_tokens=False)]
    survived = sum(extract_prediction("</think>\\boxed{" + token + "}") == token for token in tokens)
    assert " \\" in tokens and "=\\" in tokens
    assert survived / len(tokens) > 0.88  # 92.2% here; 83.7% if \{, \} were read as TeX escapes
