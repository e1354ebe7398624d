"""Phase 4 of the dedup stage: kept/ per task, streaming, and this rank's clusters into dedup/clusters.jsonl.

Each task's documents are streamed from the file its scan wrote (stages/task_documents.py: the input is not read
again, a web page not extracted again) and those that passed and were not removed go to kept/part-NNNNN.jsonl;
each task has its own marker, which records the removals it applied. The clusters a rank owns are written by that rank
into its byte ranges of dedup/clusters.jsonl (task order, then exact before near, then kept index).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from pathlib import Path

import numpy as np

from data_pipeline import drop_log
from data_pipeline.dedup import clusters as dedup_clusters
from data_pipeline.errors import PipelineError
from data_pipeline.progress import stage_progress
from data_pipeline.stages.duplicates import GlobalIndex, Removals
from data_pipeline.stages.execution import run_once
from data_pipeline.stages.outputs import (
    CLUSTERS,
    DROPPED_DIR,
    KEPT_DIR,
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


def write_clusters(
    job: DedupJob, plan: Plan, index: GlobalIndex, removals: Removals, removed: dict[int, dict[str, np.ndarray]]
) -> list[dict]:
    """This rank's cluster records with ids, written into its byte ranges of clusters.jsonl; returns the records.

    Collective: cluster_records_with_ids (ids travel to the ranks owning the clusters), an allgather of piece
    sizes, and two barriers around the writes (the sized file exists; every rank's bytes are on disk).
    """
    comm, clusters = job.comm, removals.clusters
    kept = np.array([c["kept"] for c in clusters], np.int64)
    kept_task = index.task_of(kept).tolist() if len(kept) else []
    order = sorted(range(len(clusters)), key=lambda k: (kept_task[k], clusters[k]["kind"] != "exact", int(kept[k])))
    clusters, tasks = [clusters[k] for k in order], [kept_task[k] for k in order]
    members = np.unique(np.array([i for c in clusters for i in [c["kept"], *c["removed"]]], np.int64))
    mine = members[index.owner_of(members) == comm.rank] if len(members) else members
    mine_removed = [index.base[t] + o for t, parts in removed.items() for o in parts.values()]
    mine = np.union1d(mine, np.concatenate([np.zeros(0, np.int64), *mine_removed]))
    bare = [{k: c[k] for k in ("kept", "removed", "similarity") if k in c} for c in clusters]
    records = dedup_clusters.cluster_records_with_ids(comm, bare, mine, ids_of(job, plan, index, mine), index.owner_of)
    records = [
        {"kind": c["kind"], **index.dataset_of(t), **r} for c, t, r in zip(clusters, tasks, records, strict=True)
    ]
    lines: dict[int, list[dict]] = {}
    for task, record in zip(tasks, records, strict=True):
        lines.setdefault(task, []).append(record)
    pieces = {task: jsonl_bytes(task_records) for task, task_records in lines.items()}
    sizes = {i: n for part in comm.allgather({t: len(b) for t, b in pieces.items()}) for i, n in part.items()}
    offsets, total = piece_offsets(sizes)
    path = job.out / CLUSTERS
    with atomic_write(path, "wb") if comm.rank == 0 else contextlib.nullcontext() as whole:
        if whole is not None:  # rank 0 holds the atomic write; every rank writes its pieces into its temp file
            whole.truncate(total)
        comm.barrier()
        write_at_offsets(path, pieces, offsets)
        comm.barrier()
    return records


def ids_of(job: DedupJob, plan: Plan, index: GlobalIndex, indices: np.ndarray) -> list[str]:
    """Ids of these global indices of this rank's documents (sorted), read from the tasks' ids files."""
    ids: list[str] = []
    tasks = index.task_of(indices)
    for task in np.unique(tasks):
        ordinals = indices[tasks == task] - index.base[task]
        if task >= index.new_tasks:  # an earlier dataset's document (--against), read from its index
            ids += index.earlier[task - index.new_tasks].ids(ordinals)
        else:
            ids += TaskWork(job.out, plan.tasks[task]).ids(ordinals)
    return ids


def piece_offsets(sizes: dict[int, int]) -> tuple[dict[int, int], int]:
    """Each task's byte offset in the file (task order), and the file's size."""
    offsets, total = {}, 0
    for task in sorted(sizes):
        offsets[task], total = total, total + sizes[task]
    return offsets, total


def write_at_offsets(path: Path, pieces: dict[int, bytes], offsets: dict[int, int]) -> None:
    """pwrite this rank's pieces into the temporary file of `path` and fsync them (each writer's own: on a shared
    file system rank 0's fsync covers its node only)."""
    try:
        with open(temp_path(path), "r+b") as f:
            for task, data in pieces.items():
                os.pwrite(f.fileno(), data, offsets[task])
            os.fsync(f.fileno())
    except OSError as err:
        raise write_error(path, err) from err
