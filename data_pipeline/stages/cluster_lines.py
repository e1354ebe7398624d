"""The lines of dedup/clusters.jsonl one rank writes, streamed from its packed clusters a round of ids at a time.

One JSON line per cluster, {"kind", "dataset" (only for a kept document of an earlier dataset), "kept",
"removed", "similarity"}, with document ids in place of global indices, in file order: the kept document's task,
exact clusters before the others, the kept index (ties: the order the kinds were found in). Each task's lines are
one piece of the file, which stages/write.py places at its offset.

The members of a rank's clusters in file order (each cluster's kept document, then its removed ones) form one
sequence; round r covers its members r * ROUND_MEMBERS onwards, whatever clusters they belong to. A giant
cluster's line is written in parts as its members' ids arrive, so a rank holds its packed arrays and one round
of ids, never a list of a cluster. What rank 0 needs for stats.json and the report (`summary`) is taken on the
way, from the same ids.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from data_pipeline.dedup.clusters import PackedClusters
from data_pipeline.stages.duplicates import GlobalIndex

ROUND_MEMBERS = 1 << 16  # member ids one rank asks for per round: ~10 MB of requests, answers and ids
SHOWN = 3  # clusters per kind the summary shows, each cut to this many removed members
EXAMPLE_KINDS = ("exact", "near")


class ClusterLines:
    """This rank's clusters in file order, written as JSON lines to a spool file one round at a time.

    Per cluster it holds its place in the file order (its kind, position, task and first member: 25 bytes), and
    per member nothing beyond the packed arrays it reads from.
    """

    def __init__(self, packs: list[PackedClusters], index: GlobalIndex) -> None:
        self.packs, self.index = packs, index
        kind_of = np.concatenate([np.full(len(p), k, np.int8) for k, p in enumerate(packs)] or [np.zeros(0, np.int8)])
        position = np.concatenate([np.arange(len(p), dtype=np.int64) for p in packs] or [np.zeros(0, np.int64)])
        kept = np.concatenate([p.kept for p in packs] or [np.zeros(0, np.int64)])
        task = index.task_of(kept) if len(kept) else np.zeros(0, np.int64)
        not_exact = np.array([p.kind != "exact" for p in packs], bool)[kind_of]
        order = np.lexsort((kind_of, kept, not_exact, task))
        self.kind_of, self.position, self.task = kind_of[order], position[order], task[order]
        sizes = np.concatenate([p.sizes() for p in packs] or [np.zeros(0, np.int64)])[order]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)  # each line's first member
        self.piece_start: dict[int, int] = {}  # task -> spool offset of its first line
        self.examples = example_lines(self.kind_of, [p.kind for p in packs])
        self.largest = int(np.argmax(sizes)) if len(sizes) else None  # the first line of the largest size
        self.shown: dict[int, dict] = {line: {} for line in [*self.examples, self.largest] if line is not None}

    def rounds(self) -> int:
        """Rounds this rank needs to write all its lines."""
        return -(-int(self.starts[-1]) // ROUND_MEMBERS)

    def members(self, round_: int) -> np.ndarray:
        """Global indices (int64) of the round's members, in file order: the ids `write` needs, in its order."""
        parts = [np.zeros(0, np.int64)]
        for line, first, stop in self._segments(round_):
            pack, c = self._cluster(line)
            if first == 0:
                parts.append(pack.kept[c : c + 1])
            base = int(pack.bounds[c]) - 1  # member m >= 1 is removed[base + m]
            parts.append(pack.removed[base + max(first, 1) : base + stop])
        return np.concatenate(parts)

    def write(self, round_: int, ids: list[bytes], spool: BinaryIO) -> None:
        """Write the round's part of each line it covers, given the ids (JSON text) of `members(round_)`: a line's
        head with its kept id, its removed ids, and its tail (the similarities) after its last member."""
        at = 0
        for line, first, stop in self._segments(round_):
            pack, c = self._cluster(line)
            if first == 0:
                self.piece_start.setdefault(int(self.task[line]), spool.tell())
                spool.write(self._head(line, pack, ids[at]))
                at, first = at + 1, 1
            removed = ids[at : at + stop - first]
            at += len(removed)
            spool.write((b", " if first > 1 and removed else b"") + b", ".join(removed))
            if line in self.shown and first <= SHOWN:
                self.shown[line]["removed"] += [json.loads(i) for i in removed[: SHOWN + 1 - first]]
            if stop == self.starts[line + 1] - self.starts[line]:
                self._write_tail(pack, c, spool)

    def pieces(self, end: int) -> dict[int, tuple[int, int]]:
        """{task: (spool offset, bytes)} of the lines written, `end` being the spool's size."""
        tasks = sorted(self.piece_start)
        starts = [self.piece_start[t] for t in tasks]
        stops = [*starts[1:], end] if tasks else []
        return {t: (start, stop - start) for t, start, stop in zip(tasks, starts, stops, strict=True)}

    def summary(self) -> dict:
        """What rank 0 gathers from this rank: the largest cluster's (size, {"kept", "kind"}) (the first in file
        order of that size) and the first SHOWN records of each example kind, cut to SHOWN members; a few hundred
        bytes whatever the clusters' sizes. Complete once every round is written."""
        largest = None
        if self.largest is not None:
            size, record = int(self.starts[self.largest + 1] - self.starts[self.largest]), self.shown[self.largest]
            largest = (size, {"kept": record["kept"], "kind": record["kind"]})
        examples = {kind: [self.shown[line] for line in self.examples if self.shown[line]["kind"] == kind]
                    for kind in EXAMPLE_KINDS}  # fmt: skip
        return {"largest": largest, "examples": examples}

    def _segments(self, round_: int) -> Iterator[tuple[int, int, int]]:
        """(line, first, stop): the round covers members first..stop-1 of each of these lines (0: the kept one)."""
        begin = round_ * ROUND_MEMBERS
        end = min(begin + ROUND_MEMBERS, int(self.starts[-1]))
        line = int(np.searchsorted(self.starts, begin, side="right")) - 1
        while line < len(self.task) and self.starts[line] < end:
            start, stop = int(self.starts[line]), int(self.starts[line + 1])
            yield line, max(begin, start) - start, min(end, stop) - start
            line += 1

    def _cluster(self, line: int) -> tuple[PackedClusters, int]:
        return self.packs[self.kind_of[line]], int(self.position[line])

    def _head(self, line: int, pack: PackedClusters, kept_id: bytes) -> bytes:
        """'{"kind": ..., ["dataset": ...,] "kept": ID, "removed": [' as json.dumps writes a record."""
        head = {"kind": pack.kind, **self.index.dataset_of(int(self.task[line]))}
        if line in self.shown:
            start = int(pack.bounds[self.position[line]])
            sims = pack.similarities(start, min(start + SHOWN, int(pack.bounds[self.position[line] + 1])))
            self.shown[line] |= {**head, "kept": json.loads(kept_id), "removed": [], "similarity": sims.tolist()}
        return json.dumps(head, ensure_ascii=False)[:-1].encode() + b', "kept": ' + kept_id + b', "removed": ['

    @staticmethod
    def _write_tail(pack: PackedClusters, c: int, spool: BinaryIO) -> None:
        """'], "similarity": [...]}' and the newline, the similarities formatted a round's worth at a time."""
        start, stop = int(pack.bounds[c]), int(pack.bounds[c + 1])
        spool.write(b'], "similarity": [')
        for at in range(start, stop, ROUND_MEMBERS):
            text = json.dumps(pack.similarities(at, min(at + ROUND_MEMBERS, stop)).tolist())[1:-1]
            spool.write((", " if at > start else "").encode() + text.encode())
        spool.write(b"]}\n")


def example_lines(kind_of: np.ndarray, kinds: list[str]) -> list[int]:
    """The first SHOWN lines (file order) of each example kind, ascending; kinds[k] is pack k's kind."""
    lines: list[int] = []
    for kind in EXAMPLE_KINDS:
        lines += np.flatnonzero(np.isin(kind_of, [k for k, name in enumerate(kinds) if name == kind]))[:SHOWN].tolist()
    return sorted(lines)
