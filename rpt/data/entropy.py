"""Proxy-model top-k entropy of every token position, and the thresholds that turn it into training data and
difficulty splits (Section 3.3; the splits: Section 4, Table 1).

The paper scores each position with DeepSeek-R1-Distill-Qwen-1.5B: entropy (natural log) of the softmax
renormalised over the 16 largest next-token logits. Training keeps the hard positions (entropy above a
threshold); validation positions of 200 held-out documents are bucketed easy / medium / hard by entropy
> 0.5 / 1.0 / 1.5, nested. `select_positions` is the one function behind both.

Scoring never materialises (T, V) fp32 logits for a whole document: the backbone runs once per batch of
windows, then the LM head runs on `head_chunk` positions at a time and only the top-k survive.

Deviations from the paper:
- The paper buckets validation positions with R1-Distill-Qwen-14B and filters training positions with the
  1.5B proxy; rpt.data.prepare scores held-out documents with `split_proxy` for that, and with the proxy
  when none is given (the manifest records which).
- The paper does not give its training threshold; `DEFAULT_TRAIN_THRESHOLD` (0.5, the "easy" bound) is ours.
- Both thresholds are strict (entropy > threshold), as the paper states for the buckets.
- A document longer than `window` tokens is scored in overlapping windows (stride window/2), so every
  position sees at least window/2 tokens of context and at most window, not its full left context.
"""
import numpy as np
import torch

TOP_K = 16
DIFFICULTY_THRESHOLDS = {"easy": 0.5, "medium": 1.0, "hard": 1.5}
DEFAULT_TRAIN_THRESHOLD = 0.5


def topk_entropy(logits: torch.Tensor, k: int = TOP_K) -> torch.Tensor:
    """Entropy in nats of the softmax over the k largest logits. (..., V) -> (...), float32.

    k >= V uses all V logits; -inf logits (masked tokens) contribute 0."""
    top = logits.topk(min(k, logits.shape[-1]), dim=-1).values.float()  # (..., k)
    probs = top.softmax(dim=-1)  # (..., k)
    return torch.special.entr(probs).sum(dim=-1)  # (...,) entr(p) = -p ln p, 0 at p = 0


def select_positions(entropy: np.ndarray, threshold: float, min_context: int) -> np.ndarray:
    """Positions t of one document with entropy[t] > threshold and at least min_context tokens before them.

    entropy: (n,) per position, NaN where unscored (never selected). -> (m,) int64 positions, ascending."""
    entropy = np.asarray(entropy)
    keep = entropy > threshold  # NaN compares False
    keep[:max(min_context, 1)] = False  # position 0 has no context at all
    return np.flatnonzero(keep)


def plan_windows(num_tokens: int, window: int) -> list[tuple[int, int, int]]:
    """Split a document of num_tokens positions into scoring windows.

    Returns (start, keep_start, keep_stop): the window's tokens begin at `start` and its predictions for
    positions [keep_start, keep_stop) are kept. The kept ranges tile [0, num_tokens) exactly once; a window
    holds at most `window` tokens, and each kept position has >= window // 2 tokens of context (or all of
    them, near the start)."""
    if window < 2:
        raise ValueError(f"window must be at least 2 tokens, got {window}")
    if num_tokens <= window:
        return [(0, 0, num_tokens)]
    stride = window // 2
    plans = [(0, 0, window)]
    start = stride
    while plans[-1][2] < num_tokens:
        plans.append((start, start + window - stride, min(start + window, num_tokens)))
        start += stride
    return plans


@torch.no_grad()
def score_documents(model, documents: list[list[int]], prefix_ids: list[int], k: int = TOP_K,
                    window: int = 4096, batch_tokens: int = 16384, head_chunk: int = 256) -> list[np.ndarray]:
    """Top-k entropy of the proxy's next-token distribution at every position of every document.

    documents: token ids, without special tokens. prefix_ids: what the tokenizer puts in front of a text
    (a BOS, or nothing); it opens every window, as it would open the policy's prompt.
    Returns one (n,) float32 array per document: entry t is the entropy of the prediction of token t given
    the tokens before it; NaN at t = 0 when there is no prefix token to predict from.

    The windows of all documents are sorted by length and packed into batches of at most batch_tokens
    (rows x longest row), right-padded: causal attention keeps real positions blind to the padding, so no
    attention mask is needed and results do not depend on which documents share a batch except through
    floating-point kernel choice."""
    backbone, lm_head = model.base_model, model.get_output_embeddings()
    device = next(model.parameters()).device
    entropies = [np.full(len(ids), np.nan, dtype=np.float32) for ids in documents]
    rows = []  # (doc index, input ids, first kept position, hidden index of that position, count)
    for doc_index, ids in enumerate(documents):
        for start, keep_start, keep_stop in plan_windows(len(ids), window):
            if not prefix_ids and keep_start == 0:
                keep_start = 1  # nothing predicts the first token
            if keep_stop <= keep_start:
                continue
            # hidden state j predicts token j + 1 of the input; the last kept position is predicted by the
            # input's last token, so the window stops just before it
            inputs = list(prefix_ids) + list(ids[start:keep_stop - 1])
            first_hidden = keep_start - start + len(prefix_ids) - 1
            rows.append((doc_index, inputs, keep_start, first_hidden, keep_stop - keep_start))
    rows.sort(key=lambda row: -len(row[1]))
    batch_start = 0
    while batch_start < len(rows):
        longest = len(rows[batch_start][1])
        batch_size = max(1, batch_tokens // longest)
        batch = rows[batch_start:batch_start + batch_size]
        batch_start += batch_size
        input_ids = torch.zeros(len(batch), longest, dtype=torch.long)  # (B, T) right-padded
        for row_index, (_, inputs, _, _, _) in enumerate(batch):
            input_ids[row_index, :len(inputs)] = torch.tensor(inputs)
        hidden = backbone(input_ids=input_ids.to(device), use_cache=False).last_hidden_state  # (B, T, D)
        kept = torch.cat([hidden[row_index, first:first + count]
                          for row_index, (_, _, _, first, count) in enumerate(batch)])  # (M, D)
        batch_entropy = torch.cat([topk_entropy(lm_head(kept[i:i + head_chunk]), k)  # (chunk, V) -> (chunk,)
                                   for i in range(0, len(kept), head_chunk)]).cpu().numpy()  # (M,)
        offset = 0
        for doc_index, _, keep_start, _, count in batch:
            entropies[doc_index][keep_start:keep_start + count] = batch_entropy[offset:offset + count]
            offset += count
    return entropies
