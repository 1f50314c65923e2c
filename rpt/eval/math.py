r"""Math accuracy on a question file (Section 4.1 of the paper, Table 2's column): n responses per question
sampled through the rollout engine from the R1 math prompt (data/questions.py), each scored 1 when its
final `\boxed{}` after `</think>` equals a reference answer by math-verify (reward/answer.py). Reported:
accuracy = the mean over all n samples of all questions (avg@n), and pass@k for each requested k (the
unbiased estimator of Chen et al. 2021, as in eval/accuracy.py). The paper evaluates at temperature 0.6
with up to 32,000 tokens.

Multi-rank as rpt/eval/accuracy.py: contiguous equal blocks of questions per data-parallel shard (padded
with copies that do not count), per-question seeds from (seed, question id), sums all-reduced: the numbers
do not depend on the number of ranks. Verification timeouts are counted (`verify_timeouts`).

Deviations from the paper: the paper reports one accuracy number without saying how many samples it
averages; `num_samples` sets it.
"""
import numpy as np
import torch

from rpt.data.questions import Question, build_question_prompt_ids
from rpt.dist import all_reduce
from rpt.eval.accuracy import compute_pass_at_k, data_parallel_layout, response_text, shard_evenly
from rpt.reward.answer import MathVerifier, answer_rewards
from rpt.rollout.engine import Engine, SamplingParams


def question_seed(seed: int, question: Question) -> int:
    """A 32-bit generation seed fixed by (seed, question): independent of rank and batch."""
    return int(np.random.SeedSequence([seed, question.question_id]).generate_state(1)[0])


def evaluate_math(tokenizer, engine: Engine, questions: list[Question], *, num_samples: int = 1,
                  pass_k: tuple[int, ...] = (), temperature: float = 0.6, top_p: float = 1.0,
                  max_tokens: int = 32000, seed: int = 0, chat: bool = True, think_prefill: bool = True,
                  batch_size: int = 8, verifier: MathVerifier | None = None) -> tuple[dict, list[dict]]:
    """-> ({"acc", "pass@k" for each k, "num_questions", "verify_timeouts"} reduced over ranks, this rank's
    records: responses, rewards and answers of each counted question). Every rank must call it with the
    same questions."""
    if any(not 1 <= k <= num_samples for k in pass_k):
        raise ValueError(f"pass@k needs 1 <= k <= num_samples={num_samples}, got {pass_k}")
    shard, num_shards, counted = data_parallel_layout(engine, "reasoning")
    indices, counts = shard_evenly(len(questions), shard, num_shards)
    share = [questions[i] for i in indices]
    params = SamplingParams(n=num_samples, temperature=temperature, top_p=top_p, max_tokens=max_tokens)
    sums = {"acc": 0.0, **{f"pass@{k}": 0.0 for k in pass_k}, "num_questions": 0.0, "verify_timeouts": 0.0}
    records = []
    for start in range(0, len(share), batch_size):
        batch, batch_counts = share[start:start + batch_size], counts[start:start + batch_size]
        prompts = [build_question_prompt_ids(tokenizer, q.problem, chat, think_prefill) for q in batch]
        outputs = engine.generate(prompts, params, seeds=[question_seed(seed, q) for q in batch])
        for question, group, is_counted in zip(batch, outputs, batch_counts):
            if not is_counted:
                continue  # a padding copy: generated to keep the ranks in lockstep, never scored
            responses = [response_text(tokenizer, completion) for completion in group]
            rewards, diagnostics = answer_rewards(responses, [question.answers] * len(responses), verifier)  # (n,)
            num_correct = int(rewards.sum())
            sums["acc"] += num_correct / num_samples
            for k in pass_k:
                sums[f"pass@{k}"] += float(compute_pass_at_k(np.array([num_correct]), num_samples, k)[0])
            sums["num_questions"] += 1
            sums["verify_timeouts"] += float(diagnostics["verify_timeout"].sum())
            records.append({"question_id": question.question_id, "answers": question.answers,
                            "responses": responses, "rewards": rewards.tolist()})
    keys = sorted(sums)
    totals = torch.tensor([sums[k] if counted else 0.0 for k in keys], dtype=torch.float64)
    reduced = dict(zip(keys, all_reduce(totals).tolist()))
    num_questions = reduced.pop("num_questions")
    result = {k: v / num_questions for k, v in reduced.items() if k != "verify_timeouts"}
    result.update(num_questions=int(num_questions), verify_timeouts=int(reduced["verify_timeouts"]))
    return result, records
