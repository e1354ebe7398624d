"""A task whose read fails transiently is redone from its start, at most read.retries times (data_pipeline/retries.py):
a flaky file system gives the clean run's outputs with the retries in stats.json; one that never recovers ends
the job after exactly retries + 1 attempts naming the task; bad input and missing files are never retried.
"""

from __future__ import annotations

import errno
import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from support.corpus import story
from support.pipeline_runs import output_hashes, planted_corpus, read_parts
from support.sim_comm import run_ranks

from data_pipeline import readers, storage, tasks
from data_pipeline.comm import LocalComm
from data_pipeline.config import RecipeError, load_recipe
from data_pipeline.readers import TruncatedStream
from data_pipeline.retries import ReadFailed, RetryLog, RetryPolicy, is_transient, with_retries
from data_pipeline.stages.dedup import run_dedup

SETTINGS = ["workers=1", "dedup.num_perm=32", "read.retry_backoff_s=0"]


class FlakyStorage:
    """`storage` as the readers see it, whose files named in `failures` fail their `at_read`-th read (by default
    the second: mid-stream, after the first chunk's documents) with `error`, for that many opens; every open is
    counted per file name."""

    def __init__(self, failures: dict[str, float], error: Exception, at_read: int = 2) -> None:
        self.failures, self.error, self.at_read, self.opens = dict(failures), error, at_read, {}

    def open_binary(self, path: str) -> Any:
        name = Path(path).name
        self.opens[name] = self.opens.get(name, 0) + 1
        file = storage.open_binary(path)
        if self.failures.get(name, 0) <= 0:
            return file
        self.failures[name] -= 1
        return FailingFile(file, self.error, self.at_read)

    def __getattr__(self, name: str) -> Any:
        return getattr(storage, name)


class FailingFile:
    def __init__(self, file: Any, error: Exception, at_read: int) -> None:
        self.file, self.error, self.at_read, self.reads = file, error, at_read, 0

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        if self.reads == self.at_read:
            raise self.error
        return self.file.read(size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)

    def __enter__(self) -> FailingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()


def dedup_on_ranks(corpus: Path, out: Path, ranks: int = 2, settings: tuple[str, ...] = ()) -> dict:
    recipe = load_recipe(None, [*SETTINGS, *settings])
    return run_ranks(ranks, lambda comm: run_dedup(comm, [str(corpus)], out, recipe, quiet=True))[0]


def test_a_flaky_read_is_retried_to_the_clean_runs_outputs_and_counted(tmp_path: Path, monkeypatch) -> None:
    corpus = planted_corpus(tmp_path)
    clean = dedup_on_ranks(corpus, tmp_path / "clean")
    flaky = FlakyStorage({"b.jsonl.gz": 2, "c.parquet": 1}, ConnectionResetError(errno.ECONNRESET, "reset by peer"))
    monkeypatch.setattr(readers, "storage", flaky)
    stats = dedup_on_ranks(corpus, tmp_path / "flaky")
    assert flaky.opens == {"a.jsonl": 1, "b.jsonl.gz": 3, "c.parquet": 2}
    assert stats["read_retries"]["total"] == 3 and clean["read_retries"] == {"total": 0, "tasks": []}
    by_task = {t["task"]: t for t in stats["read_retries"]["tasks"]}
    assert {k: t["retries"] for k, t in by_task.items()} == {
        f"{corpus / 'b.jsonl.gz'} (task 1)": 2,
        f"{corpus / 'c.parquet'} (task 2)": 1,
    }
    assert all(t["last_error"] == "ConnectionResetError: [Errno 104] reset by peer" for t in by_task.values())
    # one clean attempt's outputs: every file (work files, task markers, kept/, rejects/) byte for byte, the ledger
    ignored = {"stats.json", "timings.json", ".stages/dedup.json"}
    hashes = [
        {k: v for k, v in output_hashes(d).items() if k not in ignored}
        for d in (tmp_path / "clean", tmp_path / "flaky")
    ]
    assert hashes[0] == hashes[1] and any(k.startswith("dedup/work/t-00001/") for k in hashes[0])
    drop = ("resources", "read_retries")
    assert {k: v for k, v in stats.items() if k not in drop} == {k: v for k, v in clean.items() if k not in drop}
    assert stats["input_docs"] == clean["input_docs"] == stats["kept_docs"] + sum(stats["dropped"].values())


def test_a_byte_range_tasks_line_count_is_retried(tmp_path: Path, monkeypatch) -> None:
    """A range task's bytes are read twice, its lines counted in the plan, then scanned: the count is retried too."""
    data = tmp_path / "in"
    data.mkdir()
    (data / "big.jsonl").write_text("".join(json.dumps({"text": story(i)}) + "\n" for i in range(30)))
    settings = ["read.task_bytes=10000"]
    clean = run_dedup(LocalComm(), [str(data)], tmp_path / "clean", load_recipe(None, [*SETTINGS, *settings]), True)
    flaky = FlakyStorage({"big.jsonl": 3}, OSError(errno.EIO, "Input/output error"), at_read=1)
    monkeypatch.setattr(tasks, "storage", flaky)  # range reads: the plan's opens come first, one per range task
    stats = run_dedup(LocalComm(), [str(data)], tmp_path / "flaky", load_recipe(None, [*SETTINGS, *settings]), True)
    assert clean["tasks"] == stats["tasks"] == 4 and flaky.opens["big.jsonl"] == 4 + 4 + 3  # counts, scans, retries
    end = (data / "big.jsonl").stat().st_size // 4
    assert [(t["task"], t["retries"]) for t in stats["read_retries"]["tasks"]] == [
        (f"{data / 'big.jsonl'} bytes 0-{end} (task 0, counting its lines)", 3)
    ]
    assert read_parts(tmp_path / "flaky" / "kept") == read_parts(tmp_path / "clean" / "kept")


def test_a_read_that_never_recovers_ends_the_job_after_retries_plus_one_attempts(tmp_path: Path, monkeypatch) -> None:
    corpus = planted_corpus(tmp_path)
    flaky = FlakyStorage({"b.jsonl.gz": float("inf")}, TimeoutError("read timed out"))
    monkeypatch.setattr(readers, "storage", flaky)
    recipe = load_recipe(None, [*SETTINGS, "read.retries=2"])
    with pytest.raises(ReadFailed) as failed:
        run_dedup(LocalComm(), [str(corpus)], tmp_path / "out", recipe, quiet=True)
    assert flaky.opens["b.jsonl.gz"] == 3
    assert str(failed.value).startswith(
        f"{corpus / 'b.jsonl.gz'} (task 1): read failed 3 times (1 attempt + read.retries=2), last: "
        "TimeoutError: read timed out; "
    )
    assert not (tmp_path / "out" / ".stages" / "dedup-scan" / "t-00001.json").exists()  # no marker: a rerun redoes it


@pytest.mark.parametrize(
    "error",
    [PermissionError(errno.EACCES, "Access Denied"), OSError("Couldn't deserialize thrift"), ValueError("bad")],
    ids=["permission", "oserror-without-errno", "value-error"],
)
def test_an_error_that_is_not_transient_fails_the_job_at_once(tmp_path: Path, monkeypatch, error: Exception) -> None:
    corpus = planted_corpus(tmp_path)
    (corpus / "c.parquet").unlink()
    flaky = FlakyStorage({"b.jsonl.gz": 1}, error)
    monkeypatch.setattr(readers, "storage", flaky)
    with pytest.raises(type(error)):
        run_dedup(LocalComm(), [str(corpus)], tmp_path / "out", load_recipe(None, SETTINGS), quiet=True)
    assert flaky.opens["b.jsonl.gz"] == 1


def test_a_corrupt_stream_is_a_reject_not_a_retry(tmp_path: Path, monkeypatch) -> None:
    corpus = planted_corpus(tmp_path)
    (corpus / "b.jsonl.gz").write_bytes(gzip.compress(b'{"text": "x"}\n' * 50)[:-12])  # truncated gzip
    flaky = FlakyStorage({}, OSError())
    monkeypatch.setattr(readers, "storage", flaky)
    stats = run_dedup(LocalComm(), [str(corpus)], tmp_path / "out", load_recipe(None, SETTINGS), quiet=True)
    assert flaky.opens["b.jsonl.gz"] == 1 and stats["read_retries"]["total"] == 0
    assert stats["dropped"]["bad_input:truncated_gzip"] == 1


def attempts_of(errors: list[BaseException], retries: int = 3) -> tuple[list[int], RetryLog, list[float]]:
    """Run with_retries over an attempt that raises `errors` in turn, then returns; (attempts made, log, sleeps)."""
    calls, log, sleeps = [], RetryLog(), []

    def attempt() -> str:
        calls.append(len(calls) + 1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "done"

    assert with_retries(attempt, "f.jsonl bytes 0-10 (task 7)", RetryPolicy(retries, 0.5, sleeps.append), log) == "done"
    return calls, log, sleeps


def test_backoff_doubles_with_jitter_and_the_log_keeps_the_last_error() -> None:
    calls, log, sleeps = attempts_of([ConnectionResetError("one"), OSError(errno.EIO, "two"), TimeoutError("three")])
    assert calls == [1, 2, 3, 4]
    assert [0.5 <= sleeps[0] < 1.0, 1.0 <= sleeps[1] < 2.0, 2.0 <= sleeps[2] < 4.0] == [True, True, True]
    assert log.tasks == [{"task": "f.jsonl bytes 0-10 (task 7)", "retries": 3, "last_error": "TimeoutError: three"}]
    assert attempts_of([])[1].tasks == []  # a clean read records nothing


@pytest.mark.parametrize(
    "error",
    [
        TruncatedStream("gzip stream is truncated"),
        FileNotFoundError(errno.ENOENT, "gone"),
        json.JSONDecodeError("x", "", 0),
    ],
    ids=["truncated", "missing-file", "decode"],
)
def test_bad_input_and_missing_files_are_raised_at_the_first_attempt(error: Exception) -> None:
    log = RetryLog()
    calls = []
    with pytest.raises(type(error)):
        with_retries(lambda: calls.append(1) or (_ for _ in ()).throw(error), "t", RetryPolicy(3, 0, calls.append), log)
    assert calls == [1] and log.tasks == []


def test_which_errors_are_transient() -> None:
    import aiohttp
    from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

    transient = [
        ConnectionResetError(errno.ECONNRESET, "reset"),
        TimeoutError("timed out"),
        OSError(errno.EIO, "input/output error"),
        OSError(errno.ESTALE, "stale NFS file handle"),
        OSError(errno.EBUSY, "SlowDown"),  # s3fs's translation of a 503
        storage.StorageError("s3://b/k: cannot read"),
        ReadTimeoutError(endpoint_url="http://s3"),
        EndpointConnectionError(endpoint_url="http://s3"),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientPayloadError("response payload is not completed"),
        aiohttp.ClientResponseError(None, (), status=503),
    ]
    transient[5].__cause__ = OSError(errno.EREMOTEIO, "InternalError")
    permanent = [
        FileNotFoundError(errno.ENOENT, "no such key"),
        PermissionError(errno.EACCES, "Access Denied"),
        OSError(errno.EINVAL, "InvalidRange"),
        OSError(errno.ENOSPC, "no space left"),
        OSError("Couldn't deserialize thrift"),
        gzip.BadGzipFile("Not a gzipped file"),
        TruncatedStream("zstd stream ended"),
        storage.StorageError("s3://b/k: cannot read"),
        ValueError("bad json"),
        aiohttp.ClientResponseError(None, (), status=404),
    ]
    permanent[7].__cause__ = FileNotFoundError("no such key")
    assert [is_transient(e) for e in transient] == [True] * len(transient)
    assert [is_transient(e) for e in permanent] == [False] * len(permanent)


def test_retry_settings_are_checked_and_do_not_change_the_stage_identity() -> None:
    from data_pipeline.stages.plan import stage_config

    with pytest.raises(RecipeError, match="read.retries must be >= 0"):
        load_recipe(None, ["read.retries=-1"])
    with pytest.raises(RecipeError, match="read.retry_backoff_s must be >= 0"):
        load_recipe(None, ["read.retry_backoff_s=-2"])
    assert stage_config(load_recipe(None, ["read.retries=9"])) == stage_config(load_recipe())
