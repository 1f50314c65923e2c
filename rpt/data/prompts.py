"""Prompt templates for next-token reasoning (Appendix D, Table 10) and the prompt token ids a policy sees.

`TEMPLATES` holds the paper's seven templates v0-v6 as plain strings (edit them here); the context goes
where `{prompt_content}` stands. v0 is the one the paper trained with; v6 scored best at step 0 (Table 8).
"raw" is the context alone, for tiny models that cannot follow instructions (README "Quick start").

Source: every template follows Table 10 of the authors' English paper (arXiv 2506.08007v1, Appendix D).
A Chinese rendering of the paper prints v2's second example as "\\boxed{ = }", like the other templates;
the English original has "\\boxed{ +=}" in v2 only, and v2 keeps it: the authors' text, not the rendering.

Reading of Table 10 (the paper prints the templates in a table that loses line breaks):
- Wording, spacing inside the example boxes ("\\boxed{ para}"), the doubled backslash of "\\\\boxed{}" in
  v1 and v2, and "+=" in v2's example are kept as printed in the English paper.
- "### Context" is followed by a blank line and paragraphs are separated by blank lines, as v4 shows
  ("### Context \\n \\n ```").
- The "\\n" printed inside v4's few-shot examples are newlines, including the answer of its third example,
  the single token ":\\n".
- Triple backticks (```) fence the context in v1-v6; v0 places it bare after "### Context".
"""
PLACEHOLDER = "{prompt_content}"
THINK_OPEN = "<think>\n"

_NOTE = r"(note: the token may begin with a space, e.g., \boxed{ para} or \boxed{ =}; do not use \text{})."

TEMPLATES = {
    "v0": r"Complete the given text under '### Context' by predicting the next token, and wrap it in '\boxed{}'. "
          r"Please reason step by step to find the most probable next token as the final answer, and enclose it in "
          r"\boxed{} " + _NOTE + "\n\n### Context\n\n{prompt_content}",
    "v1": r"Complete the given text under ### Context by predicting the next token, and wrap it in \\boxed{}. "
          r"Please reason step by step to find the most probable next token as the final prediction, and enclose "
          r"it in \boxed{} " + _NOTE + "\n\n### Context\n\n```{prompt_content}```.",
    "v2": "You are a helpful assistant, good at predicting the next token for a given context.\n\n"
          r"Now, please complete the given text under ### Context by predicting the next token, and wrap it in "
          r"\\boxed{}. Please reason step by step to find the most probable next token, and enclose it in "
          r"\boxed{} (note: the token may begin with a space, e.g., \boxed{ para} or \boxed{ +=}; do not use "
          r"\text{})." "\n\n### Context\n\n```{prompt_content}```.",
    "v3": r"Complete the given text under ### Context by predicting the next token, list multiple potential tokens "
          r"and select the most probable one as the final answer. Wrap your final answer in \boxed{} " + _NOTE
          + "\n\n### Context\n\n```{prompt_content}```",
    "v4": r"Complete the given text under ### Context by predicting the next token, and wrap it in \boxed{}. "
          r"Please reason step by step to find the most probable next token as the final answer, and enclose it in "
          r"\boxed{}." "\n\nSome examples:\n\n"
          "### Context\n\n```...(some omitted)...Matching calculations with 1990 valid combinations indicates the "
          r"minimum value of \( b \) that fits all pre-requisites and restrictions for triangle formation and "
          "symmetry generates the efficient outcome:\n\n\\[\n\\boxed{1991^2}\n\\]\n\nIn```\n\n"
          r"The next token is \boxed{ this}" "\n\n"
          r"### Context" "\n\n" r"```...Thus $2^{A}=\left(2^{a}\right)^{2}\left(2^{3}\right)=```" "\n\n"
          r"The next token is \boxed{9}" "\n\n"
          "### Context\n\n```..., numerical exploration shows```\n\n"
          "The next token is \\boxed{:\n}\n\n"
          "Now, the context is:\n\n### Context\n\n```{prompt_content}```.",
    "v5": r"Complete the given text under ### Context by predicting the next token, and wrap it in \boxed{}. "
          r"Please reason step by step to find the most probable next token as the final answer, and enclose it in "
          r"\boxed{} " + _NOTE + "\n\n### Context\n\n```{prompt_content}```.",
    "v6": r"Complete the given text wrapped in ``` and ``` by predicting the next token, list multiple potential "
          r"tokens and select the most probable one as the final prediction. Wrap your final prediction in "
          r"\boxed{} " + _NOTE + "\n\nThe context is: ```{prompt_content}```, now please predict the next token.",
    "raw": PLACEHOLDER,
}


def fill_template(template: str, context: str) -> str:
    """The template's text with the context in place of {prompt_content} (the context is inserted verbatim,
    even if it contains braces or the placeholder itself)."""
    before, after = TEMPLATES[template].split(PLACEHOLDER)
    return before + context + after


def special_prefix_ids(tokenizer) -> list[int]:
    """The ids the tokenizer puts in front of any text it encodes (a BOS, or nothing)."""
    probe = tokenizer.encode("a", add_special_tokens=False)
    with_specials = tokenizer.encode("a")
    for start in range(len(with_specials) - len(probe) + 1):
        if with_specials[start:start + len(probe)] == probe:
            return with_specials[:start]
    raise ValueError(f"cannot locate the text inside {with_specials}: unexpected tokenizer behaviour")


def chat_prompt_ids(tokenizer, user_text: str, think_prefill: bool = True) -> list[int]:
    """`user_text` as the user turn of the tokenizer's chat template, generation prompt added, the assistant
    turn opened with "<think>\\n" iff think_prefill (added or removed, whatever the template's revision does)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no chat template: use chat=False "
                         "(template 'raw' gives the context alone, for base models such as stories260K)")
    text = tokenizer.apply_chat_template([{"role": "user", "content": user_text}], tokenize=False,
                                         add_generation_prompt=True)
    text = text.removesuffix(THINK_OPEN) + (THINK_OPEN if think_prefill else "")
    return tokenizer.encode(text, add_special_tokens=False)  # the chat template spells out its BOS


def build_prompt_ids(tokenizer, context_ids: list[int], template: str = "v0", chat: bool = True,
                     think_prefill: bool = True, response_prefill: str = "") -> list[int]:
    """The token ids the policy is prompted with for one context.

    template "raw" with chat=False: the context ids themselves, exactly, after the tokenizer's special
    prefix (BOS), as the proxy scored them. Otherwise the decoded context fills the template; with chat=True
    it becomes the user turn of the tokenizer's chat template (generation prompt added) and the assistant
    turn opens with "<think>\\n" iff think_prefill (added or removed, whatever the template's revision does;
    ignored when chat=False). Last come the tokens of response_prefill, e.g. "</think>\\n\\\\boxed{", so that a
    model that cannot follow the format writes only the answer."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown template '{template}' (expected one of {sorted(TEMPLATES)})")
    if template == "raw" and not chat:
        ids = special_prefix_ids(tokenizer) + [int(i) for i in context_ids]
    else:
        text = fill_template(template, tokenizer.decode(context_ids, clean_up_tokenization_spaces=False))
        if chat:
            ids = chat_prompt_ids(tokenizer, text, think_prefill)
        else:
            ids = special_prefix_ids(tokenizer) + tokenizer.encode(text, add_special_tokens=False)
    return ids + tokenizer.encode(response_prefill, add_special_tokens=False) if response_prefill else ids
