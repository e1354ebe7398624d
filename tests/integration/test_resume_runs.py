"""Resume of real 2-rank runs: SIGTERM then an exact resume, and resume on 1 and 3 ranks equal to the uninterrupted run
(checkpoint selection is tests/unit/test_resume.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from support.launch import ROOT, run_train, step_losses, train_command

from pretrain import checkpoint


def _worker(launcher: subprocess.Popen, rank: int) -> psutil.Process:
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and "pretrain.train" in " ".join(child.cmdline()):
                return child
        except psutil.Error:
            continue
    raise LookupError(f"no worker with RANK={rank}")


def _wait_for_steps(run_dir: Path, n: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if (run_dir / "metrics.csv").is_file() and len(step_losses(run_dir)) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"run did not reach {n} steps (rc={proc.poll()})")


def _epoch_boundaries(output: str) -> list[str]:
    """The steps at which the trainer logged the end of an epoch of the training data."""
    return [line.split(":")[0] for line in output.splitlines() if "finished epoch" in line]


# --------------------------------------------------------------------------- resume on another world size

# 6 samples per step (micro 1 x seq 32): 6, 3 and 2 accumulation steps on 1, 2 and 3 ranks, same global batch.
WORLD_SETS = (
    "train.micro_batch_size=1",
    "train.global_batch_tokens=192",
    "train.max_steps=8",
    "train.save_interval=2",
    "train.keep_last=10",
)


@pytest.fixture(scope="module")
def straight_on_two_ranks(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted reference: 8 steps on 2 ranks, a checkpoint every 2 steps."""
    run = tmp_path_factory.mktemp("world") / "straight"
    result = run_train(2, tiny_dataset, run, WORLD_SETS)
    assert result.returncode == 0, result.stderr[-3000:]
    return run


def _resume_elsewhere(world: int, data: Path, ckpt: Path, out: Path) -> dict[int, float]:
    """Resume checkpoint `ckpt` on `world` ranks into a fresh run folder; its per-step losses."""
    result = run_train(world, data, out, WORLD_SETS, extra=("--resume", str(ckpt)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed from {ckpt}" in result.stdout
    return step_losses(out)


def _assert_same_losses(got: dict[int, float], want: dict[int, float], steps: range) -> None:
    for step in steps:
        assert got[step] == pytest.approx(want[step], rel=1e-6, abs=0), (step, got[step], want[step])


# --------------------------------------------------------------------------- random state


@pytest.mark.slow
def test_sigterm_checkpoints_exits_0_and_resume_is_exact(tiny_dataset: Path, tmp_path: Path) -> None:
    """2N straight == N, SIGTERM (to one rank only), resume, rest: identical losses on CPU, with dropout.

    Dropout draws from every rank's generators each step, so a resume that did not restore them would differ. At
    seq 256 the tiny split holds 79 samples and a step takes 4: steps 20 and 40 end epochs 1 and 2 (each epoch is
    reshuffled), after the preemption. Resume on another number of ranks: the world-size tests below (dropout 0,
    since ranks' random streams cannot continue on another world size).
    """
    steps = 40
    sets = ("model.seq_len=256", "model.dropout=0.2", "train.micro_batch_size=2", "train.global_batch_tokens=1024")
    sets += (f"train.max_steps={steps}",)
    straight = run_train(2, tiny_dataset, tmp_path / "straight", sets)
    assert straight.returncode == 0, straight.stderr[-3000:]
    plan = "data: 79 training samples of 256 tokens (20,224 tokens); 40 steps x 4 samples = 160 samples = 2.03 epochs"
    assert plan in straight.stdout and "warning: train.max_steps=40 needs 2.03 epochs" in straight.stdout
    want = step_losses(tmp_path / "straight")

    run = tmp_path / "preempted"
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        train_command(2, tiny_dataset, run, sets),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _wait_for_steps(run, 3, proc)
    _worker(proc, 1).send_signal(signal.SIGTERM)  # rank 1 only: both ranks must agree to stop and save
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out[-3000:]
    stopped_at = checkpoint.find_resumable(run)
    stopped = int(stopped_at.tag.removeprefix("step"))
    assert 3 <= stopped < 20 and "preemption signal" in out

    resumed = run_train(2, tiny_dataset, run, sets)  # --resume auto is the default
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {stopped_at.path}" in resumed.stdout
    got = step_losses(run)
    assert sorted(got) == list(range(1, steps + 1))
    assert [got[s] for s in range(stopped + 1, steps + 1)] == [want[s] for s in range(stopped + 1, steps + 1)]
    assert _epoch_boundaries(straight.stdout) == _epoch_boundaries(resumed.stdout) == ["step 20", "step 40"]
    assert "step 20: finished epoch 1 of the training data (80 samples consumed, 79 per epoch)" in resumed.stdout


@pytest.fixture(scope="module")
def resumed_on_three_ranks(
    tiny_dataset: Path, straight_on_two_ranks: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[int, float]]:
    """The 2-rank run's step-4 checkpoint resumed on 3 ranks to step 8 (checkpoints at 6 and 8): (folder, losses)."""
    out = tmp_path_factory.mktemp("world") / "on_three"
    return out, _resume_elsewhere(3, tiny_dataset, straight_on_two_ranks / "checkpoints/step00000004", out)


@pytest.mark.slow
def test_resume_two_to_three_ranks_matches_the_uninterrupted_run(
    straight_on_two_ranks: Path, resumed_on_three_ranks: tuple[Path, dict[int, float]]
) -> None:
    """2 ranks -> step 4 -> 3 ranks: steps 5 to 8 equal the straight 2-rank run to 1e-6.

    DeepSpeed's universal checkpoint re-slices the ZeRO-3 partitions; the optimizer step counts must stay one per
    partition (see RELIABILITY.md, "Resume on another world size") or Adam's bias correction drifts.
    """
    _, on_three = resumed_on_three_ranks
    assert sorted(on_three) == [5, 6, 7, 8]
    _assert_same_losses(on_three, step_losses(straight_on_two_ranks), range(5, 9))


@pytest.mark.slow
def test_resume_three_to_one_rank_matches_the_uninterrupted_run(
    tiny_dataset: Path,
    straight_on_two_ranks: Path,
    resumed_on_three_ranks: tuple[Path, dict[int, float]],
    tmp_path: Path,
) -> None:
    """2 ranks -> step 4 -> 3 ranks -> step 6 -> 1 rank: steps 7 and 8 equal the straight 2-rank run to 1e-6.

    Continues the 3-rank resume rather than a chain of its own (one launch fewer): a checkpoint that 3 ranks wrote
    after a resume of their own, re-sliced onto one rank.
    """
    on_three_run, _ = resumed_on_three_ranks
    on_one = _resume_elsewhere(1, tiny_dataset, on_three_run / "checkpoints/step00000006", tmp_path / "on_one")
    assert sorted(on_one) == [7, 8]
    _assert_same_losses(on_one, step_losses(straight_on_two_ranks), range(7, 9))
