"""Tasks: the unit of work of the dedup stage, and how they are read and spread over ranks.

A task is one input file, or a byte range of a large uncompressed jsonl file (`read.task_bytes`). A range owns
the lines that *start* inside it: its reader skips the partial line at its start and reads past its end to
finish its last line, so ranges are cut at fixed byte offsets without scanning the file first, and every line
belongs to exactly one range. Line numbers stay exact (ids of documents without an id, rejects, strict errors
say `file:line`): each range's first line number is the count of lines in the ranges before it, which the
ranks count in parallel before reading (`count_range_lines`, a newline scan far faster than the steps).

The task list depends only on the inputs and the recipe, never on the number of ranks, so every per-task
output (kept/part-NNNNN.jsonl is task NNNNN) and the global document order (task order, then file order inside
a task) are the same on any N. Tasks are spread over ranks by size, largest first onto the least loaded rank
(`assign_tasks`): with tasks of at most `read.task_bytes`, the most loaded rank carries at most the mean plus
one task (tests/unit/test_tasks.py simulates 2,048 ranks on log-normal file sizes). Compressed files and parquet are
whole-file tasks: one 50 GB .zst file is one task, and it bounds the balance (docs/SCALING.md). So are web
archives (gzip has no byte ranges). A Common Crawl crawl is ~90,000 WARC files of ~1 GB (~45,000 pages) each,
files many and alike, so largest-first placement balances by count: max/mean load 1.0005 on 64 ranks and 1.0011
on 2,048 (90,000 files of 0.9-1.1 GB); it is a slice of a crawl that balances badly, 1.02 for 1,000 files and
1.25 for 100 files on 64 ranks (a rank holds 1 or 2 files): give each rank 10 files or more.

The lines of a range come from the same `LineSplitter` as a whole file's, so a line too long for any record
is rejected as `too_long` from its size alone in both, and costs one chunk of memory, not its length.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from data_pipeline.config import ReadConfig
from data_pipeline.documents import Document, Reject
from data_pipeline.readers import (
    LineSplitter,
    OverlongLine,
    ReadPosition,
    jsonl_line_item,
    line_byte_limit,
    read_file,
    strict_items,
)

_CHUNK = 1 << 16

SPLITTABLE_SUFFIXES = (".jsonl", ".ndjson")


@dataclass(frozen=True)
class Task:
    """One unit of work: `path` whole (end is None) or the lines starting in bytes [start, end) of it."""

    index: int
    path: str
    start: int = 0
    end: int | None = None
    size: int = 0  # bytes of input this task reads: its load when tasks are spread over ranks

    @property
    def is_range(self) -> bool:
        return self.end is not None

    def describe(self) -> str:
        return f"{self.path} bytes {self.start}-{self.end}" if self.is_range else self.path


def is_splittable(path: str) -> bool:
    """Uncompressed jsonl can be cut at any byte offset and resynchronised at the next newline."""
    return path.lower().endswith(SPLITTABLE_SUFFIXES)


def plan_tasks(files: list[str], sizes: list[int], task_bytes: int) -> list[Task]:
    """Tasks in global input order: each file whole, or cut into equal byte ranges of at most task_bytes."""
    tasks: list[Task] = []
    for path, size in zip(files, sizes, strict=True):
        pieces = -(-size // task_bytes) if is_splittable(path) and size > task_bytes else 1
        if pieces == 1:
            tasks.append(Task(len(tasks), path, 0, None, size))
            continue
        cuts = [size * k // pieces for k in range(pieces + 1)]
        for start, end in zip(cuts[:-1], cuts[1:], strict=True):
            tasks.append(Task(len(tasks), path, start, end, end - start))
    return tasks


def assign_tasks(sizes: list[int], world_size: int) -> list[int]:
    """Rank of each task: largest task first onto the least loaded rank (ties: lower task, lower rank)."""
    owners = [0] * len(sizes)
    loads = [(0, rank) for rank in range(world_size)]
    heapq.heapify(loads)
    for task in sorted(range(len(sizes)), key=lambda t: (-sizes[t], t)):
        load, rank = heapq.heappop(loads)
        owners[task] = rank
        heapq.heappush(loads, (load + sizes[task], rank))
    return owners


def load_balance(sizes: list[int], owners: list[int], world_size: int) -> float:
    """max / mean load over ranks (1.0 is perfect)."""
    loads = [0] * world_size
    for size, owner in zip(sizes, owners, strict=True):
        loads[owner] += size
    mean = sum(loads) / world_size
    return max(loads) / mean if mean else 1.0


def _chunks_from(f: BinaryIO, offset: int) -> Iterator[bytes]:
    f.seek(offset)
    while chunk := f.read(_CHUNK):
        yield chunk


def _first_line_start(f: BinaryIO, start: int) -> int:
    """Offset of the first line that starts at or after `start`: past the newline at or after byte start-1."""
    if start == 0:
        return 0
    offset = start - 1
    for chunk in _chunks_from(f, offset):
        newline = chunk.find(b"\n")
        if newline >= 0:
            return offset + newline + 1
        offset += len(chunk)
    return offset


def range_lines(path: str, start: int, end: int, max_line_bytes: int) -> Iterator[tuple[int, bytes | OverlongLine]]:
    """(bytes it spans with its newline, the line without it) of each line starting in bytes [start, end).

    A line longer than `max_line_bytes` comes as an OverlongLine, its bytes never held (LineSplitter).
    """
    with open(path, "rb") as f:
        position = _first_line_start(f, start)
        for line in LineSplitter(max_line_bytes).lines(_chunks_from(f, position)):
            if position >= end:
                break
            size = (line.nbytes if isinstance(line, OverlongLine) else len(line)) + 1
            yield size, line
            position += size


def count_range_lines(task: Task) -> int:
    """Lines that start in the task's range (0 for whole-file tasks, whose line numbers start at 1 anyway).

    No line is kept (a limit of 0 bytes): counting costs one chunk of memory whatever the lines' lengths.
    """
    return sum(1 for _ in range_lines(task.path, task.start, task.end, 0)) if task.is_range else 0


def _read_range(task: Task, cfg: ReadConfig, first_line: int, position: ReadPosition | None):
    done = task.start
    lines = range_lines(task.path, task.start, task.end, line_byte_limit(cfg))
    for number, (size, raw) in enumerate(lines, start=first_line):
        done += size
        if position is not None and number % 1024 == 0:
            position.bytes_read = done - task.start
        if (item := jsonl_line_item(raw, task.path, number, cfg, position)) is not None:
            yield item


def read_task(
    task: Task, cfg: ReadConfig, first_line: int = 1, position: ReadPosition | None = None
) -> Iterator[Document | Reject]:
    """Documents and rejects of one task in input order; `first_line` is the line number of a range's first line."""
    if not task.is_range:
        yield from read_file(task.path, cfg, position)
        return
    yield from strict_items(_read_range(task, cfg, first_line, position), cfg)
