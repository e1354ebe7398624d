"""Checkpoints: completion markers, `latest`, pruning, and exact resume after a SIGTERM preemption."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pretrain import checkpoint
from pretrain.checkpoint import CheckpointRef
from pretrain.errors import PretrainError


def _fake_ckpt(root: Path, step: int, complete: bool = True) -> str:
    tag = checkpoint.tag_for(step)
    (root / tag).mkdir(parents=True)
    (root / tag / "zero_pp_rank_0_mp_rank_00_model_states.pt").write_bytes(b"x")
    if complete:
        checkpoint._commit(root, tag)
    return tag


def test_incomplete_newest_checkpoint_is_skipped_with_a_warning(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    _fake_ckpt(root, 10)
    _fake_ckpt(root, 20)
    _fake_ckpt(root, 30, complete=False)  # a save interrupted mid-write: no marker, `latest` not moved
    assert (root / "latest").read_text() == "step00000020"
    with pytest.warns(UserWarning, match="step00000030.*no COMPLETE"):
        assert checkpoint.find_resumable(tmp_path) == CheckpointRef(root, "step00000020")
    with pytest.raises(PretrainError, match="COMPLETE"):
        checkpoint.resolve_checkpoint(root / "step00000030")


def test_resolve_checkpoint_accepts_run_checkpoints_or_tag_folder(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    _fake_ckpt(root, 5)
    _fake_ckpt(root, 7)
    for form in (tmp_path, root, root / "step00000007"):
        assert checkpoint.resolve_checkpoint(form) == CheckpointRef(root, "step00000007")
    assert checkpoint.resolve_checkpoint(root / "step00000005") == CheckpointRef(root, "step00000005")
    with pytest.raises(PretrainError, match="no complete checkpoint"):
        checkpoint.resolve_checkpoint(tmp_path / "elsewhere")
    assert checkpoint.find_resumable(tmp_path / "elsewhere") is None


def test_prune_keeps_the_newest_complete_ones(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    for step in (1, 2, 3, 4):
        _fake_ckpt(root, step)
    _fake_ckpt(root, 5, complete=False)
    checkpoint.prune(root, keep_last=2)
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["step00000003", "step00000004", "step00000005"]


# --------------------------------------------------------------------------- resume on another world size

# 6 samples per step (micro 1 x seq 32): 6, 3 and 2 accumulation steps on 1, 2 and 3 ranks, same global batch.


# --------------------------------------------------------------------------- random state


class _FakeCuda:
    """An accelerator with its own generator, standing in for CUDA on a CPU-only machine."""

    def __init__(self) -> None:
        self.state = torch.tensor([1, 2, 3], dtype=torch.uint8)
        self.restored: list[torch.Tensor] = []

    def device_name(self) -> str:
        return "cuda"

    def get_rng_state(self) -> torch.Tensor:
        return self.state.clone()

    def set_rng_state(self, state: torch.Tensor) -> None:
        self.restored.append(state)


def test_rng_state_carries_the_accelerator_generator_and_deepspeeds_tracker(monkeypatch: pytest.MonkeyPatch) -> None:
    import random

    import deepspeed.accelerator
    from deepspeed.runtime.activation_checkpointing.checkpointing import get_cuda_rng_tracker

    fake = _FakeCuda()
    monkeypatch.setattr(deepspeed.accelerator, "get_accelerator", lambda: fake)
    tracker = get_cuda_rng_tracker()
    monkeypatch.setattr(tracker, "states_", {"model-parallel-rng": torch.tensor([9, 9], dtype=torch.uint8)})
    saved = checkpoint.rng_state()
    draws = (random.random(), float(np.random.rand()), torch.rand(1).item())
    tracker.set_states({})
    checkpoint.set_rng_state(saved)
    assert (random.random(), float(np.random.rand()), torch.rand(1).item()) == draws
    assert [t.tolist() for t in fake.restored] == [[1, 2, 3]]
    assert {k: v.tolist() for k, v in tracker.get_states().items()} == {"model-parallel-rng": [9, 9]}
