"""Distributed checkpoints: save (atomic, rotated per run), find the latest, load (refusing anything that
could run code), and every RNG's state. torchtitan keeps checkpointing a component of its own beside its
parallelism; so does rpt (sharding lives in rpt/fsdp.py).

    save_checkpoint(out_dir / "checkpoints", policy, optimizer, scheduler, step, {"data": ...}, run_id=..., config=...)
    step, extra = load_checkpoint(latest_checkpoint(out_dir / "checkpoints"), policy, optimizer, scheduler)
"""
import json
import os
import pickle
import random
import shutil
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
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict


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
