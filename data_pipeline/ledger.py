"""The ledger: every input document ends with exactly one fate, kept or dropped with a named reason.

Reasons are `bad_input:<why>`, `filter:<rule>`, `exact_dup` and `near_dup`, and `exact_dup_earlier` and
`near_dup_earlier` for a duplicate of an earlier dataset's document (`pipeline dedup --against`). Each count may
name its `source` (the input file): those counts also go to a per-input breakdown, so a user sees which input the
filters emptied.
Per-rank ledgers are summed on rank 0; `check()` is the invariant the run refuses to finish without:
input_docs == kept_docs + sum(dropped), in total and, once any count named its source, for every input.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from data_pipeline.errors import PipelineError


class LedgerError(PipelineError):
    """The counts do not add up: a document was lost or counted twice. Always a bug, never to be ignored."""


@dataclass
class InputCounts:
    """One input file's documents: read, kept, and dropped by reason."""

    read: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)

    def add(self, other: InputCounts) -> None:
        self.read += other.read
        self.kept += other.kept
        self.dropped.update(other.dropped)

    def dropped_by(self, prefix: str) -> int:
        """Documents dropped for a reason starting with `prefix` (e.g. "filter:")."""
        return sum(n for reason, n in self.dropped.items() if reason.startswith(prefix))

    def to_stats(self) -> dict[str, object]:
        return {"read": self.read, "kept": self.kept, "dropped": dict(sorted(self.dropped.items()))}


@dataclass
class Ledger:
    input_docs: int = 0
    kept_docs: int = 0
    dropped: Counter = field(default_factory=Counter)
    per_input: dict[str, InputCounts] = field(default_factory=dict)

    def _input(self, source: str | None) -> InputCounts | None:
        if source is None:
            return None
        return self.per_input.setdefault(str(source), InputCounts())

    def read(self, n: int = 1, source: str | None = None) -> None:
        """Count n documents (or bad records) entering the pipeline from `source`."""
        self.input_docs += n
        if counts := self._input(source):
            counts.read += n

    def drop(self, reason: str, n: int = 1, source: str | None = None) -> None:
        if n:
            self.dropped[reason] += n
            if counts := self._input(source):
                counts.dropped[reason] += n

    def keep(self, n: int = 1, source: str | None = None) -> None:
        self.kept_docs += n
        if counts := self._input(source):
            counts.kept += n

    def total_dropped(self) -> int:
        return sum(self.dropped.values())

    def check(self) -> None:
        """Fail loudly when input_docs != kept_docs + sum(dropped), in total or for any input."""
        accounted = self.kept_docs + self.total_dropped()
        if self.input_docs != accounted:
            raise LedgerError(
                f"ledger does not add up: input_docs={self.input_docs} but kept_docs={self.kept_docs} + "
                f"dropped={self.total_dropped()} = {accounted} ({dict(self.dropped)}); this is a pipeline bug, "
                "please report it with the recipe and inputs"
            )
        if self.per_input:
            self._check_per_input()

    def _check_per_input(self) -> None:
        """Every input adds up, and the inputs sum to the totals (no count was left without its source)."""
        total = InputCounts()
        for source, counts in self.per_input.items():
            total.add(counts)
            if counts.read != counts.kept + sum(counts.dropped.values()):
                raise LedgerError(
                    f"ledger does not add up for input {source}: read={counts.read} but kept={counts.kept} + "
                    f"dropped={sum(counts.dropped.values())} ({dict(counts.dropped)}); this is a pipeline bug"
                )
        if (total.read, total.kept, total.dropped) != (self.input_docs, self.kept_docs, self.dropped):
            raise LedgerError(
                f"ledger per-input counts (read={total.read}, kept={total.kept}, dropped={dict(total.dropped)}) "
                f"differ from the totals (input_docs={self.input_docs}, kept_docs={self.kept_docs}, "
                f"dropped={dict(self.dropped)}): a count was made without its source; this is a pipeline bug"
            )

    def to_stats(self) -> dict[str, object]:
        """The stats.json core; reasons and inputs sorted so the file is byte-identical across runs."""
        return {
            "input_docs": self.input_docs,
            "kept_docs": self.kept_docs,
            "dropped": dict(sorted(self.dropped.items())),
            "per_input": {source: self.per_input[source].to_stats() for source in sorted(self.per_input)},
        }

    @classmethod
    def merged(cls, ledgers: Iterable[Ledger]) -> Ledger:
        """The sum of per-rank ledgers (rank 0 calls this on the gathered list)."""
        total = cls()
        for ledger in ledgers:
            total.input_docs += ledger.input_docs
            total.kept_docs += ledger.kept_docs
            total.dropped.update(ledger.dropped)
            for source, counts in ledger.per_input.items():
                total.per_input.setdefault(source, InputCounts()).add(counts)
        return total
