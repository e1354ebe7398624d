"""LSH parameters, candidate pairs against datasketch's MinHashLSH, verification, exact dedup."""

from __future__ import annotations

import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from support.sim_comm import run_ranks

from data_pipeline.comm import LocalComm
from data_pipeline.dedup.clusters import owner_of_blocks
from data_pipeline.dedup.exact import exact_text_hash, exact_text_hashes, find_exact_duplicates
from data_pipeline.dedup.lsh import (
    BUCKET_PIVOTS,
    DEFAULT_FALSE_NEGATIVE_WEIGHT,
    LSHParams,
    find_near_duplicates,
    planted_corpus,
)
from data_pipeline.dedup.minhash import compute_signatures, shingle_hashes


@pytest.mark.parametrize(("threshold", "num_perm"), [(0.5, 128), (0.7, 128), (0.8, 128), (0.9, 64), (0.85, 256)])
def test_bands_rows_are_datasketch_choice(threshold, num_perm):
    ours = LSHParams.from_threshold(threshold, num_perm)
    weights = (1 - DEFAULT_FALSE_NEGATIVE_WEIGHT, DEFAULT_FALSE_NEGATIVE_WEIGHT)
    theirs = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=weights)
    assert (ours.bands, ours.rows) == (theirs.b, theirs.r)
    balanced = LSHParams.from_threshold(threshold, num_perm, false_negative_weight=0.5)
    assert (balanced.bands, balanced.rows) == (MinHashLSH(threshold=threshold, num_perm=num_perm).b,) + (
        MinHashLSH(threshold=threshold, num_perm=num_perm).r,
    )


def test_user_bands_rows_honoured_and_validated():
    p = LSHParams.from_threshold(0.8, 128, bands=16, rows=8)
    assert (p.bands, p.rows) == (16, 8)
    assert LSHParams.from_threshold(0.8, 128, bands=20).rows == 6
    assert LSHParams.from_threshold(0.8, 128, rows=10).bands == 12
    with pytest.raises(ValueError, match="dedup.bands x dedup.rows = 20 x 8"):
        LSHParams.from_threshold(0.8, 128, bands=20, rows=8)
    with pytest.raises(ValueError, match="dedup.threshold"):
        LSHParams.from_threshold(1.5)


def test_s_curve_numbers():
    params = LSHParams.from_threshold(0.8, 128)
    assert (params.bands, params.rows) == (16, 8)
    for s in (0.7, 0.8, 0.9):
        assert params.detection_probability(s) == pytest.approx(1 - (1 - s**8) ** 16)
    assert params.detection_probability(0.8) == pytest.approx(0.947, abs=1e-3)
    text = params.describe()
    assert "16 bands x 8 rows" in text and "P(0.7)=0.613" in text and "P(0.9)=1.000" in text


def _components(n: int, pairs: set[tuple[int, int]]) -> set[frozenset[int]]:
    u, v = (np.array(x, dtype=np.int64) for x in zip(*pairs, strict=True)) if pairs else (np.zeros(0, int),) * 2
    graph = coo_matrix((np.ones(len(u)), (u, v)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    groups: dict[int, set[int]] = {}
    for doc, label in enumerate(labels.tolist()):
        groups.setdefault(label, set()).add(doc)
    return {frozenset(g) for g in groups.values() if len(g) > 1}


def _datasketch_clusters(texts: list[str], threshold: float, num_perm: int) -> set[frozenset[int]]:
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    sketches = []
    for doc, text in enumerate(texts):
        sketch = MinHash(num_perm=num_perm, seed=1, hashfunc=lambda v: v >> 32)
        sketch.update_batch(shingle_hashes(text).tolist())
        lsh.insert(doc, sketch)
        sketches.append(sketch)
    pairs = {(min(d, o), max(d, o)) for d, s in enumerate(sketches) for o in lsh.query(s) if o != d}
    return _components(len(texts), pairs)


def _our_clusters(result) -> set[frozenset[int]]:
    return {frozenset([c["kept"], *c["removed"]]) for c in result.clusters.records()}


@pytest.mark.parametrize("threshold", [0.5, 0.8])
def test_clusters_match_datasketch_minhashlsh_on_planted_corpus(threshold):
    # 1 changed word in 200 -> Jaccard ~0.95; 40% changed -> ~0.05: far from the S-curve's slope on both sides
    texts, pairs = planted_corpus(80, 1, (0.005, 0.4), words=200, seed=11)
    sigs = compute_signatures(texts, workers=1)
    params = LSHParams.from_threshold(threshold, 128)
    result = find_near_duplicates(LocalComm(), np.arange(len(texts)), sigs, params, verify_threshold=0.0)
    ours = _our_clusters(result)
    assert ours == _datasketch_clusters(texts, threshold, 128)
    planted_close = {frozenset(p) for i, p in enumerate(pairs) if i % 2 == 0}
    assert ours == planted_close
    assert sorted(result.removed.tolist()) == sorted(max(p) for p in planted_close)
    for cluster in result.clusters.records():
        assert cluster["similarity"][0] > 0.85


def test_kept_is_lowest_global_index_and_removed_are_local():
    texts, _ = planted_corpus(3, 0, words=100, seed=2)
    copies = [texts[0], texts[1], texts[0] + " extra", texts[2], texts[0]]
    doc_index = np.array([40, 12, 7, 99, 3])
    sigs = compute_signatures(copies, workers=1)
    result = find_near_duplicates(LocalComm(), doc_index, sigs, LSHParams.from_threshold(0.8))
    clusters = list(result.clusters.records())
    assert clusters == [{"kept": 3, "removed": [7, 40], "similarity": clusters[0]["similarity"]}]
    assert result.removed.tolist() == [7, 40]
    assert result.largest_cluster == 3
    assert clusters[0]["similarity"][1] == 1.0


def test_verification_stops_low_similarity_candidates():
    """Three signatures sharing only band 0 are candidates (all three pairs), but their estimated Jaccard is 8/128."""
    params = LSHParams.from_threshold(0.8, 128)
    rng = np.random.default_rng(0)
    sigs = rng.integers(0, 1 << 32, size=(3, 128), dtype=np.uint64).astype(np.uint32)
    sigs[1, : params.rows] = sigs[0, : params.rows]
    sigs[2, : params.rows] = sigs[0, : params.rows]
    verified = find_near_duplicates(LocalComm(), np.arange(3), sigs, params)
    assert (verified.candidate_pairs, verified.verified_pairs, len(verified.removed)) == (3, 0, 0)
    assert len(verified.clusters) == 0 and verified.largest_cluster == 0
    unverified = find_near_duplicates(LocalComm(), np.arange(3), sigs, params, verify_threshold=0.0)
    assert unverified.removed.tolist() == [1, 2] and unverified.largest_cluster == 3
    # an explicit verify threshold replaces the default bound (8/128 = 0.0625)
    assert params.rows == 8
    assert find_near_duplicates(LocalComm(), np.arange(3), sigs, params, 0.0625).verified_pairs == 3
    assert find_near_duplicates(LocalComm(), np.arange(3), sigs, params, 0.063).verified_pairs == 0


def test_owner_of_is_required_on_several_ranks():
    from support.sim_comm import run_ranks

    with pytest.raises(ValueError, match="owner_of is required with 2 ranks"):
        run_ranks(2, lambda comm: find_near_duplicates(comm, np.arange(1), np.zeros((1, 128), np.uint32),
                                                       LSHParams.from_threshold()))  # fmt: skip


def test_signature_shape_is_checked():
    with pytest.raises(ValueError, match="dedup.num_perm"):
        find_near_duplicates(LocalComm(), np.arange(2), np.zeros((2, 64), np.uint32), LSHParams.from_threshold())


def test_exact_dedup_keeps_first_occurrence():
    texts = ["alpha", "beta", "alpha", "gamma", "beta", "alpha", "Alpha"]
    doc_index = np.arange(100, 107)
    result = find_exact_duplicates(LocalComm(), doc_index, exact_text_hashes(texts))
    assert result.removed.tolist() == [102, 104, 105]
    assert list(result.clusters.records()) == [
        {"kept": 100, "removed": [102, 105], "similarity": [1.0, 1.0]},
        {"kept": 101, "removed": [104], "similarity": [1.0]},
    ]
    assert result.largest_cluster == 3
    assert np.array_equal(exact_text_hashes(texts), np.stack([exact_text_hash(t) for t in texts]))
    assert exact_text_hashes([]).shape == (0, 2)
    digest = exact_text_hash("alpha")
    assert digest.dtype == np.uint64 and digest.shape == (2,)
    assert not np.array_equal(digest, exact_text_hash("alpha "))


def star_signatures(members: int, changed: int = 2, seed: int = 0) -> np.ndarray:
    """A template's signature and `members` - 1 copies of it, each with `changed` random values redrawn."""
    rng = np.random.default_rng(seed)
    signatures = np.tile(rng.integers(0, 1 << 32, 128, dtype=np.uint32), (members, 1))
    rows = np.repeat(np.arange(1, members), changed)
    signatures[rows, rng.integers(0, 128, len(rows))] = rng.integers(0, 1 << 32, len(rows), dtype=np.uint32)
    return signatures


def test_a_star_is_verified_where_its_members_are():
    """A star of M copies over 4 ranks in contiguous blocks (its pivots all on rank 0). Before, every pair went to
    its pivot u's holder, which fetched every other member's signature: rank 0 received (M - M/4) x 512 B.
    Now a pair (u, v) is verified on v's holder, which fetches only pivots: u is one of the BUCKET_PIVOTS
    lowest-ranked members of a bucket, and a star has one large bucket per band, so no rank fetches more than
    BUCKET_PIVOTS x bands signatures, whatever M and N. The kept set is the one of a single rank."""
    members, ranks = 2000, 4
    signatures, params = star_signatures(members), LSHParams.from_threshold(0.8, 128)
    counts = [members // ranks] * ranks
    owner_of, starts = owner_of_blocks(counts), np.cumsum([0, *counts])

    def rank(comm):
        index = np.arange(starts[comm.rank], starts[comm.rank + 1])
        return find_near_duplicates(comm, index, signatures[index], params, owner_of=owner_of)

    results = run_ranks(ranks, rank)
    alone = find_near_duplicates(LocalComm(), np.arange(members), signatures, params)
    assert np.array_equal(np.concatenate([r.removed for r in results]), alone.removed)
    assert len(alone.removed) == members - 1
    assert results[0].candidate_pairs < 300_000  # one verification batch: the bound below is per batch
    bound = BUCKET_PIVOTS * params.bands * 4 * params.num_perm  # 32 KiB; before, rank 0 received 750 KiB
    fetched = [r.received_bytes.get("signatures", 0) for r in results]
    assert max(fetched) <= bound, fetched
