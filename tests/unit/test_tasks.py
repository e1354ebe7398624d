"""Tasks: byte ranges read every line exactly once, and tasks spread over 2,048 ranks stay within 1.2x the mean."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from data_pipeline.tasks import Task, assign_tasks, load_balance, plan_tasks, range_lines

GB = 1 << 30


def test_ranges_cut_anywhere_read_every_line_once(tmp_path: Path) -> None:
    rng = random.Random(0)
    lines = [("x" * rng.randint(0, 300)).encode() + b"\n" for _ in range(500)] + [b"last line without newline"]
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"".join(lines))
    size = path.stat().st_size
    for pieces in (1, 2, 7, 50, size):  # `size` pieces: one byte each, most ranges hold no line start
        cuts = sorted({0, size, *(size * k // pieces for k in range(pieces))})
        ranges = zip(cuts[:-1], cuts[1:], strict=True)
        got = [line for a, b in ranges for _, line in range_lines(str(path), a, b, 1 << 20)]
        assert got == [line.rstrip(b"\n") for line in lines], f"{pieces} pieces"


def test_plan_cuts_only_large_uncompressed_jsonl() -> None:
    files = ["a.jsonl", "b.jsonl.gz", "c.parquet", "d.jsonl", "e.txt"]
    tasks = plan_tasks(files, [10, 100, 100, 35, 100], task_bytes=10)
    assert [(t.path, t.start, t.end) for t in tasks] == [
        ("a.jsonl", 0, None), ("b.jsonl.gz", 0, None), ("c.parquet", 0, None),
        ("d.jsonl", 0, 8), ("d.jsonl", 8, 17), ("d.jsonl", 17, 26), ("d.jsonl", 26, 35), ("e.txt", 0, None),
    ]  # fmt: skip
    assert [t.index for t in tasks] == list(range(8)) and sum(t.size for t in tasks[3:7]) == 35


def simulated_load(file_sizes: list[int], ranks: int, task_bytes: int) -> float:
    tasks = plan_tasks([f"f{i}.jsonl" for i in range(len(file_sizes))], file_sizes, task_bytes)
    sizes = [t.size for t in tasks]
    return load_balance(sizes, assign_tasks(sizes, ranks), ranks)


def test_log_normal_file_sizes_on_2048_ranks_stay_within_1_2_of_the_mean() -> None:
    """1,000 files, log-normal sizes (median 1 GB, sigma 1.5: a few files of 30+ GB), 2,048 ranks."""
    rng = np.random.default_rng(0)
    sizes = [int(s) for s in rng.lognormal(mean=np.log(GB), sigma=1.5, size=1000)]
    assert max(sizes) > 20 * GB
    whole_files = simulated_load(sizes, 2048, task_bytes=1 << 50)  # one task per file, as before tasks existed
    assert whole_files > 3  # the balance a whole-file split cannot avoid
    assert simulated_load(sizes, 2048, task_bytes=128 << 20) <= 1.2  # the default read.task_bytes


def test_assignment_is_deterministic_and_uses_every_rank() -> None:
    sizes = [5, 1, 9, 3, 3, 7, 2]
    owners = assign_tasks(sizes, 3)
    assert owners == assign_tasks(sizes, 3) and set(owners) == {0, 1, 2}
    assert load_balance(sizes, owners, 3) <= 11 / (30 / 3)
    assert Task(0, "x").describe() == "x" and Task(1, "x", 0, 8, 8).describe() == "x bytes 0-8"
