"""pretrain/rank_errors.py in-process: what each rank prints and records when it fails (the launches are in
tests/integration/test_rank_errors_launchers.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pretrain import rank_errors


@pytest.fixture
def training(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """As if the process group existed (records are written only then) in launch 'job-a' of run folder tmp_path."""
    monkeypatch.setattr(rank_errors, "_training_started", lambda: True)
    monkeypatch.setattr(rank_errors, "_this_launch", lambda: (tmp_path, "job-a"))
    monkeypatch.setattr(rank_errors, "RANK_0_REPORTS_S", 0.3)
    monkeypatch.setattr(rank_errors, "PEER_REPORTS_S", 0.3)


def test_run_folder_from_the_trainer_arguments() -> None:
    assert rank_errors.run_folder_of(["--data", "d", "--output", "runs/a"]) == Path("runs/a")
    assert rank_errors.run_folder_of(["--output=runs/a", "--output", "runs/b"]) == Path("runs/b")
    assert rank_errors.run_folder_of(["--data", "d"]) is None


def test_a_bug_is_recorded_with_its_traceback(tmp_path: Path, training, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        raise RuntimeError("rank one broke")
    except RuntimeError:
        monkeypatch.delitem(sys.modules, "mpi4py.MPI", raising=False)
        assert rank_errors.bug(1) is None  # the caller re-raises: the interpreter prints the traceback
        monkeypatch.setitem(sys.modules, "mpi4py.MPI", object())
        printed = rank_errors.bug(1)  # under mpirun: printed by the caller, which exits at once
    assert printed.startswith("Traceback (most recent call last)") and printed.endswith("RuntimeError: rank one broke")
    text = (tmp_path / "errors" / "rank1.txt").read_text()
    assert text.startswith("launch job-a rank 1 host ")
    assert "Traceback (most recent call last)" in text and "RuntimeError: rank one broke" in text


def test_a_user_error_only_a_non_zero_rank_meets_is_printed(tmp_path: Path, training) -> None:
    assert rank_errors.user_error("shard x missing", 3) == "pretrain.train: rank 3: error: shard x missing"
    assert rank_errors.recorded(tmp_path, "job-a") == {3: "shard x missing\n"}


def test_a_user_error_rank_0_already_reported_is_not_repeated(training) -> None:
    assert rank_errors.user_error("train.lr must be > 0", 0) == "pretrain.train: rank 0: error: train.lr must be > 0"
    assert rank_errors.user_error("train.lr must be > 0", 1) is None
    assert rank_errors.user_error("another one", 2) == "pretrain.train: rank 2: error: another one"


def test_rank_0_relays_the_failed_ranks_record_of_this_launch_only(tmp_path: Path, training) -> None:
    errors = tmp_path / "errors"
    errors.mkdir()
    (errors / "rank2.txt").write_text("launch job-old rank 2 host h pid 1 at then\nan earlier launch's bug\n")
    quiet = rank_errors.peer_lost_message(0, tmp_path, "job-a")
    assert "none recorded an error" in quiet and "killed" in quiet and "earlier" not in quiet
    (errors / "rank1.txt").write_text("launch job-a rank 1 host h pid 2 at now\nTraceback ...\nValueError: bad\n")
    message = rank_errors.peer_lost_message(0, tmp_path, "job-a")
    assert f"rank 1 failed ({errors / 'rank1.txt'}):\nTraceback ...\nValueError: bad" in message
    assert rank_errors.peer_lost_message(3, tmp_path, "job-a").endswith("rank 0 reports its error")


def test_nothing_is_written_before_the_process_group_exists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused launch leaves the run folder byte for byte as it was."""
    monkeypatch.setattr(rank_errors, "_training_started", lambda: False)
    assert rank_errors.record(tmp_path, 0, "job-a", "model.seq_len: 32 -> 64") is None
    assert list(tmp_path.iterdir()) == []
