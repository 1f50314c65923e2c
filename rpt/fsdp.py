"""Everything that touches FSDP2: shard the policy, stream its full weights to the rollout engine, clip,
offload the optimizer state. Nothing else in rpt reaches into FSDP internals (checkpoints: rpt/checkpoint.py).

Layout (torchtitan's recipe): activation checkpointing inside each decoder block, `fully_shard` on each block,
then on the root, with a `MixedPrecisionPolicy`. Big models are built on the meta device on every rank but
rank 0, which loads the weights and broadcasts them while they are sharded.
"""
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method
from torch.distributed.tensor import DTensor

from rpt.model import DTYPES, load_model
from rpt.policy import PolicyLogprobs


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The repeated blocks of an HF causal LM (Llama, Qwen2, Mistral ...: `model.model.layers`)."""
    return model.model.layers


def build_policy(path: str, dtype: str = "float32", param_dtype: str = "float32", reduce_dtype: str = "float32",
                 activation_checkpointing: bool = False, attn_implementation: str = "sdpa",
                 device: torch.device = torch.device("cpu")) -> PolicyLogprobs:
    """Load the HF model at `path` and shard it over the default process group (no-op without one).

    Rank 0 reads the checkpoint; the other ranks build on the meta device and receive the weights by
    broadcast after sharding, so no rank but 0 ever holds a full copy (a 14B model is 59 GB in fp32)."""
    distributed = dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    hf_model = load_model(path, dtype, attn_implementation, device="cpu" if rank == 0 else "meta")
    if activation_checkpointing:
        # inside each block, so parameter names stay the HF names the engines load
        hf_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    policy = PolicyLogprobs(hf_model)
    if not distributed:
        return policy.to(device)

    full_state = policy.state_dict() if rank == 0 else {}
    full_buffers = {name: buf.clone() for name, buf in policy.named_buffers()} if rank == 0 else None
    mp_policy = MixedPrecisionPolicy(param_dtype=DTYPES[param_dtype], reduce_dtype=DTYPES[reduce_dtype])
    for layer in decoder_layers(hf_model):
        fully_shard(layer, mp_policy=mp_policy)
    # the root keeps its parameters (embeddings, final norm, lm_head) gathered between forward and backward
    fully_shard(policy, mp_policy=mp_policy, reshard_after_forward=False)
    register_fsdp_forward_method(policy, "next_token_logits")  # evaluation's second entry point
    policy.to_empty(device=device)  # rank 0's values come back from full_state below, like everyone's
    set_model_state_dict(policy, full_state,
                         options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    # buffers (rotary inv_freq) are not in the state dict and are garbage after to_empty: send rank 0's
    for name, buf in policy.named_buffers():
        source = full_buffers[name].to(device) if rank == 0 else torch.empty_like(buf, device=device)
        dist.broadcast(source, src=0)
        buf.copy_(source)
    return policy


def iter_full_weights(policy: PolicyLogprobs, dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF name, full tensor), one parameter at a time, gathered from the FSDP shards.

    dtype: the engine's weight dtype (bf16 for vLLM on a GPU); None keeps the policy's. Each shard is cast
    before the gather, so the all-gather moves and allocates half the bytes of an fp32 gather at bf16
    (59 GB -> 30 GB per sync at 14B) and the result is the same tensor: a cast is elementwise.
    Every rank must consume the whole iterator (each `full_tensor()` is a collective). Only one full
    parameter exists at a time beyond the shards, so the sync never holds a second copy of the model."""
    for name, param in policy.model.named_parameters():
        tensor = param.detach() if dtype is None else param.detach().to(dtype)  # a DTensor casts its shard
        yield name, tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def clip_grad_norm(policy: nn.Module, max_norm: float) -> torch.Tensor:
    """Global gradient-norm clip; returns the norm before clipping as a plain tensor."""
    norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), max_norm)
    return norm.full_tensor() if isinstance(norm, DTensor) else norm


def export_hf(policy: PolicyLogprobs, tokenizer, out_dir: Path) -> None:
    """Write the policy as a plain HF directory (safetensors + config + tokenizer) on rank 0, loadable by
    transformers and vLLM."""
    state = get_model_state_dict(policy.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not dist.is_initialized() or dist.get_rank() == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        policy.model.save_pretrained(out_dir, state_dict=state)
        tokenizer.save_pretrained(out_dir)
    if dist.is_initialized():
        dist.barrier()


def move_optimizer_state(optimizer: torch.optim.Optimizer, device: torch.device | str) -> None:
    """Move AdamW's moments (sharded DTensors under FSDP) to `device`: to CPU while the co-located engine
    generates on the GPU, back before the update (`rollout.offload_optimizer`). The step counters stay
    where torch keeps them."""
    for state in optimizer.state.values():
        for key, value in state.items():
            if key != "step" and isinstance(value, torch.Tensor):
                state[key] = value.to(device, non_blocking=True)
