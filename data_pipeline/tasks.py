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
one task (tests/test_tasks.py simulates 2,048 ranks on log-normal file sizes). Compressed files and parquet are
whole-file tasks: one 50 GB .zst file is one task, and it bounds the balance (docs/SCALING.md).
"""

from __future__ import annotations

import codecs
import heapq
from collections.abc import Iterator
from dataclasses import dataclass

from data_pipeline.config import ReadConfig
from data_pipeline.documents import Document, Reject
from data_pipeline.readers import ReadPosition, _parse_json_line, read_file, strict_items

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


def range_lines(path: str, start: int, end: int) -> Iterator[bytes]:
    """The raw lines (newline included) that start in bytes [start, end) of `path`."""
    with open(path, "rb") as f:
        if start > 0:
            f.seek(start - 1)
            f.readline()  # the rest of the line holding byte start-1: it belongs to the range before
        position = f.tell()
        for line in f:
            if position >= end:
                break
            yield line
            position += len(line)


def count_range_lines(task: Task) -> int:
    """Lines that start in the task's range (0 for whole-file tasks, whose line numbers start at 1 anyway)."""
    return sum(1 for _ in range_lines(task.path, task.start, task.end)) if task.is_range else 0


def _read_range(task: Task, cfg: ReadConfig, first_line: int, position: ReadPosition | None):
    done = task.start
    for number, line in enumerate(range_lines(task.path, task.start, task.end), start=first_line):
        done += len(line)
        if position is not None and number % 1024 == 0:
            position.bytes_read = done - task.start
        raw = line.rstrip(b"\n")
        if number == 1:  # as readers.read_jsonl: a UTF-8 byte-order mark is not part of the first record
            raw = raw.removeprefix(codecs.BOM_UTF8)
        if raw.strip():  # as readers.read_jsonl: a blank line holds no record but counts as a line
            yield _parse_json_line(raw.rstrip(b"\r"), task.path, number, cfg, position)


def read_task(
    task: Task, cfg: ReadConfig, first_line: int = 1, position: ReadPosition | None = None
) -> Iterator[Document | Reject]:
    """Documents and rejects of one task in input order; `first_line` is the line number of a range's first line."""
    if not task.is_range:
        yield from read_file(task.path, cfg, position)
        return
    yield from strict_items(_read_range(task, cfg, first_line, position), cfg)
