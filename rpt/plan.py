"""A per-GPU memory plan for a training config, before anyone allocates a node.

    shape = read_model_shape("/models/DeepSeek-R1-Distill-Qwen-14B")   # its config.json only, no weights
    plan = plan_memory(shape, cfg, world_size=8, gpu_memory_gib=80)
    print(format_plan(plan))

Each GPU runs three phases in turn (rpt/rollout/engine.py's lifecycle): generation (vLLM awake, the trainer's
AdamW state on the CPU when rollout.offload_optimizer), update (vLLM asleep, the FSDP2 policy training) and
sync (vLLM's weights awake, the trainer streaming full tensors into them). The plan adds up, per phase, what
each part holds on one GPU, and what the host of a node holds (sleep level 1 keeps pinned weight backups,
offloaded AdamW state). Every number is a formula of the model's shape and the config, written next to its
row below; the ones that are estimates (activations, vLLM's workspace, CUDA context) say so. What the plan
leaves out: allocator fragmentation (the headroom below), attention scores under sdpa with padded rows
(flash_attention_2 keeps none), and the time per step.
"""
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

GIB = 1024 ** 3
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
CUDA_CONTEXT_BYTES = 2 * GIB  # CUDA context + NCCL communicators per process (estimate)
VLLM_ASLEEP_BYTES = 1 * GIB  # what a sleeping vLLM keeps: CUDA graph pool, workspaces (estimate)
VLLM_GRAPHS_BYTES = 1 * GIB  # CUDA graphs and non-torch allocations while awake (0 with enforce_eager; estimate)
# vLLM 0.32's scheduler defaults for `LLM(...)` on GPUs with >= 70 GiB (EngineArgs._get_default_args)
VLLM_MAX_BATCHED_TOKENS = 16384
VLLM_MAX_SEQS = 1024
HEADROOM_FRACTION = 0.05  # of GPU memory, kept free for fragmentation and what the plan does not model
MIN_SEQUENCES_AT_MAX_LENGTH = 64


@dataclass(frozen=True)
class ModelShape:
    """The fields of an HF config.json that set the memory (Qwen2/Llama-style decoder)."""
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    attention_bias: bool  # Qwen2: biases on q, k and v

    @property
    def layer_params(self) -> int:
        h, kv = self.hidden_size, self.num_kv_heads * self.head_dim
        q = self.num_heads * self.head_dim
        attention = h * q + 2 * h * kv + q * h + (q + 2 * kv if self.attention_bias else 0)
        return attention + 3 * h * self.intermediate_size + 2 * h  # + gate/up/down, 2 RMSNorms

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def root_params(self) -> int:
        """The parameters outside the decoder blocks, which FSDP2's root unit gathers: embeddings, final
        norm, untied lm_head."""
        return self.embedding_params * (1 if self.tie_word_embeddings else 2) + self.hidden_size

    @property
    def params(self) -> int:
        return self.num_layers * self.layer_params + self.root_params

    def kv_bytes_per_token(self, dtype_bytes: int, tensor_parallel_size: int) -> int:
        """K and V of every layer for one token on one GPU; vLLM splits KV heads over TP ranks and
        replicates them when there are fewer heads than ranks."""
        heads = max(1, self.num_kv_heads // tensor_parallel_size)
        return 2 * self.num_layers * heads * self.head_dim * dtype_bytes


def read_model_shape(model_dir: str | Path) -> ModelShape:
    """Parse `model_dir/config.json` (no weights are read); a missing field is an error naming it."""
    path = Path(model_dir) / "config.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: model.path must be a local HF model directory") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: invalid JSON ({error})") from None
    required = ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"]
    missing = [key for key in required if not isinstance(raw.get(key), int)]
    if missing:
        raise ValueError(f"{path}: missing or non-integer field(s) {missing}")
    heads = raw["num_attention_heads"]
    return ModelShape(
        hidden_size=raw["hidden_size"], num_layers=raw["num_hidden_layers"], num_heads=heads,
        num_kv_heads=raw.get("num_key_value_heads") or heads,
        head_dim=raw.get("head_dim") or raw["hidden_size"] // heads, intermediate_size=raw["intermediate_size"],
        vocab_size=raw["vocab_size"], tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        attention_bias=raw.get("model_type") == "qwen2" or bool(raw.get("attention_bias", False)))


@dataclass
class MemoryPlan:
    gpu_bytes: int
    world_size: int
    tensor_parallel_size: int
    rows: list[tuple[str, int, int, int]]  # (what, generation, update, sync) bytes per GPU
    kv_cache_tokens: int  # on one GPU
    round_tokens: int  # what one rollout round needs: contexts per replica x G x (prompt + response)
    max_sequence_tokens: int
    max_utilization: float  # the largest gpu_memory_utilization (0.05 steps) that fits the generation phase
    host_rows: list[tuple[str, int]]  # per node
    warnings: list[str] = field(default_factory=list)

    def total(self, phase: int) -> int:
        """phase: 0 generation, 1 update, 2 sync."""
        return sum(row[1 + phase] for row in self.rows)

    @property
    def sequences_at_max_length(self) -> float:
        return self.kv_cache_tokens / self.max_sequence_tokens


def plan_memory(shape: ModelShape, cfg, world_size: int, gpu_memory_gib: float, gpus_per_node: int = 8) -> MemoryPlan:
    """Per-GPU bytes of each part in each phase for `cfg` (rpt.config.Config) on world_size GPUs."""
    gpu = int(gpu_memory_gib * GIB)
    tp = cfg.rollout.tensor_parallel_size
    master = DTYPE_BYTES[cfg.model.dtype]  # fp32 master weights, gradients and AdamW moments
    compute = DTYPE_BYTES[cfg.model.param_dtype]  # FSDP2 gathers parameters in this dtype
    reduce = DTYPE_BYTES[cfg.model.reduce_dtype]
    engine = compute  # vLLM serves in model.param_dtype on GPUs (the loop's build_engine)
    P, h, v = shape.params, shape.hidden_size, shape.vocab_size
    tokens = cfg.train.micro_batch_tokens
    offload = cfg.rollout.offload_optimizer
    sleeps = cfg.rollout.sleep_level > 0

    shards = P * master // world_size  # FSDP2: every rank keeps 1/world of each parameter
    grads = P * master // world_size
    adam = 2 * P * master // world_size  # exp_avg + exp_avg_sq
    root_gathered = shape.root_params * compute  # embeddings / lm_head unsharded for the whole forward+backward
    root_grads = shape.root_params * compute
    # two blocks in flight (FSDP2 prefetches the next all-gather): gathered params, their grads, and the
    # reduce-scatter input in reduce dtype
    block_buffers = 2 * shape.layer_params * (2 * compute + reduce)
    # activation checkpointing keeps each block's input: T x hidden per layer; without it every layer keeps
    # roughly what one recomputed layer holds
    layer_activations = tokens * (4 * h + 2 * shape.num_kv_heads * shape.head_dim
                                  + 3 * shape.intermediate_size) * compute  # q,k,v,o, attn out, gate/up/act
    if cfg.model.activation_checkpointing:
        saved_activations = shape.num_layers * tokens * h * compute
    else:
        saved_activations = shape.num_layers * layer_activations
    recompute = 2 * layer_activations  # one layer's activations recomputed + their gradients (estimate)
    logits_chunk = 2 * cfg.grpo.logprob_chunk_size * v * 4  # fp32 logits of one chunk + their gradient
    vllm_budget = int(cfg.rollout.gpu_memory_utilization * gpu)
    vllm_weights = P * engine // tp
    vllm_workspace = (VLLM_MAX_BATCHED_TOKENS * 3 * shape.intermediate_size // tp * engine  # MLP at the profile peak
                      + 2 * VLLM_MAX_SEQS * v * 4  # sampler logits + log-probs of the dummy sampling run
                      + (0 if cfg.rollout.enforce_eager else VLLM_GRAPHS_BYTES))
    kv_bytes = vllm_budget - vllm_weights - vllm_workspace  # vLLM gives the rest of its budget to the KV cache
    largest_tensor = max(shape.embedding_params, h * shape.intermediate_size) * master
    stream = largest_tensor + shape.layer_params * master  # one full tensor from the shards + one layer buffered

    vllm_asleep = VLLM_ASLEEP_BYTES if sleeps else vllm_workspace
    rows = [
        ("fp32 parameter shards (P x 4 / world)", shards, shards, shards),
        ("gradient shards", 0, grads, 0),
        ("AdamW m + v shards", 0 if offload else adam, adam, adam),
        ("root params gathered (embed, lm_head) + grads", 0, root_gathered + root_grads, 0),
        ("FSDP gather/reduce buffers (2 blocks)", 0, block_buffers, 0),
        (f"saved activations at {tokens} tokens", 0, saved_activations, 0),
        ("one layer recomputed + backward (estimate)", 0, recompute, 0),
        (f"logits chunk {cfg.grpo.logprob_chunk_size} x {v} fp32 + grad", 0, logits_chunk, 0),
        (f"vLLM weights (TP {tp})", vllm_weights, 0 if sleeps else vllm_weights, vllm_weights),
        ("vLLM KV cache", max(kv_bytes, 0), 0 if sleeps else max(kv_bytes, 0), 0),
        ("vLLM workspace / graphs (estimate)", vllm_workspace, vllm_asleep, vllm_asleep),
        ("weight stream: largest tensor + one layer", 0, 0, stream),
        ("CUDA context + NCCL (estimate)", CUDA_CONTEXT_BYTES, CUDA_CONTEXT_BYTES, CUDA_CONTEXT_BYTES),
    ]
    headroom = int(HEADROOM_FRACTION * gpu)
    trainer_generation = shards + (0 if offload else adam) + CUDA_CONTEXT_BYTES
    max_utilization = math.floor((gpu - trainer_generation - headroom) / gpu * 20) / 20

    kv_tokens = max(kv_bytes, 0) // shape.kv_bytes_per_token(engine, tp)
    dp_size = max(world_size // tp, 1)
    sequence = cfg.data.max_prompt_tokens + cfg.rollout.max_response_tokens
    round_tokens = cfg.train.batch_size // dp_size * cfg.rollout.n * sequence
    ranks_per_node = min(gpus_per_node, world_size)
    host_rows = [
        ("vLLM pinned weight backups (sleep level 1)", ranks_per_node * vllm_weights if cfg.rollout.sleep_level == 1
         else 0),
        ("offloaded AdamW state", ranks_per_node * adam if offload else 0),
        ("rank 0 loading the checkpoint (model.dtype, once)", P * master),
    ]
    plan = MemoryPlan(gpu, world_size, tp, rows, kv_tokens, round_tokens, sequence, max_utilization, host_rows)

    fixes = {0: "lower rollout.gpu_memory_utilization" + ("" if offload else " or set rollout.offload_optimizer=true"),
             1: "lower train.micro_batch_tokens or grpo.logprob_chunk_size"
                + ("" if cfg.model.activation_checkpointing else ", set model.activation_checkpointing=true")
                + ("" if sleeps else ", set rollout.sleep_level=1") + ", or use more GPUs",
             2: "raise rollout.tensor_parallel_size (vLLM's weights split over its ranks) or use more GPUs"}
    for phase, name in enumerate(("generation", "update", "sync")):
        if plan.total(phase) + headroom > gpu:
            plan.warnings.append(f"the {name} phase needs {plan.total(phase) / GIB:.1f} GiB + "
                                 f"{headroom / GIB:.1f} GiB headroom of {gpu_memory_gib:g} GiB: {fixes[phase]}")
    if kv_bytes <= 0:
        plan.warnings.append(f"vLLM's budget ({cfg.rollout.gpu_memory_utilization} x {gpu_memory_gib:g} GiB) does not "
                             "even hold its weights and workspace: raise rollout.gpu_memory_utilization (at most "
                             f"{max_utilization:.2f} fits) or rollout.tensor_parallel_size")
    elif plan.sequences_at_max_length < MIN_SEQUENCES_AT_MAX_LENGTH:
        raise_utilization = (f"raise rollout.gpu_memory_utilization (at most {max_utilization:.2f} fits) or "
                             if cfg.rollout.gpu_memory_utilization < max_utilization else "")
        plan.warnings.append(
            f"the KV cache holds {kv_tokens:,} tokens = {plan.sequences_at_max_length:.1f} sequences of "
            f"{sequence:,} tokens (< {MIN_SEQUENCES_AT_MAX_LENGTH}): vLLM will preempt and generation slows; "
            f"{raise_utilization}raise rollout.tensor_parallel_size")
    return plan


def format_plan(plan: MemoryPlan) -> str:
    """The table launch/plan.py prints: GiB per GPU per phase, then KV cache, host memory and warnings."""
    width = max(len(row[0]) for row in plan.rows) + 2
    lines = [f"{'per GPU (GiB)':<{width}}{'generation':>12}{'update':>10}{'sync':>10}"]
    for name, *phases in plan.rows:
        lines.append(f"{name:<{width}}" + "".join(f"{b / GIB:>{w}.2f}" for b, w in zip(phases, (12, 10, 10))))
    lines.append(f"{'total':<{width}}" + "".join(f"{plan.total(p) / GIB:>{w}.2f}" for p, w in enumerate((12, 10, 10)))
                 + f"   of {plan.gpu_bytes / GIB:g}")
    lines.append(f"KV cache: {plan.kv_cache_tokens:,} tokens per GPU = {plan.sequences_at_max_length:.1f} sequences "
                 f"of {plan.max_sequence_tokens:,}; one rollout round needs {plan.round_tokens:,} tokens per replica "
                 f"({plan.kv_cache_tokens / plan.round_tokens:.0%} resident at once)")
    lines.append(f"largest rollout.gpu_memory_utilization that fits generation: {plan.max_utilization:.2f}")
    lines.append("host RAM per node: " + ", ".join(f"{name} {b / 1e9:.0f} GB" for name, b in plan.host_rows)
                 + f"; total {sum(b for _, b in plan.host_rows) / 1e9:.0f} GB")
    lines += [f"WARNING: {warning}" for warning in plan.warnings]
    return "\n".join(lines)


def summary_line(plan: MemoryPlan) -> str:
    """One line for the training log's start-up on CUDA."""
    return (f"memory plan per GPU (GiB of {plan.gpu_bytes / GIB:.0f}): generation {plan.total(0) / GIB:.1f}, "
            f"update {plan.total(1) / GIB:.1f}, sync {plan.total(2) / GIB:.1f}; KV cache {plan.kv_cache_tokens:,} "
            f"tokens ({plan.sequences_at_max_length:.1f} x {plan.max_sequence_tokens:,}); "
            f"{len(plan.warnings)} warning(s) (launch/plan.py prints them)")
