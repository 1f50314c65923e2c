"""Next-token prediction accuracy by difficulty split (Section 4 of the paper, Table 1; Random@1 / Pass@k of
Table 8), in two modes:

- standard: one forward pass over the raw context x_<t (no prompt template; the tokenizer's BOS first, as
  the data pipeline's proxy scored it), argmax at the last position, correct iff it equals x_t;
- reasoning: the prompt template (+ chat template) around the context, n responses sampled through the
  rollout engine, the prediction extracted and scored with the prefix-matching reward (Eq. 3). Random@1
  is the mean reward over all samples (the chance that one random sample is right, Table 8); Pass@k is the
  unbiased estimator of Chen et al. (2021) from n >= k samples.

Multi-rank: every rank takes a contiguous block of each split, padded to the same length with copies that do
not count, so every rank runs the same number of forward passes and generate calls (an FSDP model and
co-located engines need every rank in every collective). In reasoning mode the blocks follow the engine's
data-parallel rank (a vLLM tensor-parallel group shares one block and only its first rank counts it). The
sums of correct answers and the counts are all-reduced, so the numbers do not depend on the number of ranks.

Deviations from the paper: the paper evaluates 200 held-out samples; `max_samples` takes that many evenly
spaced over a split (ordered by document and position, so they spread over the documents), default all.
Scoring in reasoning mode always uses the prefix-matching reward, whatever reward the policy was trained
with (Table 1 reports accuracy, not the training reward).
"""
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from rpt.data.prompts import PromptSettings, build_prompt_ids
from rpt.data.sample import Sample
from rpt.data.samples_io import read_samples
from rpt.dist import all_gather_objects, all_reduce
from rpt.rollout.engine import Engine, SamplingParams
from rpt.rollout.groups import RewardSettings, generate_groups, score_groups

MODES = ("standard", "reasoning")


def shard_evenly(num_items: int, rank: int, world_size: int) -> tuple[list[int], list[bool]]:
    """This rank's contiguous block of `num_items` items, padded to ceil(num_items / world_size) with copies
    of item 0 that do not count -> (indices, counts). Equal lengths keep the ranks in lockstep."""
    block = math.ceil(num_items / world_size)
    share = list(range(min(rank * block, num_items), min((rank + 1) * block, num_items)))
    return share + [0] * (block - len(share)), [True] * len(share) + [False] * (block - len(share))


def select_evenly(samples: list[Sample], max_samples: int) -> list[Sample]:
    """max_samples samples evenly spaced over the list (all of them when max_samples <= 0 or >= len)."""
    if max_samples <= 0 or max_samples >= len(samples):
        return samples
    return [samples[i * len(samples) // max_samples] for i in range(max_samples)]


def compute_pass_at_k(num_correct: np.ndarray, num_samples: int, k: int) -> np.ndarray:
    """Unbiased pass@k per context from c correct among n samples (Chen et al., 2021):
    1 - C(n - c, k) / C(n, k). num_correct (S,) ints -> (S,) floats; k = 1 gives c / n (Random@1)."""
    if not 1 <= k <= num_samples:
        raise ValueError(f"pass@k needs 1 <= k <= n, got k={k}, n={num_samples}")
    num_correct = np.asarray(num_correct)
    return np.array([1.0 - math.comb(num_samples - int(c), k) / math.comb(num_samples, k) for c in num_correct])


@torch.no_grad()
def last_token_logits(model, contexts: list[list[int]], pad_id: int) -> torch.Tensor:
    """B contexts, left-padded into one batch -> (B, V) logits of the token after each, on the model's device.

    Left padding puts every context's last token in the last position; position ids count real tokens only,
    so padding changes nothing (any position embedding). Only the last position's logits are computed
    (`logits_to_keep=1` of an HF model, `next_token_logits` of the trainer's PolicyLogprobs): never
    (B, T, V) at once. Works on an FSDP2-wrapped model as long as every rank calls it alike."""
    device = next(model.parameters()).device
    length = max(len(context) for context in contexts)
    input_ids = torch.full((len(contexts), length), pad_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(contexts), length), dtype=torch.long)  # (B, T)
    for row, context in enumerate(contexts):
        input_ids[row, length - len(context):] = torch.tensor(context)
        attention_mask[row, length - len(context):] = 1
    position_ids = (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)  # (B, T)
    inputs = {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device),
              "position_ids": position_ids.to(device)}
    if hasattr(model, "next_token_logits"):  # the trainer's policy (rpt.policy.PolicyLogprobs)
        return model.next_token_logits(**inputs)  # (B, V)
    return model(**inputs, logits_to_keep=1, use_cache=False).logits[:, -1]  # (B, V)


def predict_next_tokens(model, contexts: list[list[int]], pad_id: int, batch_size: int = 16,
                        show_progress: bool = False) -> torch.Tensor:
    """Greedy next token after each context: S contexts -> (S,) token ids (on CPU). Contexts are sorted by
    length before batching, so a batch pads little (`last_token_logits`)."""
    if any(len(context) == 0 for context in contexts):
        raise ValueError("standard-mode accuracy needs a non-empty context for every sample")
    order = sorted(range(len(contexts)), key=lambda i: len(contexts[i]))
    predictions = torch.empty(len(contexts), dtype=torch.long)
    for start in tqdm(range(0, len(order), batch_size), desc="standard", disable=not show_progress, leave=False):
        batch = order[start:start + batch_size]
        logits = last_token_logits(model, [contexts[i] for i in batch], pad_id)  # (B, V)
        predictions[batch] = logits.argmax(dim=-1).cpu()  # (B,)
    return predictions


@dataclass
class SplitResult:
    """This rank's counts on one split, before the all-reduce."""
    num_samples: int = 0  # samples that count on this rank
    sums: dict[str, float] = field(default_factory=dict)  # metric -> sum over counted samples
    records: list[dict] = field(default_factory=list)  # one per counted sample: what was predicted


def evaluate_split(model, tokenizer, engine: Engine | None, samples: list[Sample], mode: str, *,
                   rank: int = 0, world_size: int = 1, batch_size: int = 16,
                   prompt: PromptSettings = PromptSettings(), sampling: SamplingParams = SamplingParams(n=1),
                   extraction: str = "boxed", pass_k: tuple[int, ...] = (), seed: int = 0, step: int = 0,
                   show_progress: bool = False) -> SplitResult:
    """This rank's share of one split in one mode -> SplitResult (not reduced across ranks).

    standard: needs `model`; sums "standard_acc". reasoning: needs `engine` (awake, with the policy's
    weights); goes through the training's own rollout path (rpt.rollout.groups: the same prompts, cut to
    prompt.max_prompt_tokens, the same per-sample seeds from (seed, step, document, position), the same
    response text), draws `sampling.n` responses per context and sums "reasoning_acc" (Random@1) and
    "reasoning_pass@k" for each k in `pass_k` (k <= sampling.n).
    """
    indices, counts = shard_evenly(len(samples), rank, world_size)
    share = [samples[i] for i in indices]
    result = SplitResult(num_samples=sum(counts))
    if mode == "standard":
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        # "raw" without chat: BOS + the context ids exactly (rpt/data/prompts.py), as the proxy scored them.
        inputs = [build_prompt_ids(tokenizer, s.context_ids, template="raw", chat=False) for s in share]
        predicted = predict_next_tokens(model, inputs, pad_id, batch_size, show_progress)  # (S,)
        target = torch.tensor([s.continuation_ids[0] for s in share])  # (S,)
        correct = (predicted == target).tolist()
        result.sums["standard_acc"] = float(sum(c for c, counted in zip(correct, counts) if counted))
        result.records = [
            {"doc_id": s.doc_id, "position": s.position, "target_id": s.continuation_ids[0],
             "predicted_id": int(p), "correct": bool(c)}
            for s, p, c, counted in zip(share, predicted.tolist(), correct, counts) if counted
        ]
        return result
    if mode != "reasoning":
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    num_samples = sampling.n
    if any(k > num_samples for k in pass_k):
        raise ValueError(f"pass@k needs k <= num_samples={num_samples}, got {pass_k}")
    groups = []
    for start in tqdm(range(0, len(share), batch_size), desc="reasoning", disable=not show_progress, leave=False):
        groups += generate_groups(engine, tokenizer, share[start:start + batch_size], prompt, sampling, extraction,
                                  seed, step)
    # accuracy is the prefix-matching reward (Eq. 3) whatever reward the policy was trained with
    correct = (score_groups(groups, tokenizer, RewardSettings("prefix_match", extraction)) == 1).numpy()  # (S, n)
    responses = [group.responses for group in groups]
    counted = np.array(counts, dtype=bool)  # (S,)
    num_correct = correct.sum(axis=1)  # (S,)
    result.sums["reasoning_acc"] = float(compute_pass_at_k(num_correct, num_samples, 1)[counted].sum())
    for k in pass_k:
        result.sums[f"reasoning_pass@{k}"] = float(compute_pass_at_k(num_correct, num_samples, k)[counted].sum())
    result.records = [
        {"doc_id": s.doc_id, "position": s.position, "continuation_ids": s.continuation_ids,
         "responses": group, "correct": row.tolist()}
        for s, group, row, is_counted in zip(share, responses, correct, counts) if is_counted
    ]
    return result


def data_parallel_layout(engine: Engine | None, mode: str) -> tuple[int, int, bool]:
    """-> (shard index, number of shards, whether this rank's counts are summed).

    Standard mode, or an engine without tensor parallelism: one shard per rank. Reasoning with a vLLM engine
    at tensor_parallel_size > 1: one shard per tensor-parallel group (`engine.data_parallel_rank` /
    `data_parallel_size`), whose ranks generate the same completions; only the group's first rank counts."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    world_size = dist.get_world_size() if dist.is_initialized() else 1
    if mode != "reasoning" or not hasattr(engine, "data_parallel_size"):
        return rank, world_size, True
    group_size = world_size // engine.data_parallel_size
    return engine.data_parallel_rank, engine.data_parallel_size, rank % group_size == 0


def reduce_split_results(results: dict[str, SplitResult], counted: bool = True) -> dict[str, float]:
    """Sum every split's counts over ranks (one all-reduce) -> {"<split>/<metric>": accuracy,
    "<split>/num_samples": count}. Every rank must pass the same splits and metrics; a rank with
    counted=False adds zeros (a tensor-parallel peer holding a copy of another rank's counts)."""
    keys = [(split, metric) for split, result in results.items() for metric in sorted(result.sums)]
    totals = torch.tensor([results[split].sums[metric] for split, metric in keys]
                          + [results[split].num_samples for split in results], dtype=torch.float64)
    totals = totals if counted else torch.zeros_like(totals)
    totals = all_reduce(totals)  # sums of correct answers and of counts: exact, rank-count independent
    sums, num_samples = totals[:len(keys)].tolist(), totals[len(keys):].tolist()
    split_counts = dict(zip(results, num_samples))
    metrics = {f"{split}/{metric}": value / split_counts[split] if split_counts[split] else 0.0
               for (split, metric), value in zip(keys, sums)}
    metrics.update({f"{split}/num_samples": float(count) for split, count in split_counts.items()})
    return metrics


def evaluate(model, tokenizer, engine: Engine | None, data_dir, splits=("easy", "medium", "hard"),
             mode: str = "standard", max_samples: int = 0, **split_kwargs) -> dict[str, float]:
    """Accuracy of every split in one mode, reduced over ranks -> {"easy/standard_acc": 0.41, ...,
    "easy/num_samples": 200.0}; the trainer logs them under eval/. Every rank must call it.

    model: an HF causal LM (plain, or sharded with FSDP2's fully_shard: a plain forward on every rank), used
    in standard mode and put back in its train/eval state afterwards; engine: used in reasoning mode.
    max_samples > 0 takes that many samples evenly spaced over each split. Other keyword arguments go to
    `evaluate_split` (batch_size, prompt, sampling, extraction, pass_k, seed, step, ...)."""
    shard, num_shards, counted = data_parallel_layout(engine, mode)
    was_training = model is not None and model.training
    if model is not None:
        model.eval()
    try:
        results = {}
        for split in splits:
            samples = select_evenly(read_samples(data_dir, split), max_samples)
            if not samples:
                raise ValueError(f"split {split!r} of {data_dir} has no samples")
            results[split] = evaluate_split(model, tokenizer, engine, samples, mode, rank=shard,
                                            world_size=num_shards, **split_kwargs)
    finally:
        if model is not None:
            model.train(was_training)  # the trainer's policy goes back to train mode
    return reduce_split_results(results, counted)


def format_mode_table(rows: list[tuple[str, str, dict[str, float]]], columns: list[str], headers: list[str],
                      mode_titles: dict[str, str], decimals: int) -> str:
    """A markdown table of the paper's layout: rows (mode, model name, {column: accuracy in 0..1}) grouped
    under a line per mode (its title from mode_titles), accuracy in percent; a missing value is "-"."""
    header = [""] + headers
    lines: list[list[str]] = []
    for mode in dict.fromkeys(mode for mode, _, _ in rows):
        lines.append([mode_titles.get(mode, mode)] + [""] * len(columns))
        lines += [[name] + [f"{100 * values[c]:.{decimals}f}" if c in values else "-" for c in columns]
                  for row_mode, name, values in rows if row_mode == mode]
    widths = [max(len(line[i]) for line in [header] + lines) for i in range(len(header))]

    def render(line: list[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(line, widths)) + " |"

    return "\n".join([render(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [render(line) for line in lines])


def format_accuracy_table(rows: list[tuple[str, str, dict[str, float]]], splits=("easy", "medium", "hard")) -> str:
    """Table 1's layout: rows (mode, model name, {split: accuracy in 0..1}) grouped under a header line per
    mode ("Standard next-token prediction", "Next-token reasoning"), accuracy in percent, 2 decimals."""
    return format_mode_table(rows, list(splits), [split.capitalize() for split in splits],
                             {"standard": "Standard next-token prediction", "reasoning": "Next-token reasoning"}, 2)


def rows_of_summary(summary: dict) -> list[tuple[str, str, dict[str, float]]]:
    """accuracy.json -> Table 1 rows: (mode, name, {split: accuracy}); reasoning Pass@k gets a row of its own."""
    rows = []
    for mode, metrics in summary["results"].items():
        splits = sorted({key.split("/")[0] for key in metrics})
        rows.append((mode, summary["name"], {split: metrics[f"{split}/{mode}_acc"] for split in splits}))
        pass_metrics = sorted({key.split("/", 1)[1] for key in metrics if "/reasoning_pass@" in key})
        for metric in pass_metrics:
            k = metric.split("@")[1]
            rows.append((mode, f"{summary['name']} (Pass@{k})",
                         {split: metrics[f"{split}/{metric}"] for split in splits}))
    return rows


def write_sample_records(out_dir: Path, mode: str, records: list[dict]) -> None:
    """Per-sample output of every rank, gathered to rank 0 (every rank calls it): standard_predictions.jsonl
    (one line per sample) or reasoning_responses.jsonl (one line per response, field "response", for the
    patterns command)."""
    records = [record for rank_records in all_gather_objects(records) for record in rank_records]
    if dist.is_initialized() and dist.get_rank() != 0:
        return
    records.sort(key=lambda record: (record["split"], record["doc_id"], record["position"]))
    if mode == "standard":
        path = out_dir / "standard_predictions.jsonl"
        lines = [json.dumps(record) for record in records]
    else:
        path = out_dir / "reasoning_responses.jsonl"
        lines = [json.dumps({"split": record["split"], "doc_id": record["doc_id"], "position": record["position"],
                             "sample_index": index, "response": response, "correct": correct})
                 for record in records
                 for index, (response, correct) in enumerate(zip(record["responses"], record["correct"]))]
    # json.dumps escapes the lone surrogates a response cut inside a UTF-8 character holds (token_text).
    path.write_text("".join(line + "\n" for line in lines))
    print(f"wrote {path} ({len(lines)} lines)", flush=True)
