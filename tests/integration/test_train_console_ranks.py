"""The trainer's console on real ranks: an error every rank meets is printed once, and the documented launch commands
parse with the deepspeed launcher (the console format is tests/unit/test_train_console.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from pretrain import train

ROOT = Path(__file__).resolve().parents[2]


def documented_commands() -> list[str]:
    """The `deepspeed ...` launch lines of `pretrain.train --help` and pretrain/configs/example.yaml."""
    texts = [train.__doc__.split("\n")[0], (ROOT / "pretrain" / "configs" / "example.yaml").read_text()]
    return [m.group(0) for text in texts for m in re.finditer(r"deepspeed [^`\n]*pretrain\.train[^`\n]*", text)]


def test_an_error_every_rank_meets_is_printed_once_by_rank_0(tiny_dataset: Path, tmp_path: Path) -> None:
    from support.launch import PYTHON, free_port

    cmd = [PYTHON, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    cmd += ["-m", "pretrain.train", "--data", str(tiny_dataset), "--preset", "debug", "--output", str(tmp_path / "r")]
    cmd += ["--set", "train.max_steps=0"]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert out.count("train.max_steps: must be positive, got 0") == 1, out[-3000:]
    assert "pretrain.train: rank 0: error: train.max_steps: must be positive, got 0" in out
    assert 'pretrain/train.py", line' not in out  # no trainer traceback (torch elastic prints its own)
    assert not (tmp_path / "r").exists()  # nothing written: the config is checked before the run folder


def test_documented_launch_commands_parse_with_the_deepspeed_launcher() -> None:
    """deepspeed 0.19.8 rejects `-m`; the commands we print and ship must pass its own argument parser."""
    from deepspeed.launcher.runner import parse_args

    help_text = subprocess.run(
        [sys.executable, "-m", "pretrain.train", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    ).stdout
    assert "deepspeed --module pretrain.train" in help_text
    commands = documented_commands()
    assert len(commands) == 2, commands
    for command in commands:
        words = command.replace("...", "").replace("[", "").replace("]", "").split()[1:]
        args = parse_args(words)
        assert args.module and args.user_script == "pretrain.train", command
