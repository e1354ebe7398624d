"""Trained runs several test modules start from, made once per session.

Training on 2 CPU ranks is the slow part of the integration tests. The export, evaluate, generate, init-from-hf
and lm-eval tests all take the same run (one per preset) from the session's base temporary folder; the deepspeed
launcher's parity test and the W&B test read the same launch (`deepspeed_launcher_run`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from support.launch import PYTHON, ROOT, TINY_TRAIN_SETTINGS, free_port, run_train

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


DEEPSPEED_LAUNCHER_SETS = ("train.micro_batch_size=2", "train.global_batch_tokens=256", "train.max_steps=3")


def deepspeed_launcher_run(folder: Path, data: Path) -> tuple[subprocess.CompletedProcess, Path]:
    """`deepspeed --num_gpus 2 --module pretrain.train` (DS_ACCELERATOR=cpu), 3 steps, W&B on in offline mode:
    (the finished launch, its run folder FOLDER/my-run). W&B keeps its own files under FOLDER too."""
    run = folder / "my-run"
    wandb = ("log.wandb=true", "log.wandb_group=tests", "log.wandb_project=launch-tests")
    cmd = [str(Path(PYTHON).parent / "deepspeed"), "--num_gpus", "2", "--master_port", str(free_port())]
    cmd += ["--module", "pretrain.train", "--data", str(data), "--preset", "debug", "--output", str(run)]
    for item in (*TINY_TRAIN_SETTINGS, *DEEPSPEED_LAUNCHER_SETS, *wandb):
        cmd += ["--set", item]
    wandb_home = {f"WANDB_{name}_DIR": str(folder / name.lower()) for name in ("CONFIG", "CACHE", "DATA")}
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    env.update({"WANDB_SILENT": "true", **wandb_home})
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240), run
