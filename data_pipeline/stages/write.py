"""Phase 4 of the dedup stage: kept/ per task, streaming, and this rank's clusters into dedup/clusters.jsonl.

Each task's documents are streamed from the file its scan wrote (stages/task_documents.py: the input is not read
again, a web page not extracted again) and those that passed and were not removed go to kept/part-NNNNN.jsonl;
each task has its own marker, which records the removals it applied. The clusters a rank owns are written by that rank
into its byte ranges of dedup/clusters.jsonl (task order, then exact before near, then kept index), streamed from
their packed arrays (stages/cluster_lines.py) with the member ids fetched in bounded rounds.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from data_pipeline import drop_log
from data_pipeline.dedup import clusters as dedup_clusters
from data_pipeline.errors import PipelineError
from data_pipeline.progress import stage_progress
from data_pipeline.stages.cluster_lines import ClusterLines
from data_pipeline.stages.duplicates import GlobalIndex, Removals
from data_pipeline.stages.execution import run_once
from data_pipeline.stages.outputs import (
    CLUSTERS,
    DROPPED_DIR,
    KEPT_DIR,
    WORK_DIR,
    HashedFile,
    jsonl_bytes,
    part_name,
    write_error,
    write_json_atomic,
)
from data_pipeline.stages.plan import DedupJob, Plan, task_stage
from data_pipeline.stages.scan import BATCH_DOCS, TaskWork
from data_pipeline.stages.task_documents import DOCS, read_task_documents
from data_pipeline.tasks import Task
from infra.files import atomic_write, file_sha256, temp_path

READ_BLOCK = 1 << 20  # bytes per read of an ids file or copy from the spool


def write_kept(job: DedupJob, plan: Plan, removed: dict[int, dict[str, np.ndarray]]) -> dict[str, str]:
    """Rewrite the kept part of every task of this rank whose marker does not record these removals; returns
    {kept or dropped part: sha256}."""
    hashes: dict[str, str] = {}
    with stage_progress("write kept", sum(t.size for t in plan.mine), job.quiet) as bar:
        for task in plan.mine:
            dropped = removed[task.index]
            applied = {reason: hashlib.sha256(o.tobytes()).hexdigest() for reason, o in dropped.items()}
            identity = plan.task_identity(job, "write", task, applied)
            write_one = functools.partial(write_task, job, task, np.concatenate(list(dropped.values())))
            written, _ = run_once(job.out, task_stage("write", task), identity, write_one)
            hashes.update({k: v for k, v in written.items() if k.startswith((KEPT_DIR, DROPPED_DIR))})
            bar.update(0, task.size)
    return hashes


def write_task(job: DedupJob, task: Task, removed: np.ndarray) -> dict[str, str]:
    """Stream the task's scanned documents; those that passed the filters and were not removed go to its kept
    part, and those a filter dropped to its drop log (id, source, rule, measured value: DIR/dropped/)."""
    out = job.out
    work = TaskWork(out, task)
    verdicts, removed_set = work.verdicts(), set(np.asarray(removed).tolist())
    values, rules = np.fromfile(work.path("value.f64"), np.float64), work.meta()["filter_reasons"]
    kept_file, kept = HashedFile(out / KEPT_DIR / part_name(task.index)), 0
    dropped_path = drop_log.part_path(out, f"part-{task.index:05d}")
    docs = read_task_documents(work.path(DOCS))
    read = 0
    with kept_file, drop_log.DropLog(dropped_path) as dropped:
        batch: list[dict] = []
        for ordinal, doc in enumerate(docs):
            read += 1
            if ordinal >= len(verdicts):
                continue
            if verdicts[ordinal]:
                dropped.add(doc.id, doc.source, rules[verdicts[ordinal] - 1], values[ordinal], doc.text)
            elif ordinal not in removed_set:
                batch.append(doc.to_record())
                if len(batch) == BATCH_DOCS:
                    kept_file.write(jsonl_bytes(batch))
                    kept, batch = kept + len(batch), []
        kept_file.write(jsonl_bytes(batch))
        kept += len(batch)
        if read != len(verdicts):  # inside the block: the half-written part is removed, no marker follows
            raise PipelineError(
                f"{work.path(DOCS)}: holds {read} documents but the scan of {task.describe()} judged "
                f"{len(verdicts)}; the work folder was changed during the run: rerun in a new --output folder"
            )
    written = {kept_file.path: kept_file.sha256, dropped_path: file_sha256(dropped_path)}
    summary_file = work.path("kept.json")
    written[summary_file] = write_json_atomic(summary_file, {"kept_docs": kept, "examples": dropped.examples})
    return {str(p.relative_to(out)): sha for p, sha in written.items()}


def write_clusters(job: DedupJob, plan: Plan, index: GlobalIndex, removals: Removals) -> dict:
    """This rank's clusters, streamed into its byte ranges of clusters.jsonl; returns their summary for rank 0
    (`ClusterLines.summary`).

    The lines go to a spool file (unnamed, in dedup/work/) as the member ids arrive, ROUND_MEMBERS per round from
    the ranks holding them; then each task's piece is copied from the spool to its offset in the file. Memory: the
    packed clusters and one round of ids, whatever the size of a cluster.

    Collective: an allgather of round counts, two alltoalls per round (fetch_ids; every rank takes part in as
    many rounds as the busiest), an allgather of piece sizes, and two barriers around the copies (the sized file
    exists; every rank's bytes are on disk).
    """
    comm, path = job.comm, job.out / CLUSTERS
    lines, ids = ClusterLines(removals.clusters, index), TaskIds(job, plan, index)
    rounds = max(comm.allgather(lines.rounds()))
    with tempfile.TemporaryFile(dir=job.out / WORK_DIR) as spool:
        for round_ in range(rounds):
            found = dedup_clusters.fetch_ids(comm, lines.members(round_), index.owner_of, ids.json_ids)
            with naming_write_errors(path):
                lines.write(round_, found, spool)
        with naming_write_errors(path):
            spool.flush()
        pieces = lines.pieces(spool.tell())
        sizes = {i: n for part in comm.allgather({t: n for t, (_, n) in pieces.items()}) for i, n in part.items()}
        offsets, total = piece_offsets(sizes)
        with atomic_write(path, "wb") if comm.rank == 0 else contextlib.nullcontext() as whole:
            if whole is not None:  # rank 0 holds the atomic write; every rank copies its pieces into its temp file
                whole.truncate(total)
            comm.barrier()
            copy_pieces(spool, pieces, path, offsets)
            comm.barrier()
    return lines.summary()


class TaskIds:
    """The ids of this rank's documents at any global indices, read from their tasks' ids.jsonl (the scan's, or an
    earlier dataset's index), one JSON string a line. Each file's line offsets (8 bytes a document) are found on
    its first use, so a round reads only the lines it asks for, however many rounds there are."""

    def __init__(self, job: DedupJob, plan: Plan, index: GlobalIndex) -> None:
        self.job, self.plan, self.index = job, plan, index
        self.offsets: dict[int, np.ndarray] = {}  # task -> its lines' byte offsets, the file's size last

    def json_ids(self, indices: np.ndarray) -> bytes:
        """The ids of these global indices (ascending, each once) as newline-ended JSON texts, not ASCII-escaped
        (as clusters.jsonl has them; ids.jsonl's lines are, and differ from that only by \\u escapes)."""
        tasks = self.index.task_of(indices)
        found = b"".join(
            read_lines(self.path(task), self.line_offsets(task), indices[tasks == task] - self.index.base[task])
            for task in np.unique(tasks).tolist()
        )
        if b"\\u" not in found:
            return found
        return b"".join(json.dumps(json.loads(i), ensure_ascii=False).encode() + b"\n" for i in found.split(b"\n")[:-1])

    def path(self, task: int) -> Path:
        if task >= self.index.new_tasks:  # an earlier dataset's document (--against), read from its index
            return self.index.earlier[task - self.index.new_tasks].path("ids.jsonl")
        return TaskWork(self.job.out, self.plan.tasks[task]).path("ids.jsonl")

    def line_offsets(self, task: int) -> np.ndarray:
        if task not in self.offsets:
            self.offsets[task] = line_offsets(self.path(task))
        return self.offsets[task]


def line_offsets(path: Path) -> np.ndarray:
    """Byte offset (int64) of each line's start in a file of newline-ended lines, and the file's size last."""
    found, read = [np.zeros(1, np.int64)], 0
    with open(path, "rb") as f:
        while block := f.read(READ_BLOCK):
            found.append(np.flatnonzero(np.frombuffer(block, np.uint8) == ord("\n")).astype(np.int64) + read + 1)
            read += len(block)
    return np.concatenate(found)


def read_lines(path: Path, offsets: np.ndarray, ordinals: np.ndarray) -> bytes:
    """Lines `ordinals` (ascending, each once) of the file, concatenated: one read per READ_BLOCK of the file
    that holds any, the lines picked out of it with numpy (no Python object per line)."""
    starts, stops = offsets[ordinals], offsets[ordinals + 1]
    cuts = (np.flatnonzero(np.diff(starts // READ_BLOCK)) + 1).tolist()
    found = []
    with open(path, "rb") as f:
        for first, last in zip([0, *cuts], [*cuts, len(starts)], strict=True):
            begin = int(starts[first])
            block = np.frombuffer(os.pread(f.fileno(), int(stops[last - 1]) - begin, begin), np.uint8)
            edges = np.zeros(len(block) + 1, np.int8)  # +1 where a wanted line starts, -1 where it stops
            edges[starts[first:last] - begin] += 1
            edges[stops[first:last] - begin] -= 1
            found.append(block[np.cumsum(edges[:-1], dtype=np.int8) > 0].tobytes())
    return b"".join(found)


@contextlib.contextmanager
def naming_write_errors(path: Path) -> Iterator[None]:
    """An OSError inside (a full disk under the spool) raised as the error that names the file being written."""
    try:
        yield
    except OSError as err:
        raise write_error(path, err) from err


def piece_offsets(sizes: dict[int, int]) -> tuple[dict[int, int], int]:
    """Each task's byte offset in the file (task order), and the file's size."""
    offsets, total = {}, 0
    for task in sorted(sizes):
        offsets[task], total = total, total + sizes[task]
    return offsets, total


def copy_pieces(spool: BinaryIO, pieces: dict[int, tuple[int, int]], path: Path, offsets: dict[int, int]) -> None:
    """Copy each (spool offset, size) piece into the temporary file of `path` at its task's offset, a block at a
    time, and fsync (each writer's own: on a shared file system rank 0's fsync covers its node only)."""
    try:
        with open(temp_path(path), "r+b") as f:
            for task, (start, size) in pieces.items():
                for done in range(0, size, READ_BLOCK):
                    block = os.pread(spool.fileno(), min(READ_BLOCK, size - done), start + done)
                    os.pwrite(f.fileno(), block, offsets[task] + done)
            os.fsync(f.fileno())
    except OSError as err:
        raise write_error(path, err) from err
