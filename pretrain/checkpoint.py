"""Checkpoints: partitioned DeepSpeed saves plus what an exact resume needs, committed only when complete.

Layout (what export/evaluate rely on):

    RUN/config.yaml                       the resolved run config
    RUN/checkpoints/step00000100/         engine.save_checkpoint output (one shard per rank)
    RUN/checkpoints/step00000100/COMPLETE  written by rank 0 after every rank finished (barrier)
    RUN/checkpoints/step00000100/trainer_state_rank{r}.pt   RNG states of rank r
    RUN/checkpoints/latest                the newest complete tag, replaced atomically

client_state (saved by DeepSpeed in rank 0's model-states file, and as client_state.json next to it) holds
the config, the sampler state (consumed samples) and the tokenizer reference. Per-rank RNG states go into their own small file because
client_state is written only once.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist

from infra.files import write_text
from pretrain import ckpt_integrity
from pretrain.errors import PretrainError

if TYPE_CHECKING:
    from deepspeed import DeepSpeedEngine

CHECKPOINTS = "checkpoints"
COMPLETE = "COMPLETE"
LATEST = "latest"
UNIVERSAL_SUFFIX = ".universal"
CLIENT_STATE = "client_state.json"
TAG_RE = re.compile(r"^step(\d{8})$")


@dataclass(frozen=True)
class CheckpointRef:
    """One checkpoint: the checkpoints/ folder that DeepSpeed saves into and loads from, and the tag under it."""

    folder: Path  # RUN/checkpoints
    tag: str  # step00000100

    @property
    def path(self) -> Path:
        """The tag folder itself, RUN/checkpoints/step00000100."""
        return self.folder / self.tag


def tag_for(step: int) -> str:
    return f"step{step:08d}"


def rng_state() -> dict:
    """Every random stream a training step draws from on this rank, so dropout > 0 resumes exactly.

    Python, NumPy and torch's CPU generator; the accelerator's generator of this rank's device (CUDA: dropout
    masks on GPU), which torch's CPU state does not include; and DeepSpeed's model-parallel RNG tracker
    (`deepspeed.checkpointing.get_cuda_rng_tracker()`), whose named states activation checkpointing and
    model-parallel dropout fork from.
    """
    # imported here, not at the top: `pretrain export/evaluate/generate` find checkpoints through this module, and
    # importing DeepSpeed before pretrain/interop/consolidated.py names the accelerator prints a guess on stdout
    from deepspeed.accelerator import get_accelerator
    from deepspeed.runtime.activation_checkpointing.checkpointing import get_cuda_rng_tracker

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    accelerator = get_accelerator()
    if accelerator.device_name() != "cpu":  # on CPU the accelerator's generator is torch's CPU one, saved above
        state["accelerator"] = accelerator.get_rng_state()
    state["ds_rng_tracker"] = get_cuda_rng_tracker().get_states()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` saved (a checkpoint from before the accelerator entries restores the CPU ones)."""
    # imported here, not at the top: see rng_state
    from deepspeed.accelerator import get_accelerator
    from deepspeed.runtime.activation_checkpointing.checkpointing import get_cuda_rng_tracker

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    accelerator = get_accelerator()
    if "accelerator" in state and accelerator.device_name() != "cpu":
        accelerator.set_rng_state(state["accelerator"])
    if "ds_rng_tracker" in state:
        get_cuda_rng_tracker().set_states(state["ds_rng_tracker"])


def tokenizer_reference(manifest: dict) -> dict:
    """The tokenizer the run was trained with (path + sha256), as the dataset manifest records it."""
    return dict(manifest.get("tokenizer", {}))


def _world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def save(engine: DeepSpeedEngine, run_dir: str | os.PathLike, step: int, client_state: dict, keep_last: int) -> Path:
    """Save a partitioned checkpoint; mark it complete and move `latest` only after every rank wrote."""
    root = Path(run_dir) / CHECKPOINTS
    tag = tag_for(step)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank == 0:  # re-saving a tag: it stops counting as complete until every rank has rewritten it
        for marker in (COMPLETE, ckpt_integrity.CHECKSUM_FILE):
            (root / tag / marker).unlink(missing_ok=True)
    if dist.is_initialized():
        dist.barrier()
    engine.save_checkpoint(str(root), tag=tag, client_state=client_state, save_latest=False)
    torch.save(rng_state(), root / tag / f"trainer_state_rank{rank}.pt")
    if dist.is_initialized():
        dist.barrier()
    if rank == 0:
        (root / tag / CLIENT_STATE).write_text(json.dumps(client_state, indent=2) + "\n")
        _commit(root, tag, _world_size())
        prune(root, keep_last)
    if dist.is_initialized():
        dist.barrier()
    return root / tag


def _commit(root: Path, tag: str, world_size: int = 1) -> None:
    """Write the checksum file, then the completion marker (with the world size that wrote it), then `latest`."""
    ckpt_integrity.write_checksum_file(root / tag)  # sha256 of every rank's files, before COMPLETE
    write_text(root / tag / COMPLETE, json.dumps({"tag": tag, "world_size": world_size}) + "\n")
    write_text(root / LATEST, tag)


def complete_tags(root: Path) -> list[str]:
    """Tags under `root` that carry a completion marker, oldest first."""
    if not root.is_dir():
        return []
    tags = [p.name for p in root.iterdir() if TAG_RE.match(p.name) and (p / COMPLETE).is_file()]
    return sorted(tags)


def prune(root: Path, keep_last: int) -> None:
    """Delete complete checkpoints beyond the newest `keep_last` (incomplete ones are left for inspection)."""
    if keep_last <= 0:
        return
    for tag in complete_tags(root)[:-keep_last]:
        shutil.rmtree(root / tag, ignore_errors=True)
        shutil.rmtree(root / (tag + UNIVERSAL_SUFFIX), ignore_errors=True)


def find_resumable(run_dir: str | os.PathLike) -> CheckpointRef | None:
    """The newest complete checkpoint of a run; incomplete newer ones are skipped loudly."""
    root = Path(run_dir) / CHECKPOINTS
    complete = complete_tags(root)
    all_tags = sorted(p.name for p in root.iterdir() if TAG_RE.match(p.name)) if root.is_dir() else []
    for tag in all_tags:
        if tag not in complete and (not complete or tag > complete[-1]):
            warnings.warn(
                f"{root / tag}: no {COMPLETE} marker (a save was interrupted); skipping it",
                stacklevel=2,
            )
    intact = ckpt_integrity.newest_intact(root, complete)  # a corrupt newest one falls back, named
    return CheckpointRef(root, intact) if intact else None


def resolve_checkpoint(run_or_ckpt: str | os.PathLike) -> CheckpointRef:
    """Accept a run folder, its checkpoints/ folder or one tag folder; return its newest complete checkpoint."""
    path = Path(run_or_ckpt)
    if TAG_RE.match(path.name) and path.is_dir():
        if not (path / COMPLETE).is_file():
            raise PretrainError(f"{path}: checkpoint has no {COMPLETE} marker (interrupted save); pick another")
        ckpt_integrity.verify(path)
        return CheckpointRef(path.parent, path.name)
    run_dir = path.parent if path.name == CHECKPOINTS else path
    found = find_resumable(run_dir)
    if found is None:
        raise PretrainError(f"{run_or_ckpt}: no complete checkpoint under {run_dir / CHECKPOINTS}")
    return found


def saved_world_size(ref: CheckpointRef) -> int:
    return int(json.loads((ref.path / COMPLETE).read_text()).get("world_size", 1))


def to_universal(ref: CheckpointRef) -> str:
    """Convert a ZeRO checkpoint to DeepSpeed's universal format (rank 0, once) so another world size loads it.

    ZeRO partitions optimizer state by data-parallel rank; DeepSpeed refuses to load it on a different number
    of ranks unless it is first re-sliced per parameter by `deepspeed.checkpoint.ds_to_universal`.
    """
    out = ref.folder / (ref.tag + UNIVERSAL_SUFFIX)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank == 0 and not (out / COMPLETE).is_file():
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(ref.path)]
        cmd += ["--output_folder", str(out), "--num_extract_workers", "1", "--num_merge_workers", "1"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{ref.path}: conversion to a universal checkpoint failed:\n{proc.stderr[-2000:]}")
        write_text(out / COMPLETE, json.dumps({"tag": ref.tag, "universal": True}) + "\n")
    if dist.is_initialized():
        dist.barrier()
    return out.name


def _repair_universal_optimizer_state(optimizer: torch.optim.Optimizer, group_decay: list[float]) -> None:
    """Undo two things DeepSpeed's ZeRO-3 universal loader (stage3.py:
    `load_hp_checkpoint_state_from_checkpoint_dir_stage3`) gets wrong for this trainer's AdamW.

    - It copies param group 0's hyperparameters onto every group: group 1 (biases, norms) would get weight decay.
    - It assigns one and the same `step` tensor to the optimizer state of every ZeRO sub-group. torch's AdamW
      increments `state["step"]` in place once per sub-group it steps, so with K sub-groups the shared count
      grows by K per optimizer step and Adam's bias correction uses the wrong step. One tensor per sub-group,
      as a same-world-size load has, makes the resume exact.
    """
    for group, decay in zip(optimizer.param_groups, group_decay, strict=True):
        group["weight_decay"] = decay
    for state in optimizer.state.values():
        if isinstance(state.get("step"), torch.Tensor):
            state["step"] = state["step"].clone()


def load(engine: DeepSpeedEngine, ref: CheckpointRef, load_optimizer: bool = True) -> dict:
    """Load a partitioned checkpoint into the engine, restore this rank's RNG, return client_state.

    Saved on another number of ranks: converted to a universal checkpoint first (optimizer state included).
    """
    load_tag = ref.tag
    universal = saved_world_size(ref) != _world_size()
    if universal:
        load_tag = to_universal(ref)
        engine._config.load_universal_checkpoint = True  # DeepSpeed reads this flag at load time
    group_decay = [g["weight_decay"] for g in engine.optimizer.optimizer.param_groups]
    load_path, client_state = engine.load_checkpoint(
        str(ref.folder), tag=load_tag, load_optimizer_states=load_optimizer, load_lr_scheduler_states=load_optimizer
    )
    engine._config.load_universal_checkpoint = False
    if universal:
        _repair_universal_optimizer_state(engine.optimizer.optimizer, group_decay)
    if load_path is None:
        raise RuntimeError(f"{ref.folder / load_tag}: DeepSpeed could not load this checkpoint (see its log above)")
    if (ref.path / CLIENT_STATE).is_file():  # the universal format does not carry client_state
        client_state = json.loads((ref.path / CLIENT_STATE).read_text())
    rank = dist.get_rank() if dist.is_initialized() else 0
    rng_file = ref.path / f"trainer_state_rank{rank}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=False))
    return client_state
