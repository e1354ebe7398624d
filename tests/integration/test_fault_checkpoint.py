"""Checkpoint faults: a rank killed inside save_checkpoint, and checkpoint files that rot after the save.

Kill points are reached for real: tests/support/fault_inject_train.py runs the trainer with one function patched from
outside to SIGKILL its rank at that point of the save of step 4 (after step 2 was saved). Whatever the point,
step 2 must stay the checkpoint that `--resume auto` picks, `latest` must never name step 4, and a resumed run
must reproduce the uninterrupted run's losses exactly.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.fault_support import CPU_ENV, FAULT_SETS, injected_command, reference_run_dir
from support.launch import ROOT, run_train, step_losses

from pretrain import checkpoint
from pretrain.checkpoint import CheckpointRef
from pretrain.ckpt_integrity import CHECKSUM_FILE, CheckpointCorrupt
from pretrain.cli import main as pretrain_cli

pytestmark = pytest.mark.slow


@pytest.fixture()
def reference_run(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return reference_run_dir(tiny_dataset, tmp_path_factory)


def assert_same_losses(got: dict[int, float], want: dict[int, float], steps) -> None:
    diffs = {s: (got.get(s), want[s]) for s in steps if not math.isclose(got.get(s, math.nan), want[s], rel_tol=1e-6)}
    assert not diffs, f"step: (resumed, uninterrupted) differ: {diffs}"


def kill_during_save(data: Path, run: Path, point: str, rank: int) -> subprocess.CompletedProcess:
    cmd = injected_command(data, run)
    env = {**CPU_ENV, "FAULT_KILL_IN_SAVE": f"{point}:{rank}:4", "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "point,rank",
    [("deepspeed_file", 1), ("rank_files", 0), ("checksum_file", 0)],
)
def test_kill_inside_save_keeps_previous_checkpoint(
    tiny_dataset: Path, tmp_path: Path, reference_run: Path, point: str, rank: int
) -> None:
    run = tmp_path / "run"
    proc = kill_during_save(tiny_dataset, run, point, rank)
    assert proc.returncode != 0, "the launcher must fail the job when a rank dies"
    ckpts = run / "checkpoints"
    assert (ckpts / "step00000004").is_dir(), f"the kill at {point} came before the save of step 4 started"
    assert not (ckpts / "step00000004" / "COMPLETE").exists()
    assert (ckpts / "latest").read_text() == "step00000002"
    with pytest.warns(UserWarning, match="step00000004: no COMPLETE marker"):
        assert checkpoint.find_resumable(run) == CheckpointRef(ckpts, "step00000002")
    if point == "deepspeed_file":  # resume for real once: same losses as if nothing had happened
        resumed = run_train(2, tiny_dataset, run, FAULT_SETS)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "resumed from" in resumed.stdout and "step 2," in resumed.stdout
        assert_same_losses(step_losses(run), step_losses(reference_run), range(1, 7))


def corrupt_copy(reference: Path, tmp_path: Path, how: str) -> tuple[Path, Path]:
    """Copy of the reference run whose newest checkpoint (step 6) has one file flipped or truncated."""
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    victim = max((run / "checkpoints" / "step00000006").glob("*optim_states.pt"))
    data = bytearray(victim.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 3]
    victim.write_bytes(bytes(data))
    return run, victim


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_corrupt_checkpoint_is_refused_by_name_and_resume_falls_back(
    reference_run: Path, tmp_path: Path, how: str, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, victim = corrupt_copy(reference_run, tmp_path, how)
    ckpts = run / "checkpoints"
    assert (ckpts / "step00000006" / CHECKSUM_FILE).is_file()
    with pytest.warns(UserWarning, match=victim.name):
        assert checkpoint.find_resumable(run) == CheckpointRef(ckpts, "step00000004")
    with pytest.raises(CheckpointCorrupt, match=victim.name):
        checkpoint.resolve_checkpoint(ckpts / "step00000006")
    # `pretrain export` (its main, in this process: the refusal comes before any model is built)
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    capsys.readouterr()
    assert pretrain_cli(["export", str(ckpts / "step00000006"), str(tmp_path / "hf"), "--format", "hf"]) == 2
    refusal = capsys.readouterr().err
    assert victim.name in refusal and ("sha256 mismatch" in refusal or "truncated" in refusal), refusal
    assert not (tmp_path / "hf").exists()


def test_resume_past_a_corrupt_checkpoint_reproduces_the_uninterrupted_run(
    tiny_dataset: Path, reference_run: Path, tmp_path: Path
) -> None:
    """Step 6 corrupt -> resume from step 4, retrain steps 5..6: the same losses as the uninterrupted run."""
    run, victim = corrupt_copy(reference_run, tmp_path, "flip")
    (run / "metrics.csv").unlink()
    proc = run_train(2, tiny_dataset, run, FAULT_SETS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert victim.name in proc.stderr and "resumed from" in proc.stdout and "step 4," in proc.stdout
    got, want = step_losses(run), step_losses(reference_run)
    assert sorted(got) == [5, 6]
    assert_same_losses(got, want, (5, 6))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
