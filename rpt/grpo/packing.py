"""Micro-batches under a token budget, padding-free: the sequences of a micro-batch are packed into one row.

A sequence is prompt + response. Position t of a packed row predicts the next token of the same sequence, so
each sequence contributes len(prompt) + len(response) - 1 positions (its last token predicts nothing and is
left out); the loss mask is True on positions whose target is a response token.

Why packing works without cross-attention: `position_ids` restart at 0 for every sequence, and transformers
5.x (masking_utils.find_packed_sequence_indices) turns every restart into a block-diagonal causal mask for the
sdpa and eager attention (on CPU too; sdpa then materializes a (1, 1, L, L) bool mask, O(L^2) memory), while
flash_attention_2 derives cu_seqlens from the same position_ids. This holds only when attention_mask is None
and no KV cache is passed: call the model with use_cache=False (rpt.policy.PolicyLogprobs does), since
the config default (use_cache=True, also in train mode) creates a cache and packed sequences then silently
attend to each other (measured: logit error 0.47 on a tiny Qwen2). tests/grpo/test_packing.py checks that a
packed row gives each sequence's log-probs as if it ran alone.

Two layouts, one per attention kind:
- pack_micro_batches: one packed row per micro-batch (padding-free, for flash_attention_2, whose cost is
  linear in the packed length).
- bucket_micro_batches: one sequence per row, sequences sorted by length so each micro-batch pads its rows
  only to a neighbour's length (for sdpa and eager). Those build an L x L mask for a packed row (17x slower
  forward+backward at L = 4,096 than the same 32 sequences of 128 tokens as 32 rows, stories260K, CPU), and
  any row holding two sequences makes transformers build a dense mask for the whole micro-batch. The former
  first-fit rows (several sequences per row) padded 1.18x the real positions on log-normal response lengths
  (mean 2k, max 8k); bucketing pads 1.02x (benchmarks/bench_packing.py). Right padding needs no attention
  mask: a causal model never lets a real token attend to a later position, and padded positions carry no
  loss. Padding continues the row's positions, so it does not open a new packed sequence.

Bin packing (packed rows): longest-first, each sequence into the currently lightest micro-batch, with as few
micro-batches as fit the budget (at least `min_micro_batches`). Under FSDP every rank must run the same number
of forward passes (each one all-gathers parameters), so the update packs, all-reduces the MAX micro-batch
count over ranks, and packs again with min_micro_batches set to it (either layout).

Deviations from the paper: none (verl packs sequences the same way with its "dynamic batch size" option).
"""
import heapq
import math
from dataclasses import dataclass

import torch


@dataclass
class MicroBatch:
    """One packed row holding several sequences. L = sum over its sequences of (prompt + response - 1)."""

    input_ids: torch.Tensor  # (R, L) long; R = 1 packed row, or one row per sequence (bucket_micro_batches)
    position_ids: torch.Tensor  # (R, L) long, restarting at 0 for every sequence
    targets: torch.Tensor  # (R, L) long, the next token of the same sequence
    loss_mask: torch.Tensor  # (R, L) bool, True where the target is a response token
    response_lengths: torch.Tensor  # (R, L) float, response tokens of the sequence each position belongs to
    seq_index: torch.Tensor  # (R, L) long, index in the step's list of the sequence each position belongs to
    sequence_indices: list[int]  # the step's sequences in this micro-batch, in row-major packing order

    def expand_sequence_values(self, values: torch.Tensor) -> torch.Tensor:
        """values: (num_sequences,) one number per sequence of the step (e.g. advantages) -> (R, L) per position."""
        return values[self.seq_index.to(values.device)]  # (R, L)

    def place_response_values(self, values: list[torch.Tensor]) -> torch.Tensor:
        """values: per sequence of the step, one number per response token (e.g. the engine's sampled-token
        log-probs) -> (R, L) with each value at the position predicting that token, 0 elsewhere."""
        placed = torch.zeros(self.loss_mask.shape, dtype=values[0].dtype, device=values[0].device)  # (R, L)
        # Loss positions appear, row-major, in sequence order and, within a sequence, in response order.
        placed[self.loss_mask.to(placed.device)] = torch.cat([values[i] for i in self.sequence_indices])
        return placed

    def to(self, device: torch.device | str) -> "MicroBatch":
        tensors = {name: getattr(self, name).to(device) for name in
                   ("input_ids", "position_ids", "targets", "loss_mask", "response_lengths", "seq_index")}
        return MicroBatch(**tensors, sequence_indices=self.sequence_indices)


def _assign_longest_first(lengths: list[int], num_bins: int) -> list[list[int]]:
    """Sequence indices per bin: longest sequence first, each into the bin with the fewest tokens so far."""
    bins = [[] for _ in range(num_bins)]
    loads = [(0, bin_index) for bin_index in range(num_bins)]  # min-heap of (tokens, bin)
    for seq in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        load, bin_index = heapq.heappop(loads)
        bins[bin_index].append(seq)
        heapq.heappush(loads, (load + lengths[seq], bin_index))
    return [sorted(seqs) for seqs in bins]


def _pack_rows(prompt_ids: list[list[int]], response_ids: list[list[int]], rows: list[list[int]]) -> MicroBatch:
    columns = {name: [] for name in ("input_ids", "position_ids", "targets", "loss_mask", "response_lengths",
                                      "seq_index")}
    for seqs in rows:
        row = {name: [] for name in columns}
        for seq in seqs:
            tokens = prompt_ids[seq] + response_ids[seq]
            positions = len(tokens) - 1
            row["input_ids"] += tokens[:-1]
            row["targets"] += tokens[1:]
            row["position_ids"] += range(positions)
            # Position t predicts token t + 1, which is a response token from t = len(prompt) - 1 on.
            row["loss_mask"] += [t >= len(prompt_ids[seq]) - 1 for t in range(positions)]
            row["response_lengths"] += [len(response_ids[seq])] * positions
            row["seq_index"] += [seq] * positions
        for name in columns:
            columns[name].append(row[name])
    width = max(len(row) for row in columns["input_ids"])
    for r in range(len(rows)):
        pad = width - len(columns["input_ids"][r])
        last_position = columns["position_ids"][r][-1]
        columns["input_ids"][r] += [0] * pad
        columns["targets"][r] += [0] * pad
        columns["position_ids"][r] += range(last_position + 1, last_position + 1 + pad)  # no new sequence
        columns["loss_mask"][r] += [False] * pad
        columns["response_lengths"][r] += [1] * pad
        columns["seq_index"][r] += [columns["seq_index"][r][-1]] * pad
    dtypes = {"loss_mask": torch.bool, "response_lengths": torch.float32}
    return MicroBatch(**{name: torch.tensor(values, dtype=dtypes.get(name, torch.long))
                         for name, values in columns.items()},
                      sequence_indices=[seq for seqs in rows for seq in seqs])


def _checked_lengths(prompt_ids: list[list[int]], response_ids: list[list[int]], max_tokens: int,
                     min_micro_batches: int) -> list[int]:
    """The micro-batchers' shared checks -> each sequence's positions (prompt + response - 1)."""
    if len(prompt_ids) != len(response_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(response_ids)} responses")
    if not 1 <= min_micro_batches <= len(prompt_ids):
        raise ValueError(f"min_micro_batches={min_micro_batches} must be between 1 and the {len(prompt_ids)} sequences")
    if any(len(prompt) == 0 for prompt in prompt_ids):
        raise ValueError("every prompt needs at least one token (it predicts the first response token)")
    lengths = [len(prompt) + len(response) - 1 for prompt, response in zip(prompt_ids, response_ids)]
    if max(lengths) > max_tokens:
        raise ValueError(f"a sequence of {max(lengths)} positions exceeds the micro-batch budget of {max_tokens} "
                         "tokens; raise the budget to at least max prompt + max response length")
    return lengths


def pack_micro_batches(
    prompt_ids: list[list[int]], response_ids: list[list[int]], max_tokens: int, min_micro_batches: int = 1,
) -> list[MicroBatch]:
    """Split N sequences into packed micro-batches (one row each) of at most max_tokens positions each.

    prompt_ids, response_ids: N lists of token ids (prompt non-empty; sequence i is prompt_ids[i] + response_ids[i]).
    max_tokens: the token budget of one micro-batch (positions in its packed row).
    min_micro_batches: at least this many micro-batches (to equalize the count across ranks); at most N.
    Returns the micro-batches; every sequence is in exactly one. Raises ValueError if one sequence alone
    exceeds the budget.
    """
    lengths = _checked_lengths(prompt_ids, response_ids, max_tokens, min_micro_batches)
    num_bins = max(min_micro_batches, math.ceil(sum(lengths) / max_tokens))
    while True:  # ends: with one sequence per bin every bin fits
        bins = _assign_longest_first(lengths, num_bins)
        if all(sum(lengths[seq] for seq in seqs) <= max_tokens for seqs in bins):
            return [_pack_rows(prompt_ids, response_ids, [seqs]) for seqs in bins]
        num_bins += 1


def bucket_micro_batches(
    prompt_ids: list[list[int]], response_ids: list[list[int]], max_tokens: int, min_micro_batches: int = 1,
) -> list[MicroBatch]:
    """Length bucketing for sdpa/eager attention: one sequence per row, rows of similar length together.

    Sequences are sorted by length (longest first) and cut into consecutive runs; a run is one micro-batch of
    right-padded rows, at most max_tokens padded positions (rows x its longest sequence), so a micro-batch pads
    each row only up to a neighbour in the sorted order (padded/real 1.02 on log-normal lengths, benchmarks/bench_packing.py).
    No row holds two sequences, so no position restarts and transformers builds no (L, L) mask (the packed
    layout's cost under sdpa); padding continues the row's positions and carries no loss.
    With fewer runs than min_micro_batches (to equalize the count across ranks), the run with the most padded
    positions is split in two halves until there are enough.

    Arguments and checks as pack_micro_batches. The step's loss does not depend on which sequences share a
    micro-batch: policy_loss normalizes by step-global counts.
    """
    lengths = _checked_lengths(prompt_ids, response_ids, max_tokens, min_micro_batches)
    runs = [[]]
    for seq in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        run = runs[-1]
        # the run's first sequence is its longest: it sets the padded width of every row
        if run and (len(run) + 1) * lengths[run[0]] > max_tokens:
            runs.append(run := [])
        run.append(seq)
    while len(runs) < min_micro_batches:
        widest = max((r for r in range(len(runs)) if len(runs[r]) > 1),
                     key=lambda r: (len(runs[r]) * lengths[runs[r][0]], -r))
        run = runs[widest]
        runs[widest: widest + 1] = [run[: len(run) // 2], run[len(run) // 2:]]
    return [_pack_rows(prompt_ids, response_ids, [[seq] for seq in run]) for run in runs]
