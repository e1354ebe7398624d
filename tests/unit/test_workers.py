"""executor.workers_for_rank: the one worker count (dedup pool, MinHash threads, tokenizer encoding threads)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from data_pipeline.dedup.minhash import compute_signatures
from data_pipeline.executor import workers_for_rank


@pytest.mark.parametrize(
    "setting, usable, node, ranks, want",
    [
        (3, 64, 64, 8, 3),  # an explicit setting is taken as given
        (0, 16, 16, 1, 16),  # one rank on the node: every core
        (0, 16, 16, 4, 4),  # four ranks see all 16 cores: a quarter each
        (0, 16, 16, 5, 3),  # rounded down, never oversubscribed
        (0, 16, 16, 32, 1),  # more ranks than cores: still one
        (0, 6, 64, 8, 6),  # pinned by the launcher to 6 of 64 cores: those 6 are this rank's
    ],
)
def test_worker_count_from_setting_cores_and_ranks_on_the_node(setting, usable, node, ranks, want):
    assert workers_for_rank(setting, usable_cores=usable, node_cores=node, ranks_on_node=ranks) == want


def test_ranks_on_the_node_come_from_the_launcher(monkeypatch):
    """Two Open MPI ranks on one node share its cores (infra/launcher_env.py reads the launcher)."""
    launcher_vars = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS")
    for name in list(os.environ):
        if name in launcher_vars or name.startswith(("OMPI_", "PMI_", "PMIX_", "SLURM_")):
            monkeypatch.delenv(name)
    assert workers_for_rank(0, usable_cores=8, node_cores=8) == 8
    for name, value in {
        "OMPI_COMM_WORLD_RANK": "1",
        "OMPI_COMM_WORLD_SIZE": "2",
        "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
    }.items():
        monkeypatch.setenv(name, value)
    assert workers_for_rank(0, usable_cores=8, node_cores=8) == 4


def test_a_negative_setting_is_refused():
    with pytest.raises(ValueError, match=r">= 0 .*got -1"):
        workers_for_rank(-1)


def test_minhash_counts_workers_the_same_way():
    with pytest.raises(ValueError, match="got -2"):
        compute_signatures(["a b c d e f"], num_perm=8, workers=-2)
    texts = [f"document {i} " * 5 for i in range(300)]
    assert np.array_equal(
        compute_signatures(texts, num_perm=8, workers=0), compute_signatures(texts, num_perm=8, workers=1)
    )
