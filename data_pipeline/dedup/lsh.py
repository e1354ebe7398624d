"""MinHash-LSH near-duplicate detection over flat numpy arrays, on one process or N MPI ranks, with no central rank.

1. Candidates, per band (bands x rows of the signature): each rank hashes its documents' band slice to a 64-bit
   key and routes (key, rank key, global index) rows to the rank owning that range of key values, so equal keys
   meet on one rank. The owner sorts its rows and emits pairs from each run's BUCKET_PIVOTS lowest-ranked members
   (in `dedup.keep` order) to the members after them. No Python object exists per band entry.
2. Verification where the pair is owned: each pair (u, v) goes to the rank holding its higher-ranked document v,
   which fetches the signature of the pivot u from its holder (alltoallv: only candidates' signatures travel) and
   keeps the pair when its estimated Jaccard reaches the verify bound: `dedup.verify_threshold`, by default the
   threshold less two standard deviations of the estimate at the threshold (`verify_bound`). A template's star of
   M copies is spread over the ranks as its members are (M/N pairs each), and each rank fetches the few pivot
   signatures, which repeat; on u's holder, the star's pairs all met on one rank, which fetched every member's
   signature (the hot rank of bench_pipeline_scale's clustered corpus). Pairs are verified in batches, so the
   fetched signatures stay bounded even where pivots do not repeat.
3. Keepers (`components.select_keepers`): the greedy independent set of the verified-pair graph in rank
   order, so a document is removed only as a verified near duplicate of the very document kept for it; the rest
   of a chain (A~B~C with A and C unlike) forms its own clusters. Verification alone does not prevent chaining:
   connected components of verified pairs merge chains whose ends have nothing in common. It is decided where the
   documents live, in at most ceil(log2 n) + 1 pull rounds (greedy_rounds.py); only what those leave undecided
   (a long chain in keep order) is solved as components, each on the rank holding its smallest document.
4. Each removed document's holder assigns it to its most similar kept lower neighbour; the (kept, removed,
   similarity) rows go to the rank holding the kept document, which owns that cluster record.

Memory per document beyond the signatures (4 * num_perm bytes, uint32, which `pipeline dedup` leaves on disk:
signature_files.py): bands are processed one at a time, so the peak is one band's 64-bit keys, the (key, rank
key, index) rows (24 bytes), their routed copy and a sort order (benchmarks/bench_dedup_memory.py). A candidate
pair costs 16 bytes on the rank holding v, plus the signature of its pivot u when that is new to the rank's
batch; a verified pair stays there (8 more bytes of similarity, 9 of round state); only a pair left undecided
after the pull rounds is also held by the rank solving its component (components.py).

The result is identical for any number of ranks: candidates depend only on which documents share a band key,
verification only on the two signatures, and the greedy independent set is unique.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from data_pipeline.comm import Comm
from data_pipeline.dedup.clusters import (
    Exchange,
    OwnerOf,
    fetch_from_owners,
    gather_clusters,
    key_owner,
    positions_of,
    rank_key,
    run_starts,
)
from data_pipeline.dedup.components import select_keepers, unique_pairs
from data_pipeline.dedup.exact import DedupResult, check_inputs, largest_cluster
from data_pipeline.dedup.minhash import _fmix64, estimated_jaccard

__all__ = [
    "DedupResult",
    "LSHParams",
    "SignatureArray",
    "Signatures",
    "band_keys",
    "find_near_duplicates",
    "pair_similarity",
    "planted_corpus",
    "verify_bound",
]

_PAIR_CHUNK = 1 << 13  # pairs compared at once: two 4 MiB blocks of gathered 128-value signatures
# Pairs verified per batch: their documents' signatures are read (or fetched) for the batch, two rows per pair at
# most: 64 MiB of 128-value signatures at worst, a few MiB when pivots repeat (a star's pairs share 4 per band).
VERIFY_BATCH_PAIRS = 1 << 16
# Members of a bucket that propose pairs to the members ranked after them. With one (a star from the lowest-ranked
# member), two documents v, w alike were never compared when every bucket they share also held a lower-ranked u
# unlike both (J(v, w) = 0.95 removed nothing). Now v-w is missed only when every bucket they share holds
# BUCKET_PIVOTS documents ranked below both; a bucket of s members proposes at most BUCKET_PIVOTS * s pairs.
BUCKET_PIVOTS = 4


# Weight of a missed duplicate in datasketch's grid search (MinHashLSH's own default is 0.5). Candidates are
# verified by estimated Jaccard afterwards, so a false positive costs a comparison while a false negative is a
# duplicate trained on. 0.95 gives 16x8 bands at 0.8/128 (0.8 gave 12x10, 0.5 9x13): P(candidate) at Jaccard
# 0.8 is 0.947 (12x10: 0.744). Edited copies of text without spaces (character 5-grams: each edited letter
# breaks 5 shingles) sit just above the threshold, where 12x10 finds 0.930 of the Chinese pairs at J >= 0.8 and
# 16x8 0.988, with 21% more candidate pairs (bench_dedup_cjk_recall.py); `verify_bound` keeps those extra
# near-threshold candidates from raising the removals below Jaccard 0.7.
DEFAULT_FALSE_NEGATIVE_WEIGHT = 0.95


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


class Signatures(Protocol):
    """What near dedup reads of a rank's signatures: the rows of some documents and one band of every document.
    `SignatureArray` holds them in memory; `signature_files.SignatureFiles` leaves them on disk."""

    shape: tuple[int, int]

    def __getitem__(self, positions: np.ndarray) -> np.ndarray: ...

    def band_keys(self, params: LSHParams, band: int) -> np.ndarray: ...


class SignatureArray:
    """`Signatures` of an (n, num_perm) uint32 array in memory."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.shape = array, array.shape

    def __getitem__(self, positions: np.ndarray) -> np.ndarray:
        return self.array[positions]

    def band_keys(self, params: LSHParams, band: int) -> np.ndarray:
        return band_keys(self.array, params, band)


def verify_bound(params: LSHParams, deviations: float = 2.0) -> float:
    """Default verify threshold: dedup.threshold less `deviations` standard deviations of the MinHash estimate of a
    pair exactly at the threshold (sqrt(t(1-t)/num_perm)); 0.729 at 0.8 and 128 permutations.

    A pair at the threshold passes with probability ~0.977, at 0.82 with ~0.996, at 0.65 with ~0.03. Three
    deviations (0.694) let the 16x8 bands' extra near-threshold candidates through: 8.5% of the removed documents
    of bench_dedup_quality's families had a true Jaccard below 0.7 with their kept one; 3.1% now (4.6% with 12x10
    bands and three deviations), at the same recall on edited Chinese and Japanese paragraphs."""
    t = params.threshold
    return max(0.0, t - deviations * math.sqrt(t * (1.0 - t) / params.num_perm))


def _pivot_pairs(received: np.ndarray) -> np.ndarray:
    """(u, v) pairs from each of the BUCKET_PIVOTS lowest-ranked members u of each run of equal band keys to every
    member v ranked after it (every pair of a run of up to BUCKET_PIVOTS + 1 members).

    Rows are (band key, rank key, global index); only positions are sorted, doc ids are looked up for the pairs.
    """
    order = np.lexsort((received[:, 2], received[:, 1], received[:, 0]))
    starts = run_starts(received[order, 0])
    run_first = np.flatnonzero(starts)
    run_of = np.cumsum(starts) - 1
    place = np.arange(len(order)) - run_first[run_of] if len(order) else np.zeros(0, np.int64)
    docs = received[:, 2]
    pairs = []
    for pivot in range(BUCKET_PIVOTS):
        members = np.flatnonzero(place > pivot)
        pairs.append(np.column_stack([docs[order[run_first[run_of[members]] + pivot]], docs[order[members]]]))
    return np.concatenate(pairs).astype(np.int64)


def candidate_pairs(
    ex: Exchange, doc_index: np.ndarray, keys: np.ndarray, signatures: Signatures, params: LSHParams, owner_of: OwnerOf
) -> np.ndarray:
    """The candidate pairs (u, v) whose higher-ranked document v this rank holds, each once: u ranks below v."""
    parts = [np.zeros((0, 2), np.int64)]  # the pairs merged so far, then each band's new ones
    for band in range(params.bands):
        band_key = signatures.band_keys(params, band)
        rows = np.column_stack([band_key, keys, doc_index.astype(np.uint64)])
        received = ex.route(rows, key_owner(band_key, ex.comm.size), "band keys")
        del rows, band_key
        parts.append(_pivot_pairs(received))
        if 4 * sum(len(f) for f in parts[1:]) >= len(parts[0]):  # new rows reach a quarter of the merged ones:
            parts = [_merged(parts)]  # bounds both the sorts and the copies
    pairs = _merged(parts)
    return unique_pairs(ex.route(pairs, owner_of(pairs[:, 1]), "candidate pairs"))


def _merged(parts: list[np.ndarray]) -> np.ndarray:
    """The unique rows of all parts, which are released (the list emptied) before the sort: one copy at a time."""
    rows = np.concatenate(parts)
    parts.clear()
    return unique_pairs(rows)


def pair_similarity(signatures: np.ndarray, pos_u: np.ndarray, other: np.ndarray, pos_v: np.ndarray) -> np.ndarray:
    """Estimated Jaccard of signatures[pos_u[i]] and other[pos_v[i]], in chunks to bound the boolean temporary."""
    out = np.empty(len(pos_u), np.float64)
    for start in range(0, len(pos_u), _PAIR_CHUNK):
        stop = start + _PAIR_CHUNK
        out[start:stop] = estimated_jaccard(signatures[pos_u[start:stop]], other[pos_v[start:stop]])
    return out


def candidate_similarity(
    ex: Exchange, pairs: np.ndarray, doc_index: np.ndarray, signatures: Signatures, owner_of: OwnerOf
) -> np.ndarray:
    """Estimated Jaccard of each of this rank's candidate pairs (u, v).

    v is held here; the pivot u's signature is read here too when u is held here, else fetched from its holder
    (once per pivot and rank). Each of the batch's own documents is read once."""
    local = owner_of(pairs[:, 0]) == ex.comm.rank
    wanted, pos_remote = np.unique(pairs[~local, 0], return_inverse=True)
    fetched = fetch_from_owners(ex, wanted, owner_of, doc_index, signatures, "signatures")
    pos_v = positions_of(doc_index, pairs[:, 1], "candidate_similarity")
    pos_u = positions_of(doc_index, pairs[local, 0], "candidate_similarity")
    held, at = np.unique(np.concatenate([pos_v, pos_u]), return_inverse=True)
    rows, at_v, at_u = signatures[held], at[: len(pos_v)], at[len(pos_v) :]
    similarity = np.empty(len(pairs), np.float64)
    similarity[local] = pair_similarity(rows, at_u, rows, at_v[local])
    similarity[~local] = pair_similarity(fetched, pos_remote.reshape(-1), rows, at_v[~local])
    return similarity


def verify_in_batches(
    ex: Exchange, pairs: np.ndarray, similarity_of: Callable[[np.ndarray], np.ndarray], bound: float
) -> tuple[np.ndarray, np.ndarray]:
    """(pairs, similarity) of this rank's candidate pairs whose estimated Jaccard (`similarity_of(batch)`) reaches
    `bound`, compared in batches of VERIFY_BATCH_PAIRS pairs, so the signatures read and fetched stay bounded; every
    rank takes part in as many batches as the busiest one (similarity_of may be collective). The verified pairs are
    moved to the front of `pairs` and returned as a view of it: only the candidates' count is needed afterwards,
    and a copy would cost 16 B per pair."""
    batches = max(ex.comm.allgather(-(-len(pairs) // VERIFY_BATCH_PAIRS)))
    verified, similarity = 0, [np.zeros(0, np.float64)]
    for start in range(0, batches * VERIFY_BATCH_PAIRS, VERIFY_BATCH_PAIRS):
        batch = pairs[start : start + VERIFY_BATCH_PAIRS]
        batch_similarity = similarity_of(batch)
        keep = batch_similarity >= bound
        pairs[verified : verified + int(keep.sum())] = batch[keep]  # batch[keep] is a copy: no overlap
        verified += int(keep.sum())
        similarity.append(batch_similarity[keep])
    return pairs[:verified], np.concatenate(similarity)


def find_near_duplicates(
    comm: Comm,
    doc_index: np.ndarray,
    signatures: np.ndarray | Signatures,
    params: LSHParams,
    verify_threshold: float | None = None,
    priority: np.ndarray | None = None,
    owner_of: OwnerOf | None = None,
) -> DedupResult:
    """Near-duplicate clusters among all ranks' documents; each rank learns which of its own to drop.

    verify_threshold: the estimated Jaccard a candidate pair needs (None: `verify_bound(params)`; 0: every
    candidate). priority: `keep_priority` of each document (None: input order). owner_of: the rank holding each
    global index (needed with more than one rank). signatures: an (n, num_perm) uint32 array, or `Signatures`
    read from disk (signature_files.py)."""
    doc_index, priority, owner_of = check_inputs(comm, doc_index, priority, owner_of, "find_near_duplicates")
    if signatures.shape != (len(doc_index), params.num_perm):
        raise ValueError(
            f"find_near_duplicates: signatures have shape {signatures.shape}, expected "
            f"({len(doc_index)}, {params.num_perm}) for {len(doc_index)} documents and dedup.num_perm"
        )
    if isinstance(signatures, np.ndarray):
        signatures = SignatureArray(signatures)
    ex, keys = Exchange(comm), rank_key(priority)
    pairs = candidate_pairs(ex, doc_index, keys, signatures, params, owner_of)
    bound = verify_bound(params) if verify_threshold is None else float(verify_threshold)
    similarity_of = functools.partial(candidate_similarity, ex, doc_index=doc_index, signatures=signatures,
                                      owner_of=owner_of)  # fmt: skip
    verified, similarity = verify_in_batches(ex, pairs, similarity_of, bound)
    keepers = select_keepers(ex, verified, similarity, doc_index, keys, owner_of)
    clusters = gather_clusters(ex, "near", *keepers.assignments, owner_of)
    return DedupResult(
        removed=keepers.removed,
        clusters=clusters,
        candidate_pairs=int(comm.allreduce_sum(len(pairs))),
        verified_pairs=int(comm.allreduce_sum(len(verified))),
        largest_cluster=largest_cluster(comm, clusters),
        rounds=keepers.rounds,
        received_bytes=ex.received,
    )


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
