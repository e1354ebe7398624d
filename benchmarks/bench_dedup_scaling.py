"""Near dedup on adversarial inputs over simulated ranks: keeper rounds, and bytes each rank receives.

1. Rounds: chains (in keep order, zigzag, shuffled), stars, cliques, binary trees and random graphs of verified
   pairs, documents dealt round-robin over N ranks (as `assign_tasks` deals equal tasks), through
   `select_keepers`: its pull rounds where the documents live + the component rounds of what they left undecided.
   The anchor is what the keeper selection before components needed on the chain: one exchange round per crossing
   of ranks along it in keep order (n - 1 when interleaved; 1,999 measured at n = 2,000).
2. One large cluster: M near-identical signatures (one value differs per copy) among M unrelated ones, through
   `find_near_duplicates` on N ranks; per phase, the most any rank received per cluster member and the ratio to
   the mean over ranks (1.0 = perfectly spread).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_dedup_scaling.py [--nodes 2000] [--members 20000]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.graphs import graph  # noqa: E402
from support.sim_comm import run_ranks  # noqa: E402

from data_pipeline.dedup.clusters import Exchange, rank_key  # noqa: E402
from data_pipeline.dedup.components import round_bound, select_keepers  # noqa: E402
from data_pipeline.dedup.lsh import LSHParams, find_near_duplicates  # noqa: E402

RANK_COUNTS = (1, 2, 4, 8, 16)


def rounds_on(size: int, pairs: np.ndarray, n: int) -> tuple[str, int]:
    """("pull rounds+component rounds", documents removed) of select_keepers with documents dealt round-robin."""
    holder = np.arange(n) % size
    keys = rank_key(np.zeros(n, np.int64))

    def rank(comm):
        index = np.flatnonzero(holder == comm.rank)
        mine = holder[pairs[:, 1]] == comm.rank  # verification leaves a pair on v's holder
        owner_of = lambda i: holder[np.asarray(i, np.int64)]  # noqa: E731
        sims = np.full(int(mine.sum()), 0.9)
        return select_keepers(Exchange(comm), pairs[mine], sims, index, keys[index], owner_of)

    results = run_ranks(size, rank)
    return f"{results[0].greedy_rounds}+{results[0].component_rounds}", sum(len(r.removed) for r in results)


def rounds_table(nodes: int) -> None:
    print(f"keeper rounds, pulls + components, documents dealt round-robin (log2 n = {math.log2(nodes):.1f}; pulls at "
          f"most greedy_round_bound + 1, components guarded by round_bound)")  # fmt: skip
    print(f"{'graph':<16} {'n':>6} " + " ".join(f"{'N=' + str(s):>7}" for s in RANK_COUNTS) + "  removed  before")
    for family in (
        "chain",
        "zigzag",
        "bit_reversed_chain",
        "shuffled_chain",
        "star",
        "clique",
        "tree",
        "grid",
        "random",
    ):
        n = {"clique": 60, "bit_reversed_chain": 2048}.get(family, nodes)
        pairs = graph(family, n)
        runs = [rounds_on(size, pairs, n) for size in RANK_COUNTS]
        assert len({r[1] for r in runs}) == 1, f"{family}: the kept set depends on N"
        before = f"{n - 1} at N>1" if family == "chain" else "-"
        row = " ".join(f"{r[0]:>7}" for r in runs)
        print(f"{family:<16} {len(np.unique(pairs)):>6} {row} {runs[0][1]:>8}  {before}  (guard {round_bound(n)})")


def large_cluster(members: int) -> None:
    rng = np.random.default_rng(0)
    n = 2 * members
    sigs = rng.integers(0, 1 << 32, (n, 128), dtype=np.uint64).astype(np.uint32)
    sigs[:members] = sigs[0]
    sigs[np.arange(members), rng.integers(0, 128, members)] += np.uint32(1)
    sigs = sigs[rng.permutation(n)]
    params = LSHParams.from_threshold(0.8, 128)
    print(f"\none cluster of {members} near-identical documents among {n}; {params.describe()}")
    for size in RANK_COUNTS:

        def rank(comm, size=size):
            index = np.arange(comm.rank, n, size)
            owner_of = lambda i: np.asarray(i) % size  # noqa: E731
            return find_near_duplicates(comm, index, sigs[index], params, None, None, owner_of)

        started = time.perf_counter()
        results = run_ranks(size, rank)
        removed = sum(len(r.removed) for r in results)
        print(f"  N={size}: {removed} removed, {results[0].rounds} keeper rounds, "
              f"{results[0].verified_pairs} verified pairs, {time.perf_counter() - started:.1f} s")  # fmt: skip
        for phase in sorted({p for r in results for p in r.received_bytes}):
            got = np.array([r.received_bytes.get(phase, 0) for r in results], np.float64)
            spread = f"{got.max() / got.mean():5.2f}" if got.any() else "    -"  # nothing crossed ranks
            print(f"    {phase:<24} max {got.max() / members:7.1f} B/member  max/mean {spread}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--members", type=int, default=20000)
    args = parser.parse_args()
    rounds_table(args.nodes)
    large_cluster(args.members)


if __name__ == "__main__":
    main()
