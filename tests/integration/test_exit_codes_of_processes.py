"""Exit statuses and one-line errors of the real processes: the pipeline CLI, the plot command, the 2-rank trainer (the
in-process cases are tests/unit/test_exit_codes.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.exit_checks import assert_one_error_line, corrupted_tag
from support.launch import PYTHON, ROOT

BIN = Path(sys.executable).parent
PRETRAIN = shutil.which("pretrain", path=str(BIN)) or shutil.which("pretrain")
PIPELINE = shutil.which("pipeline", path=str(BIN)) or shutil.which("pipeline")
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}


@pytest.fixture()
def corrupt_tag(tmp_path: Path) -> Path:
    return corrupted_tag(tmp_path / "run")


# Signals, not errors: they end a command with 130/143 like Ctrl-C does, so they are KeyboardInterrupts.


def test_pretrain_plot_process_exits_2(tmp_path) -> None:
    """The console script's own status (plot used to exit 1 where every other command exits 2)."""
    done = subprocess.run([PRETRAIN, "plot", str(tmp_path)], capture_output=True, text=True, env=ENV, timeout=120)
    assert_one_error_line("pretrain plot: error: ", done.returncode, done.stderr, "metrics.csv")


@pytest.mark.parametrize("fault", ["missing data", "corrupt --resume"])
def test_trainer_fault_is_one_line_from_rank_0_and_exit_2(fault, corrupt_tag, tiny_dataset, tmp_path) -> None:
    """`python -m pretrain.train` (what every launcher runs): a PipelineError and a PretrainError alike."""
    data, resume = (tmp_path / "nowhere", "auto") if fault == "missing data" else (tiny_dataset, str(corrupt_tag))
    cmd = [PYTHON, "-m", "pretrain.train", "--data", str(data), "--preset", "debug", "--set", "model.seq_len=32"]
    cmd += ["--output", str(tmp_path / "new-run"), "--resume", resume]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**ENV, "RANK": "0"}, timeout=120)
    named = "manifest.json: no manifest" if fault == "missing data" else "sha256 mismatch"
    assert_one_error_line("pretrain.train: rank 0: error: ", done.returncode, done.stderr, named)
    assert not (tmp_path / "new-run" / "checkpoints").exists()


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        ("inspect {tmp}", ["no manifest.json"]),
        ("run --input {tmp}/none.jsonl --output {tmp}/out", ["input not found", "{tmp}/none.jsonl"]),
        ("dedup --input {tmp} --output {tmp}/out --set dedup.bogus=1", ["dedup.bogus"]),
        ("train-tokenizer --input {tmp}/none.jsonl --output {tmp}/tok", ["{tmp}/none.jsonl"]),
        ("demo-corpus {tmp}/a-file/corpus.jsonl", ["cannot write", "a-file"]),
    ],
)
def test_pipeline_subcommand_fault_is_one_line_and_exit_2(argv, named, tmp_path) -> None:
    (tmp_path / "a-file").write_text("a file where a folder is expected\n")
    fill = {"tmp": str(tmp_path)}
    done = subprocess.run(
        [PIPELINE, *argv.format(**fill).split()], capture_output=True, text=True, env=ENV, timeout=120
    )
    command = argv.split()[0]
    assert_one_error_line(
        f"pipeline {command}: error: ", done.returncode, done.stderr, *(n.format(**fill) for n in named)
    )
