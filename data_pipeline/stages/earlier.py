"""The earlier datasets of `pipeline dedup --against DIR`: their dedup indexes opened and checked, and each rank's
share of them read.

An earlier dataset is never rescanned: its `dedup/index/` (data_pipeline/dedup/index.py) holds the exact keys,
signatures and ids of its kept documents, one folder per task. Its tasks are spread over the ranks by document
count (`assign_tasks`, as the input tasks are by bytes); each rank reads only its own and routes their rows to
the key and band owners like its new documents' (dedup/earlier.py). Their signatures stay in the index files
(dedup/signature_files.py: band keys written per band under the run's dedup/work/, rows read per batch of
pairs). Nothing in an earlier dataset is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_pipeline.comm import Comm, on_root
from data_pipeline.config import PipelineConfig
from data_pipeline.dedup.index import IndexTask, manifest_path, open_index
from data_pipeline.dedup.lsh import LSHParams
from data_pipeline.dedup.signature_files import SignatureFiles
from data_pipeline.errors import PipelineError
from data_pipeline.tasks import assign_tasks
from infra.files import file_sha256


@dataclass(frozen=True)
class Earlier:
    """The earlier datasets' index tasks in --against order, and each manifest's sha256 (the stage identity)."""

    tasks: list[IndexTask]
    manifests: dict[str, str]

    def owners(self, size: int) -> list[int]:
        """The rank reading each index task: by document count, largest first onto the least loaded rank."""
        return assign_tasks([t.docs for t in self.tasks], size)


def open_earlier(comm: Comm, datasets: list[str], recipe: PipelineConfig, output_dir: Path) -> Earlier:
    """Rank 0 opens every earlier dataset's index and checks its hash settings; every rank gets the result.

    Collective: on_root (an error is raised on every rank).
    """
    return on_root(comm, "opening the --against datasets", lambda: _open_all(datasets, recipe, output_dir))


def _open_all(datasets: list[str], recipe: PipelineConfig, output_dir: Path) -> Earlier:
    tasks: list[IndexTask] = []
    manifests: dict[str, str] = {}
    for dataset in map(Path, datasets):
        if dataset.resolve() == Path(output_dir).resolve():
            raise PipelineError(f"--against {dataset} is the --output folder; write the new dataset to a new folder")
        tasks += open_index(dataset, recipe.section("dedup"))
        manifests[str(dataset)] = file_sha256(manifest_path(dataset))
    return Earlier(tasks, manifests)


@dataclass(frozen=True)
class EarlierShare:
    """This rank's earlier documents: their global indices (after the new documents') and index tasks."""

    doc_index: np.ndarray
    tasks: list[IndexTask]

    def keys(self) -> np.ndarray:
        return np.concatenate([t.keys() for t in self.tasks] or [np.zeros((0, 2), np.uint64)])

    def spilled_signatures(self, params: LSHParams, folder: Path) -> SignatureFiles:
        """The share's signatures left in the index files, their band keys written to `folder` for this run (the
        caller `close`s it), as the new documents' are (stages/duplicates.py `spilled_signatures`)."""
        paths = [t.path("signatures.u32") for t in self.tasks]
        return SignatureFiles.spill(paths, np.ones(len(self.doc_index), bool), params, folder)


def earlier_share(tasks: list[IndexTask], base: np.ndarray, owners: np.ndarray, rank: int) -> EarlierShare:
    """The index tasks `rank` reads; base and owners are those of the earlier tasks in the global index."""
    mine = [j for j in range(len(tasks)) if owners[j] == rank]
    parts = [base[j] + np.arange(tasks[j].docs, dtype=np.int64) for j in mine]
    return EarlierShare(np.concatenate(parts or [np.zeros(0, np.int64)]), [tasks[j] for j in mine])
