"""Trained runs several test modules start from, made once per session: a 2-rank ZeRO-3 run and its export.

Training on 2 CPU ranks is the slow part of the export, evaluate, generate, init-from-hf and lm-eval tests; they
all take the same run (one per preset) from the session's base temporary folder instead of training their own.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from support.launch import run_train

SOURCE_SETS = ("train.micro_batch_size=2", "train.global_batch_tokens=128")  # the trained run's batch


def trained_run(tmp_path_factory: pytest.TempPathFactory, data: Path, preset: str) -> Path:
    """Train 3 steps on 2 CPU ranks (once per session and preset) and return the run folder."""
    run_dir = tmp_path_factory.getbasetemp() / f"export-run-{preset}"
    if (run_dir / "checkpoints" / "latest").is_file():
        return run_dir
    shutil.rmtree(run_dir, ignore_errors=True)
    sets = ("train.max_steps=3", "train.save_interval=3", *SOURCE_SETS)
    proc = run_train(2, data, run_dir, sets, extra=("--preset", preset))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def export_of(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path, preset: str) -> tuple[Path, Path]:
    """(source run, its `pretrain export` folder), made once per session and preset."""
    from pretrain.interop.export import export_hf

    run_dir = trained_run(tmp_path_factory, tiny_dataset, preset)
    out = tmp_path_factory.getbasetemp() / f"init-from-hf-export-{preset}"
    if not (out / "config.json").is_file():
        export_hf(run_dir, out)
    return run_dir, out
