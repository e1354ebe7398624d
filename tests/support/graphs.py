"""Adversarial pair graphs (chains in several orders, stars, cliques, trees, grids, ...) for the dedup keeper
selection: tests/unit/test_dedup_components.py and benchmarks/bench_dedup_scaling.py draw from the same families."""

from __future__ import annotations

import math

import numpy as np


def graph(family: str, n: int, seed: int = 0) -> np.ndarray:
    """Adversarial verified-pair graphs on nodes 0..n-1, as (u, v) rows with u < v."""
    rng = np.random.default_rng(seed)
    if family == "chain":  # in keep order: the greedy walk alternates along it
        pairs = np.column_stack([np.arange(n - 1), np.arange(1, n)])
    elif family == "zigzag":  # a path visiting 0, n-1, 1, n-2, ...
        order = np.empty(n, np.int64)
        order[0::2], order[1::2] = np.arange((n + 1) // 2), np.arange(n - 1, (n + 1) // 2 - 1, -1)
        pairs = np.column_stack([order[:-1], order[1:]])
    elif family == "bit_reversed_chain":  # n a power of 2: each index's bits reversed
        bits = n.bit_length() - 1
        order = np.array([int(format(i, f"0{bits}b")[::-1], 2) for i in range(n)])
        pairs = np.column_stack([order[:-1], order[1:]])
    elif family == "grid":  # a square grid, rows in index order
        side = math.isqrt(n)
        cells = np.arange(side * side).reshape(side, side)
        pairs = np.concatenate([np.column_stack([cells[:, :-1].ravel(), cells[:, 1:].ravel()]),
                                np.column_stack([cells[:-1].ravel(), cells[1:].ravel()])])  # fmt: skip
    elif family == "shuffled_chain":
        order = rng.permutation(n)
        pairs = np.column_stack([order[:-1], order[1:]])
    elif family == "star":  # a template copied n - 1 times, its hub the last in keep order
        pairs = np.column_stack([np.arange(n - 1), np.full(n - 1, n - 1)])
    elif family == "clique":
        pairs = np.column_stack(np.triu_indices(n, 1))
    elif family == "tree":  # a binary tree whose root is the largest index
        child = np.arange(1, n)
        pairs = np.column_stack([n - 1 - (child - 1) // 2, n - 1 - child])
    else:  # random edges plus a chain over the first half
        pairs = np.concatenate(
            [rng.integers(0, n, (n, 2)), np.column_stack([np.arange(n // 2), np.arange(1, n // 2 + 1)])]
        )
    pairs = np.sort(pairs.astype(np.int64), axis=1)
    return np.unique(pairs[pairs[:, 0] != pairs[:, 1]], axis=0)
