"""Dedup of new documents against documents already published (earlier datasets), on one process or N ranks.

Earlier documents always win: they are in a dataset people already train on. So this is not a clustering, only
a lookup: a new document is dropped when its exact key equals an earlier document's, or when it is a verified
near duplicate of one; earlier documents are never compared with each other and never removed. The new
documents that survive are deduplicated among themselves afterwards, by the usual steps (exact.py, lsh.py).

Earlier documents carry global indices of their own (after the new ones), held by the rank that read their
index task (`owner_of` covers both kinds). Rows travel as in the usual steps:

- exact: (key high, key low, side, index) rows go to the owner of the key's range; in each run of equal keys
  that holds an earlier document, every new member is removed for the lowest earlier one.
- near: per band, (band key, side, index) rows go to the band key's owner; in each run holding both kinds, the
  BUCKET_PIVOTS lowest earlier members are paired with every new member. A pair goes to the rank holding its new
  document, which fetches the earlier signature from its holder and keeps the pair when the estimated Jaccard
  reaches the verify bound. A new document with verified pairs is removed for its most similar earlier one.

The cluster rows (earlier kept, new removed, similarity) go to the rank holding the earlier document. Results
depend only on the documents, never on N. Memory: the earlier share costs what the same number of new documents
costs in lsh.py per band (24 bytes a row, routed), plus its keys and signatures.
"""

from __future__ import annotations

import numpy as np

from data_pipeline.dedup.clusters import (
    Exchange,
    OwnerOf,
    fetch_from_owners,
    gather_clusters,
    key_owner,
    positions_of,
    run_starts,
    unique_rows,
)
from data_pipeline.dedup.exact import DedupResult, exact_result, largest_cluster
from data_pipeline.dedup.lsh import BUCKET_PIVOTS, VERIFY_BATCH_PAIRS, LSHParams, band_keys, pair_similarity

EARLIER, NEW = 0, 1  # the side column: earlier rows sort first in a run


def _sided(key: np.ndarray, side: int, doc_index: np.ndarray) -> np.ndarray:
    """uint64 rows (key columns..., side, global index)."""
    side_column = np.full(len(doc_index), side, np.uint64)
    return np.column_stack([np.asarray(key, np.uint64), side_column, doc_index.astype(np.uint64)])


def find_exact_in_earlier(
    comm,
    doc_index: np.ndarray,
    keys: np.ndarray,
    earlier_index: np.ndarray,
    earlier_keys: np.ndarray,
    owner_of: OwnerOf,
) -> DedupResult:
    """The new documents (doc_index, held here) whose exact key an earlier document has; clusters by earlier one."""
    ex = Exchange(comm)
    rows = np.concatenate([_sided(earlier_keys, EARLIER, earlier_index), _sided(keys, NEW, doc_index)])
    received = ex.route(rows, key_owner(rows[:, 0], comm.size), "earlier exact keys")
    received = received[np.lexsort((received[:, 3], received[:, 2], received[:, 1], received[:, 0]))]
    starts = run_starts(received[:, :2])
    first = np.maximum.accumulate(np.where(starts, np.arange(len(received)), 0))
    take = (received[:, 2] == NEW) & (received[first, 2] == EARLIER)
    kept, removed = received[first[take], 3].astype(np.int64), received[take, 3].astype(np.int64)
    return exact_result(comm, ex, "exact_earlier", kept, removed, owner_of)


def _earlier_pairs(received: np.ndarray) -> np.ndarray:
    """(earlier, new) pairs from runs of equal band keys: each of a run's BUCKET_PIVOTS lowest earlier members
    with every new member. Earlier rows whose key no new row has are dropped before the sort."""
    new = received[:, 1] == NEW
    earlier, new_keys = received[~new], np.sort(received[new, 0])
    found = np.minimum(np.searchsorted(new_keys, earlier[:, 0]), max(len(new_keys) - 1, 0))
    shared = new_keys[found] == earlier[:, 0] if len(new_keys) else np.zeros(len(earlier), bool)
    rows = np.concatenate([earlier[shared], received[new]])
    rows = rows[np.lexsort((rows[:, 2], rows[:, 1], rows[:, 0]))]
    starts = run_starts(rows[:, 0])
    run_first, run_of = np.flatnonzero(starts), np.cumsum(starts) - 1
    earlier_in_run = np.bincount(run_of, weights=rows[:, 1] == EARLIER, minlength=len(run_first))
    pairs = []
    for pivot in range(BUCKET_PIVOTS):
        members = np.flatnonzero((rows[:, 1] == NEW) & (earlier_in_run[run_of] > pivot))
        pairs.append(np.column_stack([rows[run_first[run_of[members]] + pivot, 2], rows[members, 2]]))
    return unique_rows(np.concatenate(pairs).astype(np.int64))


def earlier_candidates(
    ex: Exchange,
    doc_index: np.ndarray,
    signatures: np.ndarray,
    earlier_index: np.ndarray,
    earlier_signatures: np.ndarray,
    params: LSHParams,
    owner_of: OwnerOf,
) -> np.ndarray:
    """(earlier, new) candidate pairs, each once, on the rank holding the new document."""
    found = [np.zeros((0, 2), np.int64)]
    for band in range(params.bands):
        rows = np.concatenate([
            _sided(band_keys(earlier_signatures, params, band), EARLIER, earlier_index),
            _sided(band_keys(signatures, params, band), NEW, doc_index),
        ])  # fmt: skip
        found.append(_earlier_pairs(ex.route(rows, key_owner(rows[:, 0], ex.comm.size), "earlier band keys")))
    pairs = unique_rows(np.concatenate(found))
    return unique_rows(ex.route(pairs, owner_of(pairs[:, 1]), "earlier candidate pairs").reshape(-1, 2))


def _verify(ex, pairs, doc_index, signatures, earlier_index, earlier_signatures, bound, owner_of):
    """(pairs, similarity) of these pairs (new held here) whose estimated Jaccard reaches `bound`."""
    wanted, position = np.unique(pairs[:, 0], return_inverse=True)
    fetched = fetch_from_owners(ex, wanted, owner_of, earlier_index, earlier_signatures, "earlier signatures")
    mine = positions_of(doc_index, pairs[:, 1], "earlier pairs")
    similarity = pair_similarity(signatures, mine, fetched, position.reshape(-1))
    keep = similarity >= bound
    return pairs[keep], similarity[keep]


def find_near_in_earlier(
    comm,
    doc_index: np.ndarray,
    signatures: np.ndarray,
    earlier_index: np.ndarray,
    earlier_signatures: np.ndarray,
    params: LSHParams,
    bound: float,
    owner_of: OwnerOf,
) -> DedupResult:
    """The new documents held here that are verified near duplicates of an earlier document; each is removed for
    its most similar earlier one (ties: the lower index). Verified in batches of VERIFY_BATCH_PAIRS pairs, so
    the fetched signatures stay bounded; every rank takes part in as many batches as the busiest one."""
    ex = Exchange(comm)
    pairs = earlier_candidates(ex, doc_index, signatures, earlier_index, earlier_signatures, params, owner_of)
    batches = max(comm.allgather(-(-len(pairs) // VERIFY_BATCH_PAIRS)))
    batch = [pairs[i * VERIFY_BATCH_PAIRS : (i + 1) * VERIFY_BATCH_PAIRS] for i in range(batches)]
    args = (doc_index, signatures, earlier_index, earlier_signatures, bound, owner_of)
    verified = [_verify(ex, b, *args) for b in batch] or [(pairs, np.zeros(0))]
    found, similarity = np.concatenate([v[0] for v in verified]), np.concatenate([v[1] for v in verified])
    best = np.lexsort((found[:, 0], -similarity, found[:, 1]))
    best = best[run_starts(found[best, 1])]
    kept, removed, similarity = found[best, 0], found[best, 1], similarity[best]
    clusters = gather_clusters(ex, "near_earlier", kept, removed, similarity, owner_of)
    return DedupResult(
        removed=np.sort(removed),
        clusters=clusters,
        candidate_pairs=int(comm.allreduce_sum(len(pairs))),
        verified_pairs=int(comm.allreduce_sum(len(found))),
        largest_cluster=largest_cluster(comm, clusters),
        received_bytes=ex.received,
    )
