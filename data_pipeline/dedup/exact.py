"""Exact deduplication: of byte-identical texts only the lowest-ranked one is kept (`dedup.keep`; default: the first).

`exact_text_hash` is xxh3_128 of the UTF-8 text exactly as read (no normalisation: "exact" means identical
bytes; near-identical texts are the MinHash stage's job). It returns a (2,) uint64 array (high, low 64 bits) so
many hashes stack into one (n, 2) array that travels between MPI ranks as raw buffers. At 128 bits, a false
match among 10^12 documents has probability ~10^-15.

Distributed: each rank routes its rows (hash_high, hash_low, rank key, global index) to the rank owning that
range of hash_high values (`key_owner`); owners sort and find runs of equal hashes, keep each run's lowest-ranked
member, send each removal only to the rank holding that document (`owner_of`) and each (kept, removed) row to the
rank holding the kept one, which owns the cluster record. `DedupResult` is shared with the near-duplicate stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import xxhash

from data_pipeline.comm import Comm
from data_pipeline.dedup.clusters import (
    Exchange,
    OwnerOf,
    PackedClusters,
    gather_clusters,
    key_owner,
    rank_key,
    run_starts,
)

__all__ = [
    "DedupResult",
    "exact_text_hash",
    "exact_text_hashes",
    "find_exact_duplicates",
]


@dataclass
class DedupResult:
    """What a dedup step decided, as seen by one rank."""

    removed: np.ndarray  # int64: global indices of THIS rank's documents that are removed (nothing else), ascending
    clusters: PackedClusters  # only the clusters whose kept document this rank holds
    candidate_pairs: int = 0  # global totals, identical on every rank
    verified_pairs: int = 0
    largest_cluster: int = 0  # documents in the biggest cluster anywhere (kept + removed); 0 when none
    rounds: int = 0  # exchange rounds the keeper selection took (near dedup)
    received_bytes: dict[str, int] = field(default_factory=dict)  # what this rank received, per phase


def exact_text_hash(text: str) -> np.ndarray:
    """xxh3_128 of the UTF-8 text as a (2,) uint64 array: [high 64 bits, low 64 bits]."""
    digest = xxhash.xxh3_128_intdigest(text.encode("utf-8"))
    return np.array([digest >> 64, digest & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64)


def exact_text_hashes(texts: list[str]) -> np.ndarray:
    """(n, 2) uint64 hashes of many texts."""
    # xxh3_128_digest is the canonical big-endian form: [high 64 bits, low 64 bits] per text
    digests = b"".join(xxhash.xxh3_128_digest(text.encode("utf-8")) for text in texts)
    return np.frombuffer(digests, dtype=">u8").astype(np.uint64).reshape(-1, 2)


def check_inputs(
    comm: Comm, doc_index: np.ndarray, priority: np.ndarray | None, owner_of: OwnerOf | None, where: str
) -> tuple[np.ndarray, np.ndarray, OwnerOf]:
    """doc_index as int64, priority (default: input order) and owner_of (default only on one rank), checked."""
    doc_index = np.asarray(doc_index, dtype=np.int64)
    priority = np.zeros(len(doc_index), np.int64) if priority is None else np.asarray(priority, np.int64)
    if len(priority) != len(doc_index):
        raise ValueError(f"{where}: {len(doc_index)} doc indices but {len(priority)} priorities")
    if owner_of is None:
        if comm.size > 1:
            raise ValueError(f"{where}: owner_of is required with {comm.size} ranks (global index -> rank)")
        owner_of = _all_on_rank_zero
    return doc_index, priority, owner_of


def _all_on_rank_zero(doc_index: np.ndarray) -> np.ndarray:
    return np.zeros(len(doc_index), np.int64)


def largest_cluster(comm: Comm, clusters: PackedClusters) -> int:
    """Size (kept + removed) of the biggest cluster on any rank; 0 when there is none."""
    return int(max(comm.allgather(int(clusters.sizes().max(initial=0)))))


def exact_result(
    comm: Comm, ex: Exchange, kind: str, kept: np.ndarray, removed: np.ndarray, owner_of: OwnerOf
) -> DedupResult:
    """Clusters of exact copies (each removed document beside the one kept, similarity 1) and every removed
    document's decision sent to the rank that holds it."""
    clusters = gather_clusters(ex, kind, kept, removed, np.ones(len(removed)), owner_of)
    return DedupResult(
        removed=np.sort(ex.route(removed, owner_of(removed), "decisions")),
        clusters=clusters,
        largest_cluster=largest_cluster(comm, clusters),
        received_bytes=ex.received,
    )


def find_exact_duplicates(
    comm: Comm,
    doc_index: np.ndarray,
    hashes: np.ndarray,
    priority: np.ndarray | None = None,
    owner_of: OwnerOf | None = None,
) -> DedupResult:
    """Keep the lowest-ranked (priority, global index) of every group of equal exact_text_hash, on any rank."""
    doc_index, priority, owner_of = check_inputs(comm, doc_index, priority, owner_of, "find_exact_duplicates")
    hashes = np.asarray(hashes, dtype=np.uint64).reshape(-1, 2)
    if len(hashes) != len(doc_index):
        raise ValueError(f"find_exact_duplicates: {len(doc_index)} doc indices but {len(hashes)} hashes")
    ex = Exchange(comm)
    rows = np.column_stack([hashes, rank_key(priority), doc_index.astype(np.uint64)])
    received = ex.route(rows, key_owner(hashes[:, 0], comm.size), "exact keys")
    received = received[np.lexsort((received[:, 3], received[:, 2], received[:, 1], received[:, 0]))]
    starts = run_starts(received[:, :2])
    docs = received[:, 3].astype(np.int64)
    kept = docs[np.maximum.accumulate(np.where(starts, np.arange(len(docs)), 0))][~starts]
    removed = docs[~starts]
    return exact_result(comm, ex, "exact", kept, removed, owner_of)
