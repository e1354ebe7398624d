"""Exact deduplication: byte-identical texts keep only their first occurrence (lowest global index).

`exact_text_hash` is xxh3_128 of the UTF-8 text exactly as read (no normalisation: "exact" means identical
bytes; near-identical texts are the MinHash stage's job). It returns a (2,) uint64 array (high, low 64 bits) so
many hashes stack into one (n, 2) array that travels between MPI ranks as raw buffers. At 128 bits, a false
match among 10^12 documents has probability ~10^-15.

Distributed: each rank routes its rows (hash_high, hash_low, global index) to the rank owning that range of
hash_high values (`key_owner`), owners sort and find runs of equal hashes, and every rank learns which of its
documents were removed. `DedupResult` is shared with the near-duplicate stage (`data_pipeline.lsh`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import xxhash

from data_pipeline.comm import LocalComm


@dataclass
class DedupResult:
    """What a dedup step decided. `removed` is per rank; `clusters` is complete on rank 0 only."""

    removed: np.ndarray  # int64 global indices among THIS rank's documents to drop
    clusters: list[dict] = field(default_factory=list)  # {"kept", "removed", "similarity"}, sorted by kept
    largest_cluster: int = 0  # documents in the biggest cluster (kept + removed); 0 when nothing was removed
    candidate_pairs: int = 0
    verified_pairs: int = 0


def exact_text_hash(text: str) -> np.ndarray:
    """xxh3_128 of the UTF-8 text as a (2,) uint64 array: [high 64 bits, low 64 bits]."""
    digest = xxhash.xxh3_128_intdigest(text.encode("utf-8"))
    return np.array([digest >> 64, digest & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64)


def exact_text_hashes(texts: list[str]) -> np.ndarray:
    """(n, 2) uint64 hashes of many texts."""
    # xxh3_128_digest is the canonical big-endian form: [high 64 bits, low 64 bits] per text
    digests = b"".join(xxhash.xxh3_128_digest(text.encode("utf-8")) for text in texts)
    return np.frombuffer(digests, dtype=">u8").astype(np.uint64).reshape(-1, 2)


def key_owner(keys: np.ndarray, size: int) -> np.ndarray:
    """Rank owning each uint64 key: rank r owns the r-th of `size` equal ranges of key values."""
    return ((keys >> np.uint64(32)) * np.uint64(size)) >> np.uint64(32)


def route_rows(comm: LocalComm, rows: np.ndarray, owners: np.ndarray) -> np.ndarray:
    """Send each row to the rank in `owners`; return the rows this rank received (rank order)."""
    if comm.size == 1:
        return comm.alltoallv_array([rows])
    order = np.argsort(owners, kind="stable")
    counts = np.bincount(owners.astype(np.int64), minlength=comm.size)
    parts = np.split(rows[order], np.cumsum(counts)[:-1])
    return comm.alltoallv_array([np.ascontiguousarray(p) for p in parts])


def run_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Boolean mask: True where a run of equal rows (along axis 0) begins."""
    if len(sorted_keys) == 0:
        return np.zeros(0, bool)
    change = sorted_keys[1:] != sorted_keys[:-1]
    if change.ndim > 1:
        change = change.any(axis=1)
    return np.r_[True, change]


def own_removed(doc_index: np.ndarray, removed_everywhere: np.ndarray) -> np.ndarray:
    """This rank's documents (int64 global indices, sorted) among the removals found on all ranks."""
    return np.sort(doc_index[np.isin(doc_index, removed_everywhere)])


def _exact_clusters(docs: np.ndarray, starts: np.ndarray) -> list[dict]:
    """Clusters of identical texts from docs sorted by (hash, index); the first of each run is kept."""
    first = np.flatnonzero(starts)
    sizes = np.diff(np.r_[first, len(docs)])
    clusters = []
    for begin, size in zip(first[sizes > 1].tolist(), sizes[sizes > 1].tolist(), strict=True):
        run = docs[begin : begin + size]
        clusters.append({"kept": int(run[0]), "removed": run[1:].tolist(), "similarity": [1.0] * (size - 1)})
    return clusters


def find_exact_duplicates(comm: LocalComm, doc_index: np.ndarray, hashes: np.ndarray) -> DedupResult:
    """Drop every document whose exact_text_hash equals one with a lower global index (on any rank)."""
    doc_index = np.asarray(doc_index, dtype=np.int64)
    hashes = np.asarray(hashes, dtype=np.uint64).reshape(-1, 2)
    if len(hashes) != len(doc_index):
        raise ValueError(f"find_exact_duplicates: {len(doc_index)} doc indices but {len(hashes)} hashes")
    rows = np.column_stack([hashes, doc_index.astype(np.uint64)])
    received = route_rows(comm, rows, key_owner(hashes[:, 0], comm.size))
    received = received[np.lexsort((received[:, 2], received[:, 1], received[:, 0]))]
    starts = run_starts(received[:, :2])
    removed_here = received[~starts, 2].astype(np.int64)
    clusters = _exact_clusters(received[:, 2].astype(np.int64), starts)
    gathered = comm.gather(clusters, root=0)
    all_clusters = sorted((c for part in gathered for c in part), key=lambda c: c["kept"]) if comm.rank == 0 else []
    largest = max((len(c["removed"]) + 1 for c in clusters), default=0)
    return DedupResult(
        removed=own_removed(doc_index, np.concatenate(comm.allgather(removed_here))),
        clusters=all_clusters,
        largest_cluster=int(max(comm.allgather(largest))),
    )
