"""Run by tests/gpu/test_vllm.py in its own process: vLLM alone on one GPU, built by the loop's own
build_engine (the trainer's exact LLM(...) arguments from launch/configs/rpt_14b.yaml), every number
written to OUT as JSON.

    python tests/gpu/vllm_check.py MODEL_DIR OUT.json
"""
import json
import sys
from pathlib import Path

import torch

from rpt.config import load_config
from rpt.build import build_engine
from rpt.model import load_model, load_tokenizer
from rpt.plan import GIB, read_model_shape
from rpt.rollout.engine import SamplingParams

TEXTS = ["The derivative of x^3 is", "Let n be the smallest positive integer such that", "Once upon a time"]


@torch.no_grad()
def max_and_mean_logprob_diff(model, prompts, groups, temperature: float) -> tuple[float, float]:
    """vLLM's sampled-token log-probs vs log_softmax(HF logits / T) of the same tokens."""
    diffs = []
    for prompt, group in zip(prompts, groups):
        for completion in group:
            ids = torch.tensor([prompt + completion.token_ids], device="cuda")  # (1, T)
            logits = model(ids).logits[0, len(prompt) - 1: -1].float()  # (T_new, V)
            logits = logits / temperature if temperature > 0 else logits
            reference = torch.log_softmax(logits, -1).gather(1, ids[0, len(prompt):, None])[:, 0]  # (T_new,)
            diffs.append((reference.cpu() - torch.tensor(completion.logprobs)).abs())
    diffs = torch.cat(diffs)
    return diffs.max().item(), diffs.mean().item()


def free_gib() -> float:
    torch.cuda.synchronize()
    return torch.cuda.mem_get_info()[0] / GIB


def main(model_dir: str, out: Path) -> None:
    cfg = load_config("launch/configs/rpt_14b.yaml", [
        f"--model.path={model_dir}", "--data.path=unused", "--data.max_prompt_tokens=1024",
        "--rollout.max_response_tokens=512", "--rollout.gpu_memory_utilization=0.5"])
    tokenizer = load_tokenizer(model_dir)
    prompts = [tokenizer(text).input_ids for text in TEXTS]
    report = {"free_before_engine_gib": free_gib()}
    engine = build_engine(cfg, tokenizer, torch.device("cuda"))
    cache = engine.llm.llm_engine.vllm_config.cache_config
    shape = read_model_shape(model_dir)
    report["kv_cache_tokens"] = cache.num_gpu_blocks * cache.block_size
    report["kv_cache_gib"] = report["kv_cache_tokens"] * shape.kv_bytes_per_token(2, 1) / GIB
    report["weights_gib"] = shape.params * 2 / GIB
    report["free_awake_gib"] = free_gib()

    # seeded generation: the same seeds give the same samples; log-probs match an HF bf16 forward
    sampling = SamplingParams(n=4, temperature=cfg.rollout.temperature, max_tokens=32)
    first = engine.generate(prompts, sampling, seeds=[11, 12, 13])
    again = engine.generate(prompts, sampling, seeds=[11, 12, 13])
    token_ids = [[c.token_ids for c in group] for group in first]
    report["seeded_reproducible"] = token_ids == [[c.token_ids for c in group] for group in again]
    report["distinct_samples"] = len({tuple(c.token_ids) for g in first for c in g})
    reference = load_model(model_dir, "bfloat16", device="cuda").eval()
    report["logprob_max_diff"], report["logprob_mean_diff"] = max_and_mean_logprob_diff(
        reference, prompts, first, sampling.temperature)
    greedy = SamplingParams(n=1, temperature=0.0, max_tokens=32)
    before = engine.generate(prompts, greedy)

    # the step's lifecycle: sleep frees weights + KV cache; update_weights wakes the weights only
    report["free_before_sleep_gib"] = free_gib()  # after the HF reference was loaded
    engine.sleep()
    report["free_asleep_gib"] = free_gib()
    torch.manual_seed(0)
    with torch.no_grad():
        for param in reference.parameters():  # perturb, then push: the outputs must change
            param.add_(0.02 * param.float().std().item() * torch.randn_like(param))
    engine.update_weights((name, param.detach()) for name, param in reference.named_parameters())
    report["free_weights_only_gib"] = free_gib()
    engine.wake()
    report["free_woken_gib"] = free_gib()
    after = engine.generate(prompts, greedy)
    report["greedy_changed_after_push"] = [g[0].token_ids for g in before] != [g[0].token_ids for g in after]
    report["pushed_logprob_max_diff"], report["pushed_logprob_mean_diff"] = max_and_mean_logprob_diff(
        reference, prompts, after, 0.0)
    out.write_text(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
