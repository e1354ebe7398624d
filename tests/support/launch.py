"""Launching the trainer on CPU the way the integration tests do: torch's elastic launcher, 2 ranks, gloo."""

from __future__ import annotations

import itertools
import os
import random
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


_PORTS_PER_WORKER = 2000
_next_port = itertools.count(random.randrange(_PORTS_PER_WORKER))


def free_port() -> int:
    """A port free now for a server this test starts, never one another pytest-xdist worker may pick.

    `make test` runs two workers. Ports the kernel hands out for bind(0) are random in the ephemeral range
    (32768-60999), so two workers could draw the same one between a probe and the launch that binds it. Each worker
    instead walks its own block below that range (gw0: 20000-21999, gw1: 22000-23999, ...), where neither the kernel
    nor the other worker allocates, and skips a port still taken by one of its own earlier servers.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    base = 20000 + int(worker) * _PORTS_PER_WORKER
    for _ in range(_PORTS_PER_WORKER):
        port = base + next(_next_port) % _PORTS_PER_WORKER
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {base}-{base + _PORTS_PER_WORKER - 1}")


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
