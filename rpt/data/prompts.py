"""Every prompt a policy sees, in one home: the next-token reasoning templates (Appendix D, Table 10), the R1
math prompt of RLVR (Section 4.1), the multiple-choice prompts (Table 3), and `item_prompt`, which turns any
batch item (a Sample, a Question, a ChoiceQuestion) into prompt token ids.

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
from dataclasses import dataclass

from rpt.data.sample import ChoiceQuestion, Question, Sample

PLACEHOLDER = "{prompt_content}"
THINK_OPEN = "<think>\n"
MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
LETTERS = "ABCDEFGHIJ"  # multiple-choice option letters
ANSWER_CUE = "Answer:"
REASONING_INSTRUCTION = ("Answer the following multiple choice question. Think step by step, then put the letter "
                         "of the correct option within \\boxed{}.")

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


@dataclass(frozen=True)
class PromptSettings:
    """How a context becomes a prompt (the data.* fields of rpt.config)."""
    template: str = "v0"  # v0..v6 (Table 10) or "raw"
    chat: bool = True
    think_prefill: bool = True
    response_prefill: str = ""
    max_prompt_tokens: int = 4096


def math_user_message(problem: str) -> str:
    """The user turn of the R1 math prompt."""
    problem = problem.rstrip()
    return problem if problem.endswith(MATH_INSTRUCTION) else f"{problem}\n{MATH_INSTRUCTION}"


def build_question_prompt_ids(tokenizer, problem: str, chat: bool = True, think_prefill: bool = True) -> list[int]:
    """Token ids of the R1 math prompt for one problem: with chat=True the user turn of the tokenizer's chat
    template, generation prompt added, the assistant turn opened with "<think>\\n" iff think_prefill; with
    chat=False (base models without a chat template) the tokenizer's BOS and the text."""
    text = math_user_message(problem)
    if not chat:
        return special_prefix_ids(tokenizer) + tokenizer.encode(text, add_special_tokens=False)
    return chat_prompt_ids(tokenizer, text, think_prefill)


def format_question(question: ChoiceQuestion) -> str:
    """Question and lettered options, one per line."""
    options = "\n".join(f"{LETTERS[i]}. {option}" for i, option in enumerate(question.options))
    return f"Question: {question.question.strip()}\nOptions:\n{options}"


def standard_prompt_ids(tokenizer, question: ChoiceQuestion) -> list[int]:
    """BOS + question + options + "Answer:"; the next token is the prediction."""
    text = f"{format_question(question)}\n{ANSWER_CUE}"
    return special_prefix_ids(tokenizer) + tokenizer.encode(text, add_special_tokens=False)


def reasoning_prompt_ids(tokenizer, question: ChoiceQuestion, chat: bool = True, think_prefill: bool = True
                         ) -> list[int]:
    """The reasoning-mode prompt: instruction + question + options in the chat template's user turn, the
    assistant turn opened with "<think>\\n" iff think_prefill; chat=False: BOS + the same text."""
    text = f"{REASONING_INSTRUCTION}\n\n{format_question(question)}"
    if not chat:
        return special_prefix_ids(tokenizer) + tokenizer.encode(text, add_special_tokens=False)
    return chat_prompt_ids(tokenizer, text, think_prefill)


def make_prompt(tokenizer, context_ids: list[int], settings: PromptSettings) -> list[int]:
    """Template + chat template + prefill, with the context cut from the left to fit max_prompt_tokens."""
    context = context_ids
    while True:
        ids = build_prompt_ids(tokenizer, context, template=settings.template, chat=settings.chat,
                               think_prefill=settings.think_prefill, response_prefill=settings.response_prefill)
        excess = len(ids) - settings.max_prompt_tokens
        if excess <= 0:
            return ids
        if excess >= len(context):
            raise ValueError(f"the template alone is {len(ids) - len(context)} tokens, over "
                             f"data.max_prompt_tokens={settings.max_prompt_tokens}")
        context = context[excess:]


def item_prompt(tokenizer, item: Sample | Question | ChoiceQuestion, settings: PromptSettings) -> list[int]:
    """A sample's prompt (make_prompt), a question's R1 math prompt (never cut: questions that do not fit
    are dropped when loaded, rpt.data.questions.drop_long_questions) or a multiple-choice question's
    reasoning-mode prompt."""
    if isinstance(item, Question):
        return build_question_prompt_ids(tokenizer, item.problem, settings.chat, settings.think_prefill)
    if isinstance(item, ChoiceQuestion):
        return reasoning_prompt_ids(tokenizer, item, settings.chat, settings.think_prefill)
    return make_prompt(tokenizer, item.context_ids, settings)
