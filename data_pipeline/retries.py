"""Bounded retries of a task whose read failed transiently: on object storage one GET in millions fails.

s3fs and botocore already retry each request (throttling, 5xx); what reaches a task is what they gave up on
(a connection reset mid-stream, a read timeout, an NFS `EIO`/`ESTALE`). Failing the whole job for it wastes every
rank's work, so the task is redone from its start, at most `read.retries` times, after an exponential backoff
with jitter (`read.retry_backoff_s`, doubled per attempt, plus up to as much again at random, so that ranks hit
by the same outage do not return in step). A retry rewrites every file of the task, so its outputs and ledger are
one clean attempt's. Only transient errors are retried (`is_transient`): a missing file, a refused permission, a
bad record or a corrupt stream fails the same way every time, and stays what it was.
"""

from __future__ import annotations

import errno
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from data_pipeline.config import ReadConfig
from data_pipeline.errors import PipelineError
from data_pipeline.storage import StorageError

T = TypeVar("T")

# errno values of a read that may succeed when tried again (s3fs maps 5xx and SlowDown to EBUSY/EREMOTEIO/EIO)
_TRANSIENT_ERRNO_NAMES = ["EIO", "EAGAIN", "EBUSY", "EINTR", "ETIMEDOUT", "ECONNRESET", "ECONNABORTED", "ECONNREFUSED",
                          "EPIPE", "ENETDOWN", "ENETUNREACH", "EHOSTUNREACH", "ESTALE", "EREMOTEIO"]  # fmt: skip
TRANSIENT_ERRNOS = frozenset(getattr(errno, name) for name in _TRANSIENT_ERRNO_NAMES if hasattr(errno, name))
# exception classes of the object-store clients that mean "the connection failed, try again", by module
TRANSIENT_CLASSES = {
    "botocore.exceptions": {"ConnectionError", "HTTPClientError", "ResponseStreamingError", "IncompleteReadError"},
    "aiohttp.client_exceptions": {"ClientConnectionError", "ClientPayloadError", "ServerTimeoutError"},
    "urllib3.exceptions": {"ProtocolError", "TimeoutError"},
}
TRANSIENT_HTTP_STATUS = frozenset({429, 500, 502, 503, 504})


class ReadFailed(PipelineError):
    """A task's read kept failing after every retry; the message names the task, the attempts and the error."""


def is_transient(err: BaseException) -> bool:
    """True for an error a later attempt of the same read may not meet: a dropped connection, a timeout, a busy
    or briefly failing store or file system. A PipelineError (bad input, a write error) is not, unless it wraps
    one of these (storage.StorageError names the URL of a store's failure)."""
    if isinstance(err, PipelineError):
        return isinstance(err, StorageError) and err.__cause__ is not None and is_transient(err.__cause__)
    if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(err, (ConnectionError, TimeoutError)):
        return True
    if isinstance(err, OSError) and err.errno is not None:  # pyarrow's decode errors are OSErrors without errno
        return err.errno in TRANSIENT_ERRNOS
    if getattr(err, "status", None) in TRANSIENT_HTTP_STATUS:  # aiohttp.ClientResponseError (https:// inputs)
        return True
    return any(k.__name__ in TRANSIENT_CLASSES.get(k.__module__, ()) for k in type(err).__mro__)


@dataclass(frozen=True)
class RetryPolicy:
    """`retries` more attempts after the first, the n-th after backoff_s * 2**(n-1) seconds plus jitter."""

    retries: int
    backoff_s: float
    sleep: Callable[[float], None] = time.sleep

    @classmethod
    def of(cls, read: ReadConfig) -> RetryPolicy:
        return cls(read.retries, read.retry_backoff_s)

    def delay(self, retry: int) -> float:
        base = self.backoff_s * 2 ** (retry - 1)
        return base + random.uniform(0, base)


@dataclass
class RetryLog:
    """The retries one rank made: per task, how many and the last error (stats.json read_retries)."""

    tasks: list[dict] = field(default_factory=list)

    def record(self, what: str, retries: int, error: BaseException) -> None:
        self.tasks.append({"task": what, "retries": retries, "last_error": describe(error)})


def describe(err: BaseException) -> str:
    """An error as stats.json records it: its type and the start of its message."""
    return f"{type(err).__name__}: {err}"[:500]


def with_retries(attempt: Callable[[], T], what: str, policy: RetryPolicy, log: RetryLog) -> T:
    """attempt(), tried again from its start after a transient error, at most policy.retries times; then
    ReadFailed naming `what` (the task: file and byte range), the attempts and the last error. Every other error
    is raised at once, as it is."""
    retry = 0
    while True:
        try:
            result = attempt()
        except Exception as err:  # noqa: BLE001 -- only transient errors are caught; the rest re-raised as they are
            if not is_transient(err):
                raise
            if retry == policy.retries:
                raise ReadFailed(
                    f"{what}: read failed {retry + 1} times (1 attempt + read.retries={policy.retries}), last: "
                    f"{type(err).__name__}: {err}; rerun when the store or file system is back (finished tasks are "
                    "kept), or raise read.retries / read.retry_backoff_s"
                ) from err
            retry, last = retry + 1, err
            policy.sleep(policy.delay(retry))
            continue
        if retry:
            log.record(what, retry, last)
        return result
