"""One large duplicate cluster must not land on rank 0: it receives summaries of the clusters, never a record.

`pipeline dedup` on simulated ranks (threads, tests/support/sim_comm.py, in one process) over a corpus whose duplicates
are one template copied M times and one text edited M times; what rank 0 gathers from the other ranks must not
grow with M.
"""

from __future__ import annotations

import json
import pickle

from support.sim_comm import run_ranks

from data_pipeline.config import load_recipe
from data_pipeline.dedup.lsh import planted_corpus
from data_pipeline.stages.dedup import run_dedup

RANKS = 4


def write_corpus(folder, copies: int) -> list[str]:
    """8 input files (tasks, dealt round-robin); the copies of both texts are spread over all of them."""
    fresh, _ = planted_corpus(16, 0, words=120, seed=1)
    template, _ = planted_corpus(1, 0, words=120, seed=2)
    edited = [f"{template[0]} signed {i}" for i in range(copies)]  # near copies of each other
    texts = fresh + [template[0]] * copies + edited
    folder.mkdir()
    for part in range(8):
        lines = [json.dumps({"id": f"p{part}-{i}", "text": t}) + "\n" for i, t in enumerate(texts[part::8])]
        (folder / f"in-{part}.jsonl").write_text("".join(lines))
    return [str(folder / "in-*.jsonl")]


def summaries_rank_zero_received(tmp_path, copies: int) -> tuple[int, dict]:
    """Bytes (pickled) of the cluster summaries rank 0 gathered from the other ranks, and the stats."""
    inputs = write_corpus(tmp_path / f"in-{copies}", copies)
    recipe = load_recipe(None, ["filters.enabled=false", "workers=1"])
    out = tmp_path / f"out-{copies}"
    comms = []

    def rank(comm):
        comms.append(comm)
        return run_dedup(comm, inputs, out, recipe, quiet=True)

    stats = run_ranks(RANKS, rank)[0]
    rank_zero = next(c for c in comms if c.rank == 0)
    gathered = [
        {k: part[k] for k in ("largest", "examples")}
        for kind, seen in rank_zero.log
        if kind == "gather" and seen
        for part in seen[1:]
        if isinstance(part, dict) and "largest" in part
    ]
    assert len(gathered) == RANKS - 1
    return sum(len(pickle.dumps(g)) for g in gathered), stats


def test_rank_zero_receives_cluster_summaries_only(tmp_path):
    """Before: every rank's largest cluster record in full (all its ids) and 3 whole records per kind."""
    small, small_stats = summaries_rank_zero_received(tmp_path, 40)
    large, large_stats = summaries_rank_zero_received(tmp_path, 800)
    # the near cluster: the kept template and its edited copies
    assert large_stats["largest_cluster"] == {"kept": "p0-2", "size": 801, "kind": "near"}
    assert large_stats["dropped"] == {"exact_dup": 799, "near_dup": 800}
    assert small_stats["largest_cluster"]["size"] == 41
    assert large < 3000 and abs(large - small) < 200, (small, large)  # the ids of 800 members are ~10 kB
