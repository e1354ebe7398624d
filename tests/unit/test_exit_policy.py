"""How a training launch ends on each rank (pretrain/exit_policy.py): which exception gives which exit status and
which stderr line, and which rank prints it. In-process: the exits themselves are replaced by recorders."""

from __future__ import annotations

import pytest

from data_pipeline.errors import PipelineError
from infra.errors import EXIT_USER_ERROR
from pretrain import exit_policy, rank_errors
from pretrain.errors import EXIT_BAD_STEPS, EXIT_LOCKED, ConfigError
from pretrain.exit_policy import Ending, after_error, after_return
from pretrain.run_lock import RunLocked


def test_a_return_is_its_status_and_bad_steps_are_named_by_rank_0_only() -> None:
    assert after_return(0, rank=0) == Ending(0)
    assert after_return(EXIT_BAD_STEPS, rank=1) == Ending(EXIT_BAD_STEPS)
    said = after_return(EXIT_BAD_STEPS, rank=0)
    assert said.status == EXIT_BAD_STEPS
    assert said.line == "pretrain.train: train.max_bad_steps non-finite steps in a row; last good weights saved"


@pytest.fixture(autouse=True)
def rank_0_answers_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """No process group here, so no records: a non-zero rank's wait for rank 0's record ends at once."""
    monkeypatch.setattr(rank_errors, "RANK_0_REPORTS_S", 0.0)
    monkeypatch.setattr(rank_errors, "PEER_REPORTS_S", 0.0)


@pytest.mark.parametrize("err", [ConfigError("train.max_steps:\n  must be >= 1"), PipelineError("manifest.json: none")])
def test_a_users_error_is_one_line_from_the_rank_that_met_it(err: Exception) -> None:
    """Rank 3's line too: rank 0 recorded none (pretrain/rank_errors.py keeps a rank quiet only when it did)."""
    message = " ".join(str(err).split())
    assert after_error(err, rank=0) == Ending(EXIT_USER_ERROR, f"pretrain.train: rank 0: error: {message}")
    assert after_error(err, rank=3) == Ending(EXIT_USER_ERROR, f"pretrain.train: rank 3: error: {message}")


def test_a_held_run_folder_is_exit_locked_on_the_rank_that_met_it() -> None:
    err = RunLocked("RUN: another job is using this run folder (host n1, pid 7)")
    ending = after_error(err, rank=0)
    assert ending == Ending(EXIT_LOCKED, f"pretrain.train: rank 0: error: {err}")
    assert EXIT_LOCKED == 5  # launch/restart.sh retries exactly this status


def test_a_closed_stdout_is_a_quiet_success_but_a_peer_s_broken_pipe_is_not(monkeypatch) -> None:
    monkeypatch.setattr(exit_policy, "stdout_reader_gone", lambda: True)
    assert after_error(BrokenPipeError(32, "Broken pipe"), rank=0) == Ending(0, stdout_closed=True)
    monkeypatch.setattr(exit_policy, "stdout_reader_gone", lambda: False)  # a socket's broken pipe, stdout open
    assert after_error(BrokenPipeError(32, "Broken pipe"), rank=0).status == 1
    lost = after_error(RuntimeError("[gloo] Broken pipe"), rank=1)  # what gloo raises when a peer died
    assert lost == Ending(
        1,
        "pretrain.train: rank 1: another rank stopped during a collective; rank 0 reports its error",
        interpreter_exit=True,
    )


@pytest.mark.parametrize("marker", exit_policy.PEER_LOST)
def test_every_peer_lost_message_points_at_the_rank_that_failed(marker: str) -> None:
    ending = after_error(RuntimeError(f"op failed: {marker} [10.0.0.2]:4242"), rank=2)
    assert (ending.status, ending.traceback, ending.interpreter_exit) == (1, False, True)
    assert "another rank stopped during a collective" in ending.line


def test_a_bug_keeps_its_traceback() -> None:
    ending = after_error(KeyError("qkv.weight"), rank=1)
    assert ending == Ending(1, "pretrain.train: rank 1 failed:", traceback=True, interpreter_exit=True)


class Exited(Exception):
    """Raised by the recorder that replaces os._exit (a sys.exit is a SystemExit, caught as it is)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.how, self.status = "os._exit", status


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """os._exit raises Exited; a closed stdout and the waits are recorded instead of done."""
    events: list[str] = []

    def hard_exit(status: int) -> None:
        raise Exited(status)

    monkeypatch.setattr(exit_policy, "hard_exit", hard_exit)
    monkeypatch.setattr(exit_policy, "stdout_closed", lambda: events.append("stdout -> /dev/null") or 0)
    monkeypatch.setattr(exit_policy.time, "sleep", lambda s: events.append(f"sleep {s}"))
    return events


def raising(err: Exception):
    def main() -> int:
        raise err

    return main


def test_run_ends_with_the_status_and_line_of_the_policy(exits: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(Exited) as done:
        exit_policy.run(lambda: EXIT_BAD_STEPS, rank=0)
    assert (done.value.how, done.value.status) == ("os._exit", EXIT_BAD_STEPS)
    assert capsys.readouterr().err.splitlines() == [after_return(EXIT_BAD_STEPS, 0).line]

    with pytest.raises(Exited) as done:
        exit_policy.run(raising(ConfigError("log.interval: must be >= 1")), rank=1)
    assert (done.value.how, done.value.status, exits) == ("os._exit", EXIT_USER_ERROR, [])
    assert capsys.readouterr().err == "pretrain.train: rank 1: error: log.interval: must be >= 1\n"


def test_run_quiet_on_a_closed_stdout(exits: list[str], capsys: pytest.CaptureFixture, monkeypatch) -> None:
    monkeypatch.setattr(exit_policy, "stdout_reader_gone", lambda: True)
    with pytest.raises(Exited) as done:
        exit_policy.run(raising(BrokenPipeError(32, "Broken pipe")), rank=0)
    assert (done.value.how, done.value.status, exits) == ("os._exit", 0, ["stdout -> /dev/null"])
    assert capsys.readouterr().err == ""


def test_run_reraises_a_bug_after_naming_the_rank(exits: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ZeroDivisionError):
        exit_policy.run(raising(ZeroDivisionError("division by zero")), rank=4)
    assert capsys.readouterr().err == "pretrain.train: rank 4 failed:\n"
    with pytest.raises(SystemExit) as done:  # the interpreter's exit: atexit writes the last heartbeat
        exit_policy.run(raising(RuntimeError("Connection reset by peer")), rank=4)
    assert done.value.code == 1
    assert "rank 4: another rank stopped" in capsys.readouterr().err
