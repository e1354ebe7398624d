"""Dedup against an earlier dataset (`--against`) keeps no signature in memory: its peak does not grow with them.

A scan's work files (20k new documents in two tasks) and an earlier dataset's index (40k documents in four tasks)
are written directly, with random signatures at num_perm 128: 30 MB of signatures, which the stage held in memory
before (every new one, every earlier one of the rank's share). `find_in_earlier` must find the planted duplicates
while its traced peak (tracemalloc counts numpy's buffers) stays under what it needs per document (exact keys and
rows, one band's keys and rows, indices and row numbers) plus one verification batch of the planted pairs.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np

from data_pipeline.comm import LocalComm
from data_pipeline.config import load_recipe
from data_pipeline.dedup.index import IndexTask, task_folder
from data_pipeline.dedup.signature_files import SPILL_BLOCK_ROWS
from data_pipeline.stages.duplicates import GlobalIndex, find_in_earlier, live_index
from data_pipeline.stages.plan import DedupJob
from data_pipeline.stages.scan import TaskWork
from data_pipeline.tasks import Task

# datasketch's bands at 0.8 and 128 permutations, given: its search imports scipy (~20 MiB of modules, 1.5 s)
RECIPE = ["filters.enabled=false", "dedup.num_perm=128", "dedup.bands=16", "dedup.rows=8"]
NUM_PERM, NEW_TASK_DOCS, EARLIER_TASK_DOCS = 128, 10_000, 10_000
EXACT, NEAR = 300, 700  # new documents planted as exact copies, then near copies, of earlier ones
ROW_BYTES = 4 * NUM_PERM
# What a document may cost at the peak, whatever its signature's size. The most is the exact step's: both sides'
# 16-byte keys, their 32-byte (key, key, side, index) rows, the sorted copy and its 8-byte order (88 B; a band
# costs less: 8-byte keys in 24-byte rows); the rest for the indices and row numbers held all along.
PER_DOCUMENT_BYTES = 128
# The spill's streaming read of SPILL_BLOCK_ROWS rows while the previous block and its live rows are still held.
SPILL_BYTES = 3 * SPILL_BLOCK_ROWS * ROW_BYTES


def write_earlier(dataset: Path, signatures: np.ndarray, keys: np.ndarray) -> list[IndexTask]:
    """An earlier dataset's index tasks (keys and signatures only: this phase reads nothing else of them)."""
    tasks = []
    for task, start in enumerate(range(0, len(signatures), EARLIER_TASK_DOCS)):
        folder = task_folder(dataset, task)
        folder.mkdir(parents=True)
        keys[start : start + EARLIER_TASK_DOCS].tofile(folder / "keys.u64")
        signatures[start : start + EARLIER_TASK_DOCS].tofile(folder / "signatures.u32")
        tasks.append(IndexTask(dataset, folder.name, EARLIER_TASK_DOCS))
    return tasks


def write_scan(out: Path, signatures: np.ndarray, keys: np.ndarray) -> list[Task]:
    """The scan's work files of the new documents, every one passed the filters."""
    tasks = []
    for index, start in enumerate(range(0, len(signatures), NEW_TASK_DOCS)):
        tasks.append(Task(index, f"new-{index}.jsonl"))
        work = TaskWork(out, tasks[-1])
        work.folder.mkdir(parents=True)
        np.zeros(NEW_TASK_DOCS, np.uint8).tofile(work.path("verdict.u8"))
        keys[start : start + NEW_TASK_DOCS].tofile(work.path("keys.u64"))
        signatures[start : start + NEW_TASK_DOCS].tofile(work.path("signatures.u32"))
    return tasks


def test_against_an_earlier_dataset_holds_no_signatures_in_memory(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    new_docs, earlier_docs = 2 * NEW_TASK_DOCS, 4 * EARLIER_TASK_DOCS
    earlier = rng.integers(0, 1 << 32, (earlier_docs, NUM_PERM), dtype=np.uint32)
    earlier_keys = rng.integers(0, 1 << 63, (earlier_docs, 2), dtype=np.uint64)
    new = rng.integers(0, 1 << 32, (new_docs, NUM_PERM), dtype=np.uint32)
    new_keys = rng.integers(0, 1 << 63, (new_docs, 2), dtype=np.uint64)
    copies, originals = rng.choice(new_docs, EXACT + NEAR, replace=False), rng.choice(earlier_docs, EXACT + NEAR)
    new[copies], new_keys[copies[:EXACT]] = earlier[originals], earlier_keys[originals[:EXACT]]
    new[copies[EXACT:], :6] += 1  # 6 of 128 values changed: an estimated Jaccard of 0.95, other text
    out, dataset = tmp_path / "out", tmp_path / "earlier"
    job = DedupJob(LocalComm(), out, load_recipe(None, RECIPE), True, {}, {str(dataset): ""})
    tasks, earlier_tasks = write_scan(out, new, new_keys), write_earlier(dataset, earlier, earlier_keys)
    index = GlobalIndex(np.array([NEW_TASK_DOCS] * 2 + [EARLIER_TASK_DOCS] * 4), [0] * 6, earlier_tasks)
    doc_index = live_index(job, tasks, index)
    signature_bytes = new.nbytes + earlier.nbytes
    del new, earlier, new_keys, earlier_keys

    tracemalloc.start()
    removals, _ = find_in_earlier(job, tasks, index, doc_index)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    assert len(removals.removed["exact_dup_earlier"]) == EXACT and len(removals.removed["near_dup_earlier"]) == NEAR
    assert np.array_equal(np.sort(np.concatenate(list(removals.removed.values()))), np.sort(copies))
    batch_bytes = 2 * NEAR * ROW_BYTES  # the one verification batch: each pair's two signatures
    bound = (new_docs + earlier_docs) * PER_DOCUMENT_BYTES + SPILL_BYTES + batch_bytes
    assert bound < signature_bytes / 2
    assert peak < bound, (
        f"peak {peak / 2**20:.1f} MiB, over {bound / 2**20:.1f} ({signature_bytes / 2**20:.1f} of signatures)"
    )
    assert not list((out / "dedup" / "work").glob("*bands-r*"))  # the band keys written for the run are removed
