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
depend only on the documents, never on N.

Memory: signatures of either kind are `lsh.Signatures` (in `pipeline dedup`, both left on disk:
signature_files.py), read one band's keys at a time and the rows of a batch of pairs; an earlier document costs
what a new one does per band (a 24-byte row, routed; on the band key's owner, the earlier rows whose key no new
row has are dropped before anything is copied or sorted), plus 16 bytes of exact key.
"""

from __future__ import annotations

import functools

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
from data_pipeline.dedup.lsh import BUCKET_PIVOTS, LSHParams, Signatures, pair_similarity, verify_in_batches

EARLIER, NEW = 0, 1  # the side column: earlier rows sort first in a run


def _sided(earlier_key: np.ndarray, earlier_index: np.ndarray, key: np.ndarray, doc_index: np.ndarray) -> np.ndarray:
    """uint64 rows (key columns..., side, global index), the earlier documents' first, written into one array (no
    per-side copy to concatenate)."""
    first, columns = len(earlier_index), 1 if key.ndim == 1 else key.shape[1]
    rows = np.empty((first + len(doc_index), columns + 2), np.uint64)
    rows[:first, :columns] = earlier_key.reshape(first, columns)
    rows[first:, :columns] = key.reshape(len(doc_index), columns)
    rows[:first, columns], rows[first:, columns] = EARLIER, NEW
    rows[:first, columns + 1], rows[first:, columns + 1] = earlier_index, doc_index
    return rows


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
    rows = _sided(earlier_keys, earlier_index, keys, doc_index)
    received = ex.route(rows, key_owner(rows[:, 0], comm.size), "earlier exact keys")
    received = received[np.lexsort((received[:, 3], received[:, 2], received[:, 1], received[:, 0]))]
    starts = run_starts(received[:, :2])
    first = np.maximum.accumulate(np.where(starts, np.arange(len(received)), 0))
    take = (received[:, 2] == NEW) & (received[first, 2] == EARLIER)
    kept, removed = received[first[take], 3].astype(np.int64), received[take, 3].astype(np.int64)
    return exact_result(comm, ex, "exact_earlier", kept, removed, owner_of)


def _earlier_pairs(received: np.ndarray) -> np.ndarray:
    """(earlier, new) pairs from runs of equal band keys: each of a run's BUCKET_PIVOTS lowest earlier members
    with every new member. Only the rows whose key a new row has (every new row among them) are copied and sorted."""
    new_keys = np.sort(received[received[:, 1] == NEW, 0])
    if len(new_keys) == 0:
        return np.zeros((0, 2), np.int64)
    found = np.minimum(np.searchsorted(new_keys, received[:, 0]), len(new_keys) - 1)
    rows = received[new_keys[found] == received[:, 0]]
    del found
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
    signatures: Signatures,
    earlier_index: np.ndarray,
    earlier_signatures: Signatures,
    params: LSHParams,
    owner_of: OwnerOf,
) -> np.ndarray:
    """(earlier, new) candidate pairs, each once, on the rank holding the new document."""
    found = [np.zeros((0, 2), np.int64)]
    for band in range(params.bands):
        rows = _sided(earlier_signatures.band_keys(params, band), earlier_index,
                      signatures.band_keys(params, band), doc_index)  # fmt: skip
        received = ex.route(rows, key_owner(rows[:, 0], ex.comm.size), "earlier band keys")
        del rows
        found.append(_earlier_pairs(received))
        del received
    pairs = unique_rows(np.concatenate(found))
    return unique_rows(ex.route(pairs, owner_of(pairs[:, 1]), "earlier candidate pairs").reshape(-1, 2))


def _similarity(
    ex: Exchange,
    pairs: np.ndarray,
    doc_index: np.ndarray,
    signatures: Signatures,
    earlier_index: np.ndarray,
    earlier_signatures: Signatures,
    owner_of: OwnerOf,
) -> np.ndarray:
    """Estimated Jaccard of these (earlier, new) pairs, new held here: the earlier signatures fetched from their
    holders, the new ones read here, each row once."""
    wanted, position = np.unique(pairs[:, 0], return_inverse=True)
    fetched = fetch_from_owners(ex, wanted, owner_of, earlier_index, earlier_signatures, "earlier signatures")
    mine, at = np.unique(positions_of(doc_index, pairs[:, 1], "earlier pairs"), return_inverse=True)
    return pair_similarity(signatures[mine], at.reshape(-1), fetched, position.reshape(-1))


def find_near_in_earlier(
    comm,
    doc_index: np.ndarray,
    signatures: Signatures,
    earlier_index: np.ndarray,
    earlier_signatures: Signatures,
    params: LSHParams,
    bound: float,
    owner_of: OwnerOf,
) -> DedupResult:
    """The new documents held here that are verified near duplicates of an earlier document; each is removed for
    its most similar earlier one (ties: the lower index). Verified in batches (`lsh.verify_in_batches`), so the
    fetched signatures stay bounded."""
    ex = Exchange(comm)
    pairs = earlier_candidates(ex, doc_index, signatures, earlier_index, earlier_signatures, params, owner_of)
    similarity_of = functools.partial(_similarity, ex, doc_index=doc_index, signatures=signatures,
                                      earlier_index=earlier_index, earlier_signatures=earlier_signatures,
                                      owner_of=owner_of)  # fmt: skip
    found, similarity = verify_in_batches(ex, pairs, similarity_of, bound)
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
