r"""Math accuracy on a question file (Section 4.1 of the paper, Table 2's column): n responses per question
sampled through the rollout engine from the R1 math prompt (data/questions.py), each scored 1 when its
final `\boxed{}` after `</think>` equals a reference answer by math-verify (reward/answer.py). Reported:
accuracy = the mean over all n samples of all questions (avg@n), and pass@k for each requested k (the
unbiased estimator of Chen et al. 2021, as in eval/accuracy.py). The paper evaluates at temperature 0.6
with up to 32,000 tokens.

Multi-rank as rpt/eval/accuracy.py: contiguous equal blocks of questions per data-parallel shard (padded
with copies that do not count), per-question seeds from (seed, step, question id) as in training, sums
all-reduced: the numbers do not depend on the number of ranks. Verification timeouts are counted (`verify_timeouts`).

Deviations from the paper: the paper reports one accuracy number without saying how many samples it
averages; `num_samples` sets it.
"""

from rpt.data.prompts import PromptSettings
from rpt.data.sample import Question
from rpt.dist import reduce_metrics
from rpt.eval.accuracy import compute_pass_at_k, data_parallel_layout, shard_evenly
from rpt.rollout.engine import Engine, SamplingParams
from rpt.rollout.groups import RewardSettings, generate_groups, score_groups


def evaluate_math(tokenizer, engine: Engine, questions: list[Question], *, num_samples: int = 1,
                  pass_k: tuple[int, ...] = (), temperature: float = 0.6, top_p: float = 1.0,
                  max_tokens: int = 32000, seed: int = 0, step: int = 0, chat: bool = True,
                  think_prefill: bool = True, batch_size: int = 8, verify_timeout_s: float = 5.0
                  ) -> tuple[dict, list[dict]]:
    """-> ({"acc", "pass@k" for each k, "num_questions", "verify_timeouts"} reduced over ranks, this rank's
    records: responses, rewards and answers of each counted question). Every rank must call it with the
    same questions. Generation and scoring go through the training's path (rpt.rollout.groups): the same
    prompt, the same per-question seeds from (seed, step, question id), the same answer reward."""
    if any(not 1 <= k <= num_samples for k in pass_k):
        raise ValueError(f"pass@k needs 1 <= k <= num_samples={num_samples}, got {pass_k}")
    shard, num_shards, counted = data_parallel_layout(engine, "reasoning")
    indices, counts = shard_evenly(len(questions), shard, num_shards)
    share = [questions[i] for i in indices]
    prompt = PromptSettings(chat=chat, think_prefill=think_prefill)
    params = SamplingParams(n=num_samples, temperature=temperature, top_p=top_p, max_tokens=max_tokens)
    groups = []
    for start in range(0, len(share), batch_size):  # padding copies are generated too: ranks stay in lockstep
        groups += generate_groups(engine, tokenizer, share[start:start + batch_size], prompt, params, "boxed",
                                  seed, step)
    groups = [group for group, is_counted in zip(groups, counts) if is_counted]
    rewards = score_groups(groups, tokenizer, RewardSettings("answer", verify_timeout_s=verify_timeout_s))  # (S, n)
    num_correct = rewards.sum(dim=1).round().long().numpy()  # (S,)
    sums = {"acc": float(rewards.sum()) / num_samples, "num_questions": len(groups),
            "verify_timeouts": sum(float(group.diagnostics["verify_timeout"].sum()) for group in groups)}
    for k in pass_k:
        sums[f"pass@{k}"] = float(compute_pass_at_k(num_correct, num_samples, k).sum()) if len(groups) else 0.0
    reduced = reduce_metrics({key: value if counted else 0.0 for key, value in sums.items()})
    num_questions = reduced.pop("num_questions")
    result = {key: value / num_questions for key, value in reduced.items() if key != "verify_timeouts"}
    result.update(num_questions=int(num_questions), verify_timeouts=int(reduced["verify_timeouts"]))
    records = [{"question_id": group.sample.question_id, "answers": group.sample.answers,
                "responses": group.responses, "rewards": row.tolist()} for group, row in zip(groups, rewards)]
    return result, records
