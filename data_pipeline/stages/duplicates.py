"""Phase 3 of the dedup stage: dedup against earlier datasets (--against), then exact, then near dedup over all
ranks; each rank learns its own documents' fate.

A document's global index is its position among all documents in task order, so it does not depend on N. Each
rank loads the keys of its own tasks' documents and calls the dedup algorithms (dedup/exact.py, lsh.py,
clusters.py); it gets back the removals among its own documents and the clusters whose kept document it holds.
Near dedup reads the signatures from the scan's files (dedup/signature_files.py: band keys written to
dedup/work/bands-rNNNNN/ for the run, rows read per batch of pairs). Memory: 8 bytes of index, 16 of key (exact
dedup), 8 of priority and 8 of signature row number per document of the rank's share.

With --against, a new document that duplicates a kept document of an earlier dataset is removed first
(`exact_dup_earlier`, `near_dup_earlier`; dedup/earlier.py): earlier documents always win, and the new documents
left are deduplicated among themselves as usual. The earlier share's signatures stay in its index files, read the
same way (band keys in dedup/work/earlier-bands-rNNNNN/): 8 bytes of index, 16 of key and 8 of row number per
earlier document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_pipeline.config import PipelineConfig
from data_pipeline.dedup import clusters as dedup_clusters
from data_pipeline.dedup import earlier as earlier_dedup
from data_pipeline.dedup import exact as exact_dedup
from data_pipeline.dedup import lsh
from data_pipeline.dedup.index import IndexTask
from data_pipeline.dedup.signature_files import SignatureFiles
from data_pipeline.progress import summary
from data_pipeline.stages.earlier import Earlier, EarlierShare, earlier_share
from data_pipeline.stages.outputs import WORK_DIR
from data_pipeline.stages.plan import DedupJob, Plan
from data_pipeline.stages.scan import TaskWork
from data_pipeline.tasks import Task

REASONS = ("exact_dup_earlier", "near_dup_earlier", "exact_dup", "near_dup")


class GlobalIndex:
    """Global document indices: task order, then document order inside a task; the same for any N.

    With --against, the earlier datasets' index tasks follow the input tasks: an earlier document's global index
    is past every new one, and its holder is the rank reading its index task (`earlier`)."""

    def __init__(self, docs_per_task: np.ndarray, owners: list[int], earlier: list[IndexTask] = ()) -> None:
        self.docs = docs_per_task
        self.base = np.concatenate([[0], np.cumsum(docs_per_task)[:-1]]).astype(np.int64)
        self.task_owner = np.asarray(owners, np.int64)
        self.earlier = list(earlier)
        self.new_tasks = len(docs_per_task) - len(self.earlier)

    def task_of(self, index: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.base, np.asarray(index, np.int64), side="right") - 1

    def owner_of(self, index: np.ndarray) -> np.ndarray:
        """The rank holding each global index (vectorised): the dedup functions route by it."""
        return self.task_owner[self.task_of(index)]

    def dataset_of(self, task: int) -> dict[str, str]:
        """{"dataset": folder} for an earlier dataset's index task, {} for an input task (a cluster record's key)."""
        return {"dataset": str(self.earlier[task - self.new_tasks].dataset)} if task >= self.new_tasks else {}

    def earlier_share(self, rank: int) -> EarlierShare:
        """The earlier documents this rank holds (reads from their index)."""
        first = self.new_tasks
        return earlier_share(self.earlier, self.base[first:], self.task_owner[first:], rank)


def global_index(job: DedupJob, plan: Plan, earlier: Earlier | None = None) -> GlobalIndex:
    """Every task's document count from its owner (collective: allgather), as global indices, the earlier
    datasets' index tasks (if any) after them."""
    mine = {t.index: TaskWork(job.out, t).meta()["docs"] for t in plan.mine}
    merged = {i: n for part in job.comm.allgather(mine) for i, n in part.items()}
    docs = [merged[i] for i in range(len(plan.tasks))]
    if earlier is None:
        return GlobalIndex(np.array(docs, np.int64), plan.owners)
    docs += [t.docs for t in earlier.tasks]
    return GlobalIndex(np.array(docs, np.int64), plan.owners + earlier.owners(job.comm.size), earlier.tasks)


@dataclass
class Removals:
    """What dedup decided on this rank: its removed documents by reason, the clusters whose kept document it
    holds (flat arrays, one per kind in the order found), and near dedup's parameters and pair counts."""

    removed: dict[str, np.ndarray] = field(default_factory=lambda: {r: np.zeros(0, np.int64) for r in REASONS})
    clusters: list[dedup_clusters.PackedClusters] = field(default_factory=list)
    lsh: lsh.LSHParams | None = None
    pairs: dict[str, int] = field(default_factory=dict)

    def all_removed(self) -> np.ndarray:
        """Every document removed so far, for any reason."""
        return np.concatenate(list(self.removed.values()))

    def by_task(self, index: GlobalIndex, tasks: list[Task]) -> dict[int, dict[str, np.ndarray]]:
        """{task: {reason: ordinals inside the task}} for these tasks (empty arrays where nothing was removed)."""
        split = {reason: _split_by_task(index, removed) for reason, removed in self.removed.items()}
        empty = np.zeros(0, np.int64)
        return {t.index: {reason: parts.get(t.index, empty) for reason, parts in split.items()} for t in tasks}


def _split_by_task(index: GlobalIndex, removed: np.ndarray) -> dict[int, np.ndarray]:
    """Sorted global indices -> {task: ordinals inside the task}."""
    removed = np.sort(np.asarray(removed, np.int64))
    tasks = index.task_of(removed)
    return {int(t): removed[tasks == t] - index.base[t] for t in np.unique(tasks)}


def lsh_params(recipe: PipelineConfig) -> lsh.LSHParams:
    cfg = recipe.dedup
    return lsh.LSHParams.from_threshold(cfg.threshold, cfg.num_perm, bands=cfg.bands, rows=cfg.rows)


def find_duplicates(job: DedupJob, plan: Plan, index: GlobalIndex) -> Removals:
    """Dedup against the earlier datasets (--against), then exact, then near dedup over this rank's live
    documents still alive.

    Collective: find_in_earlier (with --against), find_exact_duplicates and find_near_duplicates on every
    rank, each followed by two allreduces for its summary line.
    """
    cfg, comm, tasks = job.recipe.dedup, job.comm, plan.mine
    doc_index = live_index(job, tasks, index)
    lengths = np.concatenate([TaskWork(job.out, t).lengths() for t in tasks] or [np.zeros(0, np.int64)])
    priority = dedup_clusters.keep_priority(lengths, cfg.keep)
    del lengths
    removals, packed = Removals(), []
    if index.earlier:
        removals, packed = find_in_earlier(job, tasks, index, doc_index)
    if cfg.exact:
        alive = ~np.isin(doc_index, removals.all_removed())
        keys = live_keys(job, tasks)[alive]
        result = exact_dedup.find_exact_duplicates(comm, doc_index[alive], keys, priority[alive], index.owner_of)
        del keys, alive
        removals.removed["exact_dup"] = np.asarray(result.removed, np.int64)
        packed.append(result.clusters)
        del result
        removed = comm.allreduce_sum(len(removals.removed["exact_dup"]))
        clusters = comm.allreduce_sum(len(packed[-1].kept))
        summary(f"exact dedup: {removed} documents removed in {clusters} clusters", job.quiet)
    if cfg.near:
        removals.lsh = lsh_params(job.recipe)
        summary(f"near dedup: {removals.lsh.describe()}", job.quiet)
        alive = ~np.isin(doc_index, removals.all_removed())
        doc_index, priority = doc_index[alive], priority[alive]  # the full arrays are not needed any more
        with spilled_signatures(job, tasks, alive, removals.lsh) as signatures:
            del alive
            result = lsh.find_near_duplicates(
                comm, doc_index, signatures, removals.lsh, cfg.verify_threshold, priority, index.owner_of
            )
        del doc_index, priority
        removals.removed["near_dup"] = np.asarray(result.removed, np.int64)
        packed.append(result.clusters)
        removals.pairs |= {"candidate_pairs": int(result.candidate_pairs), "verified_pairs": int(result.verified_pairs)}
        removed = comm.allreduce_sum(len(removals.removed["near_dup"]))
        clusters = comm.allreduce_sum(len(packed[-1].kept))
        summary(f"near dedup: {removed} documents removed in {clusters} clusters", job.quiet)
    removals.clusters = packed
    return removals


def find_in_earlier(
    job: DedupJob, tasks: list[Task], index: GlobalIndex, doc_index: np.ndarray
) -> tuple[Removals, list[dedup_clusters.PackedClusters]]:
    """This rank's live documents that duplicate a kept document of an earlier dataset: exactly (when
    dedup.exact), then near (when dedup.near) among the rest. Reads only this rank's share of the earlier index.

    Collective: find_exact_in_earlier and find_near_in_earlier on every rank, two allreduces for the summary.
    """
    cfg, comm = job.recipe.dedup, job.comm
    share = index.earlier_share(comm.rank)
    removals, packed = Removals(), []
    if cfg.exact:
        result = earlier_dedup.find_exact_in_earlier(
            comm, doc_index, live_keys(job, tasks), share.doc_index, share.keys(), index.owner_of
        )
        removals.removed["exact_dup_earlier"] = result.removed
        packed.append(result.clusters)
    if cfg.near:
        alive = ~np.isin(doc_index, removals.all_removed())
        params = lsh_params(job.recipe)
        bound = lsh.verify_bound(params) if cfg.verify_threshold is None else float(cfg.verify_threshold)
        with (
            spilled_signatures(job, tasks, alive, params) as signatures,
            share.spilled_signatures(params, band_folder(job, "earlier-bands")) as earlier_signatures,
        ):
            result = earlier_dedup.find_near_in_earlier(
                comm, doc_index[alive], signatures, share.doc_index, earlier_signatures, params, bound, index.owner_of
            )
        removals.removed["near_dup_earlier"] = result.removed
        packed.append(result.clusters)
        removals.pairs = {"earlier_candidate_pairs": result.candidate_pairs,
                          "earlier_verified_pairs": result.verified_pairs}  # fmt: skip
    exact, near = (comm.allreduce_sum(len(removals.removed[r])) for r in ("exact_dup_earlier", "near_dup_earlier"))
    summary(f"against {len(job.against)} earlier dataset(s) of {int(index.docs[index.new_tasks:].sum())} "
            f"documents: {exact} exact and {near} near duplicates of them removed", job.quiet)  # fmt: skip
    return removals, packed


def live_keys(job: DedupJob, tasks: list[Task]) -> np.ndarray:
    """Exact keys of this rank's live documents, in task order."""
    return np.concatenate([TaskWork(job.out, t).keys() for t in tasks] or [np.zeros((0, 2), np.uint64)])


def live_index(job: DedupJob, tasks: list[Task], index: GlobalIndex) -> np.ndarray:
    """Global indices of this rank's documents that passed the filters, in task order."""
    parts = [index.base[t.index] + np.flatnonzero(TaskWork(job.out, t).verdicts() == 0) for t in tasks]
    return np.concatenate(parts or [np.zeros(0, np.int64)]).astype(np.int64)


def spilled_signatures(job: DedupJob, tasks: list[Task], alive: np.ndarray, params: lsh.LSHParams) -> SignatureFiles:
    """Signatures of the live documents still alive, left in the scan's files; their band keys written for this
    run (removed when the caller closes it)."""
    paths = [TaskWork(job.out, t).path("signatures.u32") for t in tasks]
    return SignatureFiles.spill(paths, alive, params, band_folder(job, "bands"))


def band_folder(job: DedupJob, name: str) -> Path:
    """This rank's folder of band keys `name` under dedup/work/: a killed run's is overwritten by the next run's,
    and removed with the work files (dedup.keep_work=false)."""
    return job.out / WORK_DIR / f"{name}-r{job.comm.rank:05d}"
