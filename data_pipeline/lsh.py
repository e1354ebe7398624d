"""MinHash-LSH near-duplicate detection over flat numpy arrays, on one process or N MPI ranks.

The algorithm, per band (bands x rows of the signature):
1. Each rank hashes its documents' band slice to a 64-bit band key and routes (band key, global index) rows
   with `alltoallv_array` to the rank owning that range of key values (rank r owns keys in
   [r * 2^64 / size, (r + 1) * 2^64 / size)). Equal keys therefore always meet on one rank.
2. Owners sort their rows by (key, index), find runs of equal keys and emit star edges from each run's first
   (lowest-index) member to the others. No Python object exists per band entry.
3. Edges of all bands go to rank 0, which asks every rank for the signatures of the documents that appear in
   an edge (only candidates travel, 4 * num_perm bytes each), keeps the edges whose estimated Jaccard reaches
   `verify_threshold` (so templates cannot chain unrelated documents into giant clusters), and labels connected
   components with scipy.sparse.csgraph. The lowest global index of each component is kept.
4. Rank 0 broadcasts the removed indices; each rank keeps the ones among its own documents.

Memory per document beyond the signatures (4 * num_perm bytes, uint32): bands are processed one at a time, so
the peak is one band's 64-bit keys, the (key, index) rows (16 bytes), their routed copy and a sort order:
benchmarks/bench_dedup_memory.py measures 78 bytes per document at 1M documents on one rank. Edges cost 16 bytes
per candidate pair; under MPI rank 0 also holds the signatures of documents that are in a candidate pair
(4 * num_perm bytes each) and every rank receives the list of removed indices (8 bytes each). Each rank holds
1/size of every band's rows, so band memory per rank falls as ranks are added.

The result is identical for any number of ranks: the edges only depend on which documents share a band key.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from data_pipeline.comm import LocalComm
from data_pipeline.exact_dedup import DedupResult, key_owner, own_removed, route_rows, run_starts
from data_pipeline.minhash import _fmix64, estimated_jaccard

__all__ = ["DedupResult", "LSHParams", "band_keys", "candidate_edges", "find_near_duplicates", "planted_corpus"]

_EDGE_CHUNK = 1 << 16


# Weight of a missed duplicate in datasketch's grid search (MinHashLSH's own default is 0.5). Candidates are
# verified by estimated Jaccard afterwards, so a false positive costs a comparison while a false negative is a
# duplicate trained on: 0.8 moves 0.8/128 from 9x13 to 12x10 bands, raising recall at Jaccard 0.85 from 0.69 to
# 0.93 per pair (BENCHMARKS.md, bench_dedup_quality.py).
DEFAULT_FALSE_NEGATIVE_WEIGHT = 0.8


@functools.lru_cache(maxsize=64)
def _datasketch_optimum(threshold: float, num_perm: int, false_negative_weight: float) -> tuple[int, int]:
    """datasketch's own grid search over bands x rows, weighting misses by `false_negative_weight`."""
    from datasketch.lsh import _optimal_param

    return _optimal_param(threshold, num_perm, 1.0 - false_negative_weight, false_negative_weight)


@dataclass(frozen=True)
class LSHParams:
    """How a signature is cut into bands: documents sharing all `rows` values of any band become candidates."""

    threshold: float
    num_perm: int
    bands: int
    rows: int

    @classmethod
    def from_threshold(
        cls,
        threshold: float = 0.8,
        num_perm: int = 128,
        bands: int | None = None,
        rows: int | None = None,
        false_negative_weight: float = DEFAULT_FALSE_NEGATIVE_WEIGHT,
    ) -> LSHParams:
        """datasketch's optimum for `threshold`, unless the user sets bands and/or rows (the other is derived)."""
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"dedup.threshold must be in (0, 1), got {threshold}")
        if bands is None and rows is None:
            bands, rows = _datasketch_optimum(float(threshold), int(num_perm), float(false_negative_weight))
        elif bands is None:
            bands = num_perm // rows if rows and rows > 0 else 0
        elif rows is None:
            rows = num_perm // bands if bands > 0 else 0
        if bands < 1 or rows < 1 or bands * rows > num_perm:
            raise ValueError(
                f"dedup.bands x dedup.rows = {bands} x {rows} must be >= 1 x 1 and use at most "
                f"dedup.num_perm = {num_perm} signature values; lower bands or rows, or raise num_perm"
            )
        return cls(threshold=float(threshold), num_perm=int(num_perm), bands=int(bands), rows=int(rows))

    def detection_probability(self, similarity: float | np.ndarray) -> float | np.ndarray:
        """P(two documents of Jaccard s share at least one band) = 1 - (1 - s^r)^b."""
        return 1.0 - (1.0 - np.asarray(similarity, dtype=np.float64) ** self.rows) ** self.bands

    def describe(self) -> str:
        """Bands x rows and the S-curve around the usual thresholds, for logs and reports."""
        curve = ", ".join(f"P({s:.1f})={float(self.detection_probability(s)):.3f}" for s in (0.7, 0.8, 0.9))
        return (
            f"MinHash LSH: {self.bands} bands x {self.rows} rows = {self.bands * self.rows} of "
            f"{self.num_perm} permutations (threshold {self.threshold}); candidate probability {curve}"
        )


def band_keys(signatures: np.ndarray, params: LSHParams, band: int) -> np.ndarray:
    """64-bit key of one band of every signature (band index mixed in, so bands never share keys)."""
    keys = np.full(len(signatures), (band + 1) * 0x9E3779B97F4A7C15 % (1 << 64), np.uint64)
    with np.errstate(over="ignore"):
        for column in range(band * params.rows, (band + 1) * params.rows):
            keys = _fmix64(keys ^ signatures[:, column].astype(np.uint64))
    return keys


def _star_edges(received: np.ndarray) -> np.ndarray:
    """(u, v) int64 edges from each run of equal keys' first (lowest index) member to every other member.

    Only positions are kept per row (8 bytes each); doc ids are looked up for the duplicate rows alone.
    """
    order = np.lexsort((received[:, 1], received[:, 0]))
    starts = run_starts(received[order, 0])
    member_positions = np.flatnonzero(~starts)
    run_first = np.flatnonzero(starts)
    first_positions = run_first[np.searchsorted(run_first, member_positions, side="right") - 1]
    docs = received[:, 1]
    return np.column_stack([docs[order[first_positions]], docs[order[member_positions]]]).astype(np.int64)


def unique_edges(edges: np.ndarray) -> np.ndarray:
    """Sorted (u, v) rows without repeats."""
    edges = edges[np.lexsort((edges[:, 1], edges[:, 0]))]
    return edges[run_starts(edges)] if len(edges) else edges.reshape(0, 2)


def candidate_edges(comm: LocalComm, doc_index: np.ndarray, signatures: np.ndarray, params: LSHParams) -> np.ndarray:
    """This rank's share of candidate edges: pairs that share a band key owned by this rank."""
    edges = np.zeros((0, 2), np.int64)
    for band in range(params.bands):
        keys = band_keys(signatures, params, band)
        rows = np.column_stack([keys, doc_index.astype(np.uint64)])
        received = route_rows(comm, rows, key_owner(keys, comm.size))
        del rows, keys
        edges = unique_edges(np.concatenate([edges, _star_edges(received)]))
    return edges


def _signatures_on_root(comm: LocalComm, doc_index: np.ndarray, signatures: np.ndarray, wanted: np.ndarray):
    """(sorted doc ids, their signatures) of the `wanted` documents, collected on rank 0 (None elsewhere)."""
    if comm.size == 1 and bool(np.all(doc_index[1:] > doc_index[:-1])):
        return doc_index, signatures  # already on "rank 0" and sorted: no copy of the candidates' signatures
    wanted = comm.bcast(wanted if comm.rank == 0 else None, root=0)
    mine = np.isin(doc_index, wanted)
    to_root = [np.zeros(0, np.int64)] * comm.size
    ids = comm.alltoallv_array([doc_index[mine] if r == 0 else to_root[r] for r in range(comm.size)])
    empty = np.zeros((0, signatures.shape[1]), signatures.dtype)
    sigs = comm.alltoallv_array([np.ascontiguousarray(signatures[mine]) if r == 0 else empty for r in range(comm.size)])
    if comm.rank != 0:
        return None, None
    order = np.argsort(ids, kind="stable")
    return ids[order], sigs[order]


def _edge_similarity(sigs: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Estimated Jaccard of signature rows u[i] and v[i], in chunks to bound the boolean temporary."""
    out = np.empty(len(u), np.float64)
    for start in range(0, len(u), _EDGE_CHUNK):
        stop = start + _EDGE_CHUNK
        out[start:stop] = estimated_jaccard(sigs[u[start:stop]], sigs[v[start:stop]])
    return out


def _clusters(ids: np.ndarray, sigs: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[list[dict], np.ndarray]:
    """Connected components over positions into `ids`; keep each component's lowest id. Returns (clusters, removed)."""
    nodes = np.unique(np.concatenate([u, v]))
    cu, cv = np.searchsorted(nodes, u), np.searchsorted(nodes, v)
    graph = coo_matrix((np.ones(len(cu), np.int8), (cu, cv)), shape=(len(nodes), len(nodes))).tocsr()
    _, labels = connected_components(graph, directed=False)
    order = np.lexsort((nodes, labels))  # nodes grouped by component, ascending id within each
    members, member_labels = nodes[order], labels[order]
    first = run_starts(member_labels)
    kept_of = members[np.maximum.accumulate(np.where(first, np.arange(len(members)), 0))]
    similarity = _edge_similarity(sigs, kept_of, members)
    clusters = []
    bounds = np.r_[np.flatnonzero(first), len(members)]
    for begin, end in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        clusters.append(
            {
                "kept": int(ids[members[begin]]),
                "removed": ids[members[begin + 1 : end]].tolist(),
                "similarity": np.round(similarity[begin + 1 : end], 4).tolist(),
            }
        )
    clusters.sort(key=lambda c: c["kept"])
    return clusters, ids[members[~first]]


def find_near_duplicates(
    comm: LocalComm,
    doc_index: np.ndarray,
    signatures: np.ndarray,
    params: LSHParams,
    *,
    verify_threshold: float | None = 0.5,
) -> DedupResult:
    """Near-duplicate clusters among all ranks' documents; each rank learns which of its own to drop."""
    doc_index = np.asarray(doc_index, dtype=np.int64)
    if signatures.shape != (len(doc_index), params.num_perm):
        raise ValueError(
            f"find_near_duplicates: signatures have shape {signatures.shape}, expected "
            f"({len(doc_index)}, {params.num_perm}) for {len(doc_index)} documents and dedup.num_perm"
        )
    local = candidate_edges(comm, doc_index, signatures, params)
    edges = route_rows(comm, local.astype(np.int64), np.zeros(len(local), np.int64))
    edges = unique_edges(edges.reshape(-1, 2))
    ids, sigs = _signatures_on_root(comm, doc_index, signatures, np.unique(edges) if comm.rank == 0 else None)
    result = DedupResult(removed=np.zeros(0, np.int64))
    removed_all = np.zeros(0, np.int64)
    if comm.rank == 0:
        u, v = np.searchsorted(ids, edges[:, 0]), np.searchsorted(ids, edges[:, 1])
        if verify_threshold is not None:
            keep = _edge_similarity(sigs, u, v) >= verify_threshold
            u, v = u[keep], v[keep]
        clusters, removed_all = _clusters(ids, sigs, u, v) if len(u) else ([], removed_all)
        result.clusters = clusters
        result.candidate_pairs, result.verified_pairs = len(edges), len(u)
        result.largest_cluster = max((len(c["removed"]) + 1 for c in clusters), default=0)
    removed_all = comm.bcast(removed_all, root=0)
    summary = comm.bcast((result.candidate_pairs, result.verified_pairs, result.largest_cluster), root=0)
    result.candidate_pairs, result.verified_pairs, result.largest_cluster = summary
    result.removed = own_removed(doc_index, removed_all)
    return result


def planted_corpus(
    num_base: int, copies: int = 1, mutate: tuple[float, ...] = (0.05,), *, words: int = 200, seed: int = 0
) -> tuple[list[str], list[tuple[int, int]]]:
    """Random documents plus mutated copies with a known fraction of words replaced, for quality tests.

    Returns (texts, planted pairs (original index, copy index)). Copy k of a base uses mutate[k % len(mutate)].
    """
    rng = np.random.default_rng(seed)
    vocabulary = np.array([f"w{i}" for i in range(20000)])
    texts = [" ".join(rng.choice(vocabulary, words)) for _ in range(num_base)]
    pairs = []
    for base in range(num_base):
        for copy in range(copies):
            tokens = texts[base].split(" ")
            fraction = mutate[(base * copies + copy) % len(mutate)]
            for position in rng.choice(words, int(round(fraction * words)), replace=False):
                tokens[position] = f"m{rng.integers(1 << 40)}"
            pairs.append((base, len(texts)))
            texts.append(" ".join(tokens))
    return texts, pairs
