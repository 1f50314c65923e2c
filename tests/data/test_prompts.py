import copy

import pytest

from rpt.data.prompts import PLACEHOLDER, TEMPLATES, build_prompt_ids, fill_template

BOS, USER, ASSISTANT, THINK, END_THINK, NEWLINE = 151646, 151644, 151645, 151648, 151649, 198
CONTEXT = "Let $n$ be a positive integer such that $n^2 + 1$ is divisible by 5. Then the remainder of $n$ is"


def test_templates_hold_the_context_slot_once():
    assert sorted(TEMPLATES) == ["raw", "v0", "v1", "v2", "v3", "v4", "v5", "v6"]
    for template in TEMPLATES.values():
        assert template.count(PLACEHOLDER) == 1
    assert TEMPLATES["v0"].startswith("Complete the given text under '### Context' by predicting the next token")
    assert TEMPLATES["v0"].endswith("do not use \\text{}).\n\n### Context\n\n{prompt_content}")
    assert "\\boxed{ para} or \\boxed{ =}" in TEMPLATES["v6"]
    assert fill_template("v6", "a {prompt_content} {}").count("a {prompt_content} {}") == 1


@pytest.mark.parametrize("template", ["v0", "v1", "v2", "v3", "v4", "v5", "v6", "raw"])
def test_every_template_renders_with_the_r1_tokenizer(r1_tokenizer, template):
    context_ids = r1_tokenizer.encode(CONTEXT, add_special_tokens=False)
    ids = build_prompt_ids(r1_tokenizer, context_ids, template, chat=True, think_prefill=True)
    assert ids[:2] == [BOS, USER] and ids[-3:] == [ASSISTANT, THINK, NEWLINE]
    assert ids.count(BOS) == 1
    # the whole context is there, its end right before the assistant turn when the template ends with it
    text = r1_tokenizer.decode(ids)
    assert CONTEXT in text
    # token count: template alone + context + chat wrapping (the template's text ends before the context
    # starts with a letter after a newline or backticks; v0/raw keep the context's own ids at the end)
    template_only = r1_tokenizer.encode(fill_template(template, ""), add_special_tokens=False)
    if template in ("v0", "raw"):
        assert ids == [BOS, USER] + template_only + context_ids + [ASSISTANT, THINK, NEWLINE]
    else:
        instruction = TEMPLATES[template].split(PLACEHOLDER)[0]
        assert r1_tokenizer.decode(ids[2:]).startswith(instruction + CONTEXT)
        assert abs(len(ids) - (5 + len(template_only) + len(context_ids))) <= 2  # merges at the backticks


def test_think_prefill_is_explicit(r1_tokenizer):
    context_ids = r1_tokenizer.encode(CONTEXT, add_special_tokens=False)
    without = build_prompt_ids(r1_tokenizer, context_ids, "v0", chat=True, think_prefill=False)
    with_think = build_prompt_ids(r1_tokenizer, context_ids, "v0", chat=True, think_prefill=True)
    assert without[-1] == ASSISTANT and with_think == without + [THINK, NEWLINE]
    # a newer chat-template revision that opens the assistant turn with "<think>\n" itself
    newer = copy.deepcopy(r1_tokenizer)
    newer.chat_template = r1_tokenizer.chat_template.replace("{{'<｜Assistant｜>'}}{% endif %}",
                                                             "{{'<｜Assistant｜><think>\\n'}}{% endif %}")
    assert newer.chat_template != r1_tokenizer.chat_template
    assert build_prompt_ids(newer, context_ids, "v0", chat=True, think_prefill=True) == with_think
    assert build_prompt_ids(newer, context_ids, "v0", chat=True, think_prefill=False) == without


def test_response_prefill_is_appended_as_its_own_tokens(r1_tokenizer):
    context_ids = r1_tokenizer.encode(CONTEXT, add_special_tokens=False)
    base = build_prompt_ids(r1_tokenizer, context_ids, "v0", think_prefill=True)
    ids = build_prompt_ids(r1_tokenizer, context_ids, "v0", think_prefill=True, response_prefill="</think>\n\\boxed{")
    assert ids[:len(base)] == base
    assert r1_tokenizer.convert_ids_to_tokens(ids[len(base):]) == ["</think>", "Ċ", "\\", "boxed", "{"]
    assert ids[len(base)] == END_THINK


def test_raw_without_chat_is_the_context_ids_after_bos(stories_tokenizer, r1_tokenizer):
    context_ids = stories_tokenizer.encode("Once upon a time, there was", add_special_tokens=False)
    assert build_prompt_ids(stories_tokenizer, context_ids, "raw", chat=False) == [1] + context_ids
    # exact even where re-tokenizing the decoded text would differ (" a" + "b" split unusually)
    odd = [r1_tokenizer.encode(text, add_special_tokens=False)[0] for text in (" a", "b")]
    assert build_prompt_ids(r1_tokenizer, odd, "raw", chat=False) == [BOS] + odd
    prefilled = build_prompt_ids(stories_tokenizer, context_ids, "raw", chat=False, response_prefill=" Lily")
    assert prefilled == [1] + context_ids + stories_tokenizer.encode(" Lily", add_special_tokens=False)


def test_template_without_chat_on_a_base_model(stories_tokenizer):
    context_ids = stories_tokenizer.encode("Once upon a time", add_special_tokens=False)
    ids = build_prompt_ids(stories_tokenizer, context_ids, "v6", chat=False)
    assert ids[0] == 1
    assert "Once upon a time" in stories_tokenizer.decode(ids) and "now please predict" in stories_tokenizer.decode(ids)


def test_chat_without_a_chat_template_is_a_clear_error(stories_tokenizer):
    with pytest.raises(ValueError, match="no chat template"):
        build_prompt_ids(stories_tokenizer, [403, 407], "raw", chat=True)
    with pytest.raises(ValueError, match="unknown template"):
        build_prompt_ids(stories_tokenizer, [403, 407], "v7", chat=False)
