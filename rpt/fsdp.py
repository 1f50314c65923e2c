"""Everything that touches FSDP2: shard the policy, stream its full weights to the rollout engine, and
save/load distributed checkpoints. Nothing else in rpt reaches into FSDP internals.

Layout (torchtitan's recipe): activation checkpointing inside each decoder block, `fully_shard` on each block,
then on the root, with a `MixedPrecisionPolicy`. Big models are built on the meta device on every rank but
rank 0, which loads the weights and broadcasts them while they are sharded.
"""
import json
import os
import pickle
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method
from torch.distributed.tensor import DTensor

from rpt.policy import PolicyLogprobs
from rpt.model import DTYPES, load_model


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


# --- checkpoints ---------------------------------------------------------------------------------------

def _rng_state() -> dict:
    """Every RNG's state as tensors, numbers and strings only, so that the file loads with
    torch.load(weights_only=True) and reading a checkpoint can never run code."""
    version, python_state, gauss = random.getstate()
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {"python": {"version": version, "state": torch.tensor(python_state, dtype=torch.int64), "gauss": gauss},
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state: dict) -> None:
    python, numpy_state = state["python"], state["numpy"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss"]))
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["position"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None:
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointError(RuntimeError):
    pass


def _load_rank_file(path: Path) -> dict:
    """A per-rank state file, read with weights_only=True: anything but tensors and plain data is refused."""
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"{path}: refused to load, it holds more than tensors and plain data (a pickle that "
                              f"could run code, or a checkpoint written before rpt stored plain state): {error}") from None


# What DCP's .metadata pickle may name (torch 2.13): its dataclasses, sizes, dtypes, layouts and paths. DCP
# itself reads that file with plain pickle.load and non-tensor items with torch.load(weights_only=False),
# so a crafted checkpoint would run code on --resume; these two readers close both doors.
_DCP_METADATA_GLOBALS = {
    "torch.distributed.checkpoint.metadata": {"Metadata", "MetadataIndex", "StorageMeta", "TensorProperties",
                                              "TensorStorageMetadata", "BytesStorageMetadata",
                                              "ChunkStorageMetadata", "_MEM_FORMAT_ENCODING"},
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},  # maps a layout's name to the torch.layout
    "torch": {"Size"} | {name for name, value in vars(torch).items() if isinstance(value, torch.dtype)},
    "pathlib": {"PosixPath", "PurePosixPath"},
    "collections": {"OrderedDict"},
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if name not in _DCP_METADATA_GLOBALS.get(module, ()):
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a DCP checkpoint's metadata")
        return super().find_class(module, name)


def _read_dcp_metadata(path: Path) -> Metadata:
    with open(path, "rb") as file:
        try:
            return _MetadataUnpickler(file).load()
        except pickle.UnpicklingError as error:
            raise CheckpointError(f"{path}: refused to load: {error}") from None


class _SafeReader(FileSystemReader):
    def read_metadata(self, *args, **kwargs) -> Metadata:
        metadata = _read_dcp_metadata(self._get_metadata_path(kwargs.get("rank")))
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class _SafePlanner(DefaultLoadPlanner):
    """Non-tensor items (the optimizer's param-group settings) read as plain data only."""

    def load_bytes(self, read_item, value) -> None:
        try:
            loaded = torch.load(value, weights_only=True)
        except pickle.UnpicklingError as error:
            raise CheckpointError(f"checkpoint item {read_item.dest_index.fqn}: refused to load: {error}") from None
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
        else:
            self.state_dict[read_item.dest_index.fqn] = loaded


def checkpoint_step(path: Path) -> int:
    return int(Path(path).name[len("step_"):])


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def save_checkpoint(directory: Path, policy: nn.Module, optimizer, scheduler, step: int, extra: dict,
                    keep: int = 2, run_id: str = "", config: dict | None = None) -> Path:
    """Write `directory/step_{step:08d}` atomically: everything goes to a temp dir that rank 0 renames once
    all ranks are done, so a crash mid-save leaves the previous checkpoint as the latest complete one.

    Model and optimizer go through DCP (sharded, loadable at any world size); scheduler, step and each
    rank's RNG and `extra` (e.g. the data iterator position; tensors and plain data only) go to a small
    per-rank file that loads without unpickling code. meta.json names the run (`run_id`) and holds its
    `config` (rpt.config.to_dict): rotation keeps the `keep` newest checkpoints of this run and never touches
    another run's, and a resume compares its config with the checkpoint's."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    final = directory / f"step_{step:08d}"
    tmp = directory / f".tmp_step_{step:08d}"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        (tmp / "meta.json").write_text(json.dumps({"step": step, "run_id": run_id, "config": config}) + "\n")
    _barrier()
    model_state, optim_state = get_state_dict(policy, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(tmp))
    torch.save({"step": step, "scheduler": scheduler.state_dict(), "rng": _rng_state(), "extra": extra},
               tmp / f"rank{rank}.pt")
    _barrier()
    if rank == 0:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in run_checkpoints(directory, run_id)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def run_checkpoints(directory: Path, run_id: str) -> list[Path]:
    """The complete checkpoints of run `run_id` in `directory`, oldest first by step number."""
    return [path for path in _checkpoints(directory) if read_checkpoint_meta(path).get("run_id") == run_id]


def _checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoint directories, oldest first by step number (temp dirs of interrupted saves excluded)."""
    found = [path for path in Path(directory).glob("step_*") if path.name[len("step_"):].isdigit()]
    return sorted(found, key=checkpoint_step)


def read_checkpoint_meta(path: Path) -> dict:
    """meta.json of a checkpoint ({} for one written before checkpoints carried it)."""
    meta = Path(path) / "meta.json"
    return json.loads(meta.read_text()) if meta.exists() else {}


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest complete checkpoint by step number."""
    found = _checkpoints(directory)
    return found[-1] if found else None


def load_checkpoint(path: Path, policy: nn.Module, optimizer, scheduler) -> tuple[int, dict]:
    """Restore model, optimizer, scheduler and this rank's RNG in place; -> (step, extra)."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    rank_file = path / f"rank{rank}.pt"
    if not rank_file.exists():  # resumed at another world size: rank 0's scheduler state is everyone's
        rank_file = path / "rank0.pt"
    # both small files first, so that a refused one stops the resume before anything changed, on every rank
    small = _load_rank_file(rank_file)
    _read_dcp_metadata(path / ".metadata")
    model_state, optim_state = get_state_dict(policy, optimizer)
    state = {"model": model_state, "optim": optim_state}
    try:
        dcp.load(state, storage_reader=_SafeReader(path), planner=_SafePlanner())
    except CheckpointException as error:  # DCP wraps what each rank raised: surface a refusal as itself
        refused = [failure for failure, _ in error.failures.values() if isinstance(failure, CheckpointError)]
        if refused:
            raise refused[0] from None
        raise
    set_state_dict(policy, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    scheduler.load_state_dict(small["scheduler"])
    _set_rng_state(small["rng"])
    return small["step"], small["extra"]


def export_hf(policy: PolicyLogprobs, tokenizer, out_dir: Path) -> None:
    """Write the policy as a plain HF directory (safetensors + config + tokenizer) on rank 0, loadable by
    transformers and vLLM."""
    state = get_model_state_dict(policy.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not dist.is_initialized() or dist.get_rank() == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        policy.model.save_pretrained(out_dir, state_dict=state)
        tokenizer.save_pretrained(out_dir)
    _barrier()


def move_optimizer_state(optimizer: torch.optim.Optimizer, device: torch.device | str) -> None:
    """Move AdamW's moments (sharded DTensors under FSDP) to `device`: to CPU while the co-located engine
    generates on the GPU, back before the update (`rollout.offload_optimizer`). The step counters stay
    where torch keeps them."""
    for state in optimizer.state.values():
        for key, value in state.items():
            if key != "step" and isinstance(value, torch.Tensor):
                state[key] = value.to(device, non_blocking=True)
