"""Launching the trainer on CPU the way the integration tests do: torch's elastic launcher, 2 ranks, gloo."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable

# A model small enough that a 2-rank ZeRO-3 step takes milliseconds: 2 layers, d_model 64, seq_len 32.
TINY_TRAIN_SETTINGS = (
    "model.seq_len=32",
    "train.ds_config=ds_configs/zero3_cpu.json",
    "train.eval_interval=1000",
    "train.save_interval=1000",
    "log.interval=1",
    "log.tensorboard=false",
    "optim.warmup_steps=2",
    "data.val_samples=8",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_command(world_size: int, data: Path, out: Path, sets: tuple[str, ...] = (), extra: tuple = ()) -> list[str]:
    """The launch that works on CPU: torch's elastic launcher (what `torchrun` runs) with DS_ACCELERATOR=cpu."""
    args = [PYTHON, "-m", "torch.distributed.run", f"--nproc_per_node={world_size}", f"--master_port={free_port()}"]
    args += ["-m", "pretrain.train", "--data", str(data), "--preset", "debug", "--output", str(out)]
    for item in (*TINY_TRAIN_SETTINGS, *sets):
        args += ["--set", item]
    return args + list(extra)


def run_train(
    world_size: int,
    data: Path,
    out: Path,
    sets: tuple[str, ...] = (),
    env: dict | None = None,
    extra: tuple = (),
    timeout: int = 600,  # a hang guard only: a first launch on a fresh machine also builds DeepSpeed's CPU op
) -> subprocess.CompletedProcess:
    """Run a training to completion; the output is kept in the result for assertion messages."""
    full_env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    full_env.update(env or {})
    return subprocess.run(
        train_command(world_size, data, out, sets, extra),
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def step_losses(run_dir: Path) -> dict[int, float]:
    """Training loss per step from RUN/metrics.csv (the last row wins for a step logged twice)."""
    from pretrain.metrics import read_metrics

    return {int(r["step"]): float(r["loss"]) for r in read_metrics(run_dir) if "loss" in r and "val_loss" not in r}
