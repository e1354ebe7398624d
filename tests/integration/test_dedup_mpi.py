"""Exact and near dedup under mpiexec with 1, 2 and 3 ranks give identical removals and clusters.

Run as a script (`mpiexec -n N python tests/integration/test_dedup_mpi.py OUT.json`) each rank takes an interleaved share of
a planted corpus (global indices not contiguous per rank), runs both dedup steps over MPI collectives, and
rank 0 writes everything the ranks decided.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
MPIEXEC = REPO / ".venv" / "bin" / "mpiexec"


def planted_with_exact_copies() -> list[str]:
    from data_pipeline.dedup.lsh import planted_corpus

    texts, _ = planted_corpus(60, 2, (0.01, 0.05, 0.15, 0.5), words=120, seed=3)
    return texts + [texts[5], texts[70], texts[5]]


def route_peak_per_row(comm, rows_per_rank: int = 200_000) -> float:
    """Traced peak of one Exchange.route of 24-byte rows, a share to every rank, per row routed.

    What a route must hold besides its input: the grouping order (8 B a row), the rows grouped by destination
    (24 B, the send buffer) and the rows received (24 B: every rank sends as many as it receives here), 56 B.
    A send buffer copied once more, as the list-of-parts interface did, is 80 B."""
    import tracemalloc

    from data_pipeline.dedup.clusters import Exchange

    rows = np.arange(3 * rows_per_rank, dtype=np.int64).reshape(-1, 3)
    owners = np.arange(rows_per_rank) % comm.size
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    Exchange(comm).route(rows, owners, "route test")
    peak = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    return peak / rows_per_rank


def run_rank(out_path: str) -> None:
    from data_pipeline.comm import get_comm
    from data_pipeline.dedup.clusters import keep_priority, owner_of_blocks
    from data_pipeline.dedup.exact import exact_text_hashes, find_exact_duplicates
    from data_pipeline.dedup.lsh import LSHParams, find_near_duplicates
    from data_pipeline.dedup.minhash import compute_signatures

    comm = get_comm()
    texts = planted_with_exact_copies()
    doc_index = np.arange(comm.rank, len(texts), comm.size, dtype=np.int64)
    interleaved = lambda index: np.asarray(index) % comm.size  # noqa: E731
    mine = [texts[i] for i in doc_index]
    params = LSHParams.from_threshold(0.7)
    exact = find_exact_duplicates(comm, doc_index, exact_text_hashes(mine), None, interleaved)
    sigs = compute_signatures(mine, workers=1)
    near = find_near_duplicates(comm, doc_index, sigs, params, 0.5, None, interleaved)
    longest = keep_priority(np.array([len(t) for t in mine]), "longest")
    near_longest = find_near_duplicates(comm, doc_index, sigs, params, 0.5, longest, interleaved)
    for cluster in near_longest.clusters.records():  # the kept document is the longest text of its cluster
        assert all(len(texts[cluster["kept"]]) >= len(texts[i]) for i in cluster["removed"])
    # the same near dedup with rank 0 holding no documents at all and the rest in contiguous blocks
    blocks = np.array_split(np.arange(len(texts), dtype=np.int64), max(1, comm.size - 1))
    counts = [len(b) for b in blocks] if comm.size == 1 else [0, *(len(b) for b in blocks)]
    block = np.zeros(0, np.int64) if comm.size > 1 and comm.rank == 0 else blocks[max(0, comm.rank - 1)]
    block_sigs = compute_signatures([texts[i] for i in block], workers=1)
    near_blocks = find_near_duplicates(comm, block, block_sigs, params, 0.5, None, owner_of_blocks(counts))
    for result, held in ((exact, doc_index), (near, doc_index), (near_longest, doc_index), (near_blocks, block)):
        assert set(result.removed.tolist()) <= set(held.tolist())
        assert set(result.clusters.kept.tolist()) <= set(held.tolist())
    results = {"exact": exact, "near": near, "near_longest": near_longest, "near_blocks": near_blocks}
    gathered = comm.gather({k: (r.removed.tolist(), list(r.clusters.records())) for k, r in results.items()}, root=0)
    route_peaks = comm.gather(route_peak_per_row(comm), root=0)
    if comm.rank == 0:
        report = {"ranks": comm.size, "near_counts": [near.candidate_pairs, near.verified_pairs, near.largest_cluster]}
        for key in results:
            report[f"{key}_removed"] = sorted(i for part in gathered for i in part[key][0])
            report[f"{key}_clusters"] = sorted((c for part in gathered for c in part[key][1]), key=lambda c: c["kept"])
        report["rounds"] = near.rounds
        report["route_peak_per_row"] = max(route_peaks)
        Path(out_path).write_text(json.dumps(report, sort_keys=True))


def _run_under_mpiexec(ranks: int, tmp_path: Path) -> dict:
    out = tmp_path / f"ranks{ranks}.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [str(MPIEXEC), "-n", str(ranks), sys.executable, str(Path(__file__).resolve()), str(out)]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"mpiexec -n {ranks} failed:\n{done.stdout}\n{done.stderr}"
    report = json.loads(out.read_text())
    assert report["ranks"] == ranks
    return report


@pytest.mark.slow
@pytest.mark.mpi
@pytest.mark.skipif(not MPIEXEC.exists(), reason="needs the mpich wheel's mpiexec in .venv/bin")
def test_one_two_three_ranks_agree(tmp_path):
    reports = [_run_under_mpiexec(n, tmp_path) for n in (1, 2, 3)]
    for other in reports[1:]:
        for key in sorted(set(reports[0]) - {"ranks", "rounds", "route_peak_per_row"}):
            assert other[key] == reports[0][key], f"{key} differs between 1 and {other['ranks']} ranks"
    for report in reports[1:]:  # one rank routes nothing (no copy at all)
        assert 48 <= report["route_peak_per_row"] <= 64, (
            f"{report['ranks']} ranks: {report['route_peak_per_row']} B a row"
        )
    first = reports[0]
    assert first["near_blocks_removed"] == first["near_removed"]
    assert first["near_blocks_clusters"] == first["near_clusters"]
    assert first["exact_removed"] == [180, 181, 182]  # the three appended verbatim copies
    assert first["exact_clusters"][0] == {"kept": 5, "removed": [180, 182], "similarity": [1.0, 1.0]}
    assert first["near_longest_removed"] != first["near_removed"]  # the longer copy of a pair is kept instead
    # every copy with 1% of words changed (Jaccard ~0.92) is found, one with 50% changed (~0.03) never is
    near = set(first["near_removed"])
    assert {180, 181, 182} <= near
    texts_per_base = {base: (60 + 2 * base, 61 + 2 * base) for base in range(60)}
    for base, copies in texts_per_base.items():
        for copy_number, copy in enumerate(copies):
            fraction = (0.01, 0.05, 0.15, 0.5)[(base * 2 + copy_number) % 4]
            if fraction in (0.01, 0.5):
                assert (copy in near) == (fraction == 0.01), (base, copy, fraction)


if __name__ == "__main__":
    run_rank(sys.argv[1])
