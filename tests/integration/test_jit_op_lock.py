"""A launch after a JIT build that was killed midway trains, instead of waiting forever on the build's lock file.

This is what hung every training launch of a CI run: one launch killed while DeepSpeed built its CPU
shared-memory op left `<extensions dir>/deepspeed_shm_comm/lock`, and torch waits for that file without a
deadline (pretrain/jit_ops.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support.launch import run_train

pytestmark = pytest.mark.slow


def built_extensions(folder: Path) -> Path:
    """A TORCH_EXTENSIONS_DIR holding this machine's built shm op (if built; ninja then has nothing to redo)."""
    from pretrain.jit_ops import build_dir

    built = build_dir("deepspeed_shm_comm")
    copy = folder / "extensions" / "deepspeed_shm_comm"
    if built.is_dir():
        shutil.copytree(built, copy, ignore=shutil.ignore_patterns("lock", "pretrain.flock"))  # keeps mtimes
    copy.mkdir(parents=True, exist_ok=True)
    return copy.parent


def test_a_launch_after_a_killed_build_removes_the_dead_lock_and_trains(tmp_path, tiny_dataset) -> None:
    extensions = built_extensions(tmp_path)
    (extensions / "deepspeed_shm_comm" / "lock").touch()  # the killed build's file: nobody holds it open
    proc = run_train(
        2, tiny_dataset, tmp_path / "run", ("train.max_steps=2",), env={"TORCH_EXTENSIONS_DIR": str(extensions)}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "a JIT build that was killed left it behind" in proc.stderr
    assert not (extensions / "deepspeed_shm_comm" / "lock").exists()
