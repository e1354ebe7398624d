"""Phase 4b of the dedup stage: this dataset's dedup index (data_pipeline/dedup/index.py), for later runs'
`--against`.

Per task, behind its own marker (which records the removals it applied, like kept/), the exact keys, signatures
and ids of the task's kept documents are copied out of the scan's work files into DIR/dedup/index/t-NNNNN/, in
kept/ order; then rank 0 writes the manifest with every task's document count.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil

import numpy as np

from data_pipeline.comm import on_root
from data_pipeline.dedup.index import INDEX_DIR, index_settings, manifest, manifest_path, task_folder
from data_pipeline.stages.execution import run_once
from data_pipeline.stages.outputs import HashedFile, write_json_atomic
from data_pipeline.stages.plan import DedupJob, Plan, task_stage
from data_pipeline.stages.scan import TaskWork
from data_pipeline.tasks import Task


def write_index(job: DedupJob, plan: Plan, removed: dict[int, dict[str, np.ndarray]]) -> dict[str, str]:
    """Write the index task of every task of this rank whose marker does not record these removals, then the
    manifest; returns {index file: sha256} (rank 0's include the manifest).

    Collective: an allgather of the tasks' document counts, and rank 0 writing the manifest (on_root).
    """
    hashes: dict[str, str] = {}
    for task in plan.mine:
        dropped = np.concatenate(list(removed[task.index].values()))
        applied = hashlib.sha256(np.sort(dropped).tobytes()).hexdigest()
        identity = plan.task_identity(job, "index", task, applied)
        written, _ = run_once(job.out, task_stage("index", task), identity,
                              functools.partial(write_index_task, job, task, dropped))  # fmt: skip
        hashes |= written
    counts = {t.index: task_folder(job.out, t.index).joinpath("keys.u64").stat().st_size // 16 for t in plan.mine}
    docs = {i: n for part in job.comm.allgather(counts) for i, n in part.items()}
    written = on_root(job.comm, "writing the dedup index manifest", lambda: write_manifest(job, plan, docs))
    return hashes | (written if job.comm.rank == 0 else {})


def write_index_task(job: DedupJob, task: Task, removed: np.ndarray) -> dict[str, str]:
    """The keys, signatures and ids of the task's documents that passed the filters and were not removed."""
    work, folder = TaskWork(job.out, task), task_folder(job.out, task.index)
    live = np.flatnonzero(work.verdicts() == 0)
    kept = ~np.isin(live, removed)
    num_perm = job.recipe.dedup.num_perm if job.recipe.dedup.near else 0
    signatures = np.fromfile(work.path("signatures.u32"), np.uint32).reshape(len(live), num_perm)
    ids = work.ids(live[kept])
    contents = {
        "keys.u64": np.ascontiguousarray(work.keys()[kept]).tobytes(),
        "signatures.u32": np.ascontiguousarray(signatures[kept]).tobytes(),
        "ids.jsonl": "".join(json.dumps(i) + "\n" for i in ids).encode("utf-8"),
    }
    written = {}
    for name, data in contents.items():
        with HashedFile(folder / name) as f:
            f.write(data)
        written[str(f.path.relative_to(job.out))] = f.sha256
    return written


def write_manifest(job: DedupJob, plan: Plan, docs: dict[int, int]) -> dict[str, str]:
    """Rank 0: the manifest, after removing index folders of an earlier plan with more tasks."""
    for stale in (job.out / INDEX_DIR).glob("t-*"):
        if int(stale.name[2:]) >= len(plan.tasks):
            shutil.rmtree(stale)
    dedup = job.recipe.section("dedup")
    content = manifest(index_settings(dedup), bool(dedup["near"]), [docs[i] for i in range(len(plan.tasks))])
    path = manifest_path(job.out)
    return {str(path.relative_to(job.out)): write_json_atomic(path, content)}
