"""The dedup functions the stage driver calls, in the shape agreed in notes/INTERFACES.md.

    find_exact_duplicates(comm, doc_index, hashes, priority, owner_of) -> DedupResult
    find_near_duplicates(comm, doc_index, signatures, params, verify_threshold, priority, owner_of) -> DedupResult
    keep_priority(lengths, rule) -> int64 priorities
    cluster_records_with_ids(comm, clusters, doc_index, doc_ids, owner_of) -> this rank's records with ids

`DedupResult.removed` holds this rank's removed documents; `clusters` only the clusters this rank owns (the rank
holding the kept document). When exact_dedup.py / lsh.py provide these functions (owner_of in their signature)
they are called directly. Until then this module adapts the earlier functions, which keep the lowest global
index and return every cluster on rank 0: rank 0 sends each cluster to its owner. That adapter is the one place
left that routes through rank 0; it disappears when the distributed functions land.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np

from data_pipeline import exact_dedup, lsh
from data_pipeline.comm import LocalComm

OwnerOf = Callable[[np.ndarray], np.ndarray]


def _distributed(fn: Callable) -> bool:
    return "owner_of" in inspect.signature(fn).parameters


def keep_priority(lengths: np.ndarray, rule: str) -> np.ndarray:
    """Lower priority wins a cluster (ties: lower global index). "first": input order; "longest": longest text."""
    own = getattr(exact_dedup, "keep_priority", None)
    if own is not None:
        return own(lengths, rule)
    if rule != "first":
        raise ValueError(f"dedup.keep={rule!r} needs the distributed dedup functions; use 'first'")
    return np.zeros(len(lengths), np.int64)


def _owned_clusters(comm: LocalComm, clusters: list[dict], owner_of: OwnerOf) -> list[dict]:
    """Rank 0's complete cluster list split so each rank gets the clusters whose kept document it holds."""
    outgoing: list[list[dict]] = [[] for _ in range(comm.size)]
    if comm.rank == 0 and clusters:
        owners = owner_of(np.array([c["kept"] for c in clusters], np.int64))
        for cluster, owner in zip(clusters, owners.tolist(), strict=True):
            outgoing[owner].append(cluster)
    received = comm.alltoall(outgoing)
    return [c for part in received for c in part]


def find_exact_duplicates(comm, doc_index, hashes, priority, owner_of):
    fn = exact_dedup.find_exact_duplicates
    if _distributed(fn):
        return fn(comm, doc_index, hashes, priority, owner_of)
    result = fn(comm, doc_index, hashes)
    result.clusters = _owned_clusters(comm, result.clusters or [], owner_of)
    return result


def find_near_duplicates(comm, doc_index, signatures, params, verify_threshold, priority, owner_of):
    fn = lsh.find_near_duplicates
    if _distributed(fn):
        return fn(comm, doc_index, signatures, params, verify_threshold, priority, owner_of)
    result = fn(comm, doc_index, signatures, params, verify_threshold=verify_threshold)
    result.clusters = _owned_clusters(comm, result.clusters or [], owner_of)
    return result


def cluster_records_with_ids(comm, clusters, doc_index, doc_ids, owner_of) -> list[dict]:
    """This rank's cluster records with ids in place of global indices, in the order of `clusters`."""
    own = getattr(exact_dedup, "cluster_records_with_ids", None) or getattr(lsh, "cluster_records_with_ids", None)
    if own is not None:
        return own(comm, clusters, doc_index, doc_ids, owner_of)
    wanted = np.unique(np.array([i for c in clusters for i in [c["kept"], *c["removed"]]], np.int64))
    owners = owner_of(wanted) if len(wanted) else np.zeros(0, np.int64)
    asks = comm.alltoall([wanted[owners == r].tolist() for r in range(comm.size)])
    position = {int(i): k for k, i in enumerate(np.asarray(doc_index).tolist())}
    answers = comm.alltoall([[doc_ids[position[i]] for i in ask] for ask in asks])
    ids = {
        i: doc_id for r in range(comm.size) for i, doc_id in zip(wanted[owners == r].tolist(), answers[r], strict=True)
    }
    return [
        {"kept": ids[int(c["kept"])], "removed": [ids[int(i)] for i in c["removed"]],
         "similarity": [round(float(s), 4) for s in c.get("similarity", [1.0] * len(c["removed"]))]}
        for c in clusters
    ]  # fmt: skip
