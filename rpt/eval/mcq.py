r"""Zero-shot multiple choice (Section 4.2 of the paper, Table 3; per category, Appendix C Tables 6-7), in
the paper's two modes:

- standard: one forward pass per question over the standard prompt (data/mcq.py, ending in "Answer:"),
  batched and left-padded; the prediction is the option letter (" A", " B", ... one token each) with the
  highest next-token logit among the question's options. Works on a plain HF causal LM and on the trainer's
  FSDP policy (its `next_token_logits`, which gathers the shards).
- reasoning: n responses sampled through the rollout engine (temperature 0.8, up to 12,288 tokens in the
  paper) from the chat prompt; the letter is read from the last `\boxed{}` after `</think>`, or else from
  a last line "Answer: X" after `</think>`; accuracy is the mean over the n samples.

Multi-rank as rpt/eval/accuracy.py: every rank takes a contiguous, equally long block of the questions
(padded with copies that do not count), and per-category sums of correct answers and counts are
all-reduced, so the numbers do not depend on the number of ranks.

Deviations from the paper: the paper gives neither prompts nor answer extraction; see data/mcq.py. A
response without `</think>` scores 0 in reasoning mode (the letter is read from the final answer only).
"""
import json
import re
from pathlib import Path

import numpy as np
import torch

from rpt.data.prompts import LETTERS, PromptSettings, standard_prompt_ids
from rpt.data.sample import ChoiceQuestion
from rpt.dist import all_reduce
from rpt.eval.accuracy import data_parallel_layout, format_mode_table, last_token_logits, shard_evenly
from rpt.reward.extract import THINK_END, extract_prediction
from rpt.reward.tokens import first_token_id, token_bytes
from rpt.rollout.engine import Engine, SamplingParams
from rpt.rollout.groups import generate_groups

MODES = ("standard", "reasoning")
# a box holding a letter, optionally in \text{}/\mathrm{}/parentheses, optionally followed by its option text
_BOXED_LETTER = re.compile(r"^\s*(?:\\(?:text|textbf|mathrm|mathbf)\{)?\s*\(?([A-J])\)?\s*\}?(?:$|[\s.:,)])")
_ANSWER_LINE = re.compile(r"^\s*\**\s*Answer\s*:?\s*\**\s*\(?([A-J])\)?(?:$|[\s.:,)*])")


def option_letter_ids(tokenizer) -> list[int]:
    """The token ids of " A" .. " J" (what follows "Answer:"); a ValueError if one is not a single token."""
    ids = [first_token_id(tokenizer, " " + letter) for letter in LETTERS]
    for letter, token_id in zip(LETTERS, ids):
        if token_bytes(tokenizer, [token_id])[0] != f" {letter}".encode():
            raise ValueError(f"' {letter}' is not one token of {tokenizer.name_or_path!r}: standard-mode multiple "
                             "choice needs single-token option letters")
    return ids


def predict_standard(model, tokenizer, questions: list[ChoiceQuestion], batch_size: int = 8) -> list[int]:
    """Standard mode: the predicted option index of each question (argmax over its options' letters)."""
    letter_ids = torch.tensor(option_letter_ids(tokenizer))  # (10,)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    predictions = []
    for start in range(0, len(questions), batch_size):
        batch = questions[start:start + batch_size]
        logits = last_token_logits(model, [standard_prompt_ids(tokenizer, q) for q in batch], pad_id)  # (B, V)
        letter_logits = logits[:, letter_ids].float().cpu()  # (B, 10)
        num_options = torch.tensor([len(q.options) for q in batch])  # (B,)
        letter_logits[torch.arange(len(LETTERS))[None, :] >= num_options[:, None]] = -float("inf")
        predictions += letter_logits.argmax(dim=-1).tolist()
    return predictions


def extract_choice(response: str, num_options: int) -> int | None:
    r"""The option index a reasoning response chose: the letter in the last `\boxed{}` after the last
    `</think>`, else the last "Answer: X" line after it; None if neither names one of the options."""
    think_end = response.rfind(THINK_END)
    if think_end < 0:
        return None
    boxed = extract_prediction(response)
    match = _BOXED_LETTER.match(boxed) if boxed is not None else None
    if match is None:
        lines = response[think_end + len(THINK_END):].splitlines()
        match = next((m for m in map(_ANSWER_LINE.match, reversed(lines)) if m), None)
    if match is None:
        return None
    index = LETTERS.index(match.group(1))
    return index if index < num_options else None


def evaluate_choice(model, tokenizer, engine: Engine | None, questions: list[ChoiceQuestion], mode: str, *,
                    batch_size: int = 8, num_samples: int = 1, temperature: float = 0.8, top_p: float = 1.0,
                    max_tokens: int = 12288, seed: int = 0, chat: bool = True, think_prefill: bool = True
                    ) -> tuple[dict, list[dict]]:
    """Accuracy overall and per category, reduced over ranks (every rank must call it with the same
    questions) -> ({"overall": acc, "num_questions": n, "categories": {name: {"acc", "num_questions"}}},
    this rank's records: what each counted question predicted)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    shard, num_shards, counted = data_parallel_layout(engine, mode)
    indices, counts = shard_evenly(len(questions), shard, num_shards)
    share = [questions[i] for i in indices]
    if mode == "standard":
        was_training = model.training
        model.eval()
        try:
            predictions = predict_standard(model, tokenizer, share, batch_size)
        finally:
            model.train(was_training)
        scores = [float(p == q.answer_index) for p, q in zip(predictions, share)]
        records = [{"question_id": q.question_id, "predicted": LETTERS[p], "answer": LETTERS[q.answer_index]}
                   for q, p, c in zip(share, predictions, counts) if c]
    else:
        # the training's path (rpt.rollout.groups): prompt, per-question seed from (seed, step 0, question id),
        # response text; padding copies are generated too, so ranks stay in lockstep
        params = SamplingParams(n=num_samples, temperature=temperature, top_p=top_p, max_tokens=max_tokens)
        prompt = PromptSettings(chat=chat, think_prefill=think_prefill)
        scores, records = [], []
        for start in range(0, len(share), batch_size):
            groups = generate_groups(engine, tokenizer, share[start:start + batch_size], prompt, params, "raw", seed)
            for group, is_counted in zip(groups, counts[start:start + batch_size]):
                question = group.sample
                chosen = [extract_choice(r, len(question.options)) for r in group.responses]
                scores.append(float(np.mean([c == question.answer_index for c in chosen])))
                if is_counted:
                    records.append({"question_id": question.question_id, "answer": LETTERS[question.answer_index],
                                    "predicted": [LETTERS[c] if c is not None else None for c in chosen],
                                    "responses": group.responses})
    categories = sorted({q.category for q in questions})
    sums = torch.zeros(2, len(categories), dtype=torch.float64)  # (correct, count) per category
    for question, score, is_counted in zip(share, scores, counts):
        if is_counted and counted:
            sums[:, categories.index(question.category)] += torch.tensor([score, 1.0], dtype=torch.float64)
    sums = all_reduce(sums)
    correct, totals = sums[0], sums[1]
    result = {"overall": float(correct.sum() / totals.sum()), "num_questions": int(totals.sum()),
              "categories": {name: {"acc": float(correct[i] / totals[i]), "num_questions": int(totals[i])}
                             for i, name in enumerate(categories)}}
    return result, records


def format_choice_table(rows: list[tuple[str, str, dict[str, float]]], benchmarks: list[str]) -> str:
    """Table 3's layout (or Appendix C's, with categories as the columns): rows (mode, model name,
    {column: accuracy in 0..1}) grouped under a line per mode, accuracy in percent with one decimal."""
    return format_mode_table(rows, benchmarks, benchmarks, {"standard": "Standard next-token prediction mode",
                                                           "reasoning": "Reasoning mode"}, 1)


def write_choice_results(path: str | Path, benchmark: str, mode: str, model_name: str, result: dict,
                         records: list[dict]) -> None:
    """One json file: the reduced result and the predictions (rank 0's share, or all when gathered)."""
    Path(path).write_text(json.dumps({"benchmark": benchmark, "mode": mode, "model": model_name, **result,
                                      "records": records}, indent=1))
