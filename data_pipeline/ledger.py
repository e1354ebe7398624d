"""The ledger: every input document ends with exactly one fate, kept or dropped with a named reason.

Reasons are `bad_input:<why>`, `filter:<rule>`, `exact_dup` and `near_dup`. Per-rank ledgers are summed on
rank 0; `check()` is the invariant the run refuses to finish without: input_docs == kept_docs + sum(dropped).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from data_pipeline.errors import PipelineError


class LedgerError(PipelineError):
    """The counts do not add up: a document was lost or counted twice. Always a bug, never to be ignored."""


@dataclass
class Ledger:
    input_docs: int = 0
    kept_docs: int = 0
    dropped: Counter = field(default_factory=Counter)

    def read(self, n: int = 1) -> None:
        """Count n documents (or bad records) entering the pipeline."""
        self.input_docs += n

    def drop(self, reason: str, n: int = 1) -> None:
        if n:
            self.dropped[reason] += n

    def keep(self, n: int = 1) -> None:
        self.kept_docs += n

    def total_dropped(self) -> int:
        return sum(self.dropped.values())

    def check(self) -> None:
        """Fail loudly when input_docs != kept_docs + sum(dropped)."""
        accounted = self.kept_docs + self.total_dropped()
        if self.input_docs != accounted:
            raise LedgerError(
                f"ledger does not add up: input_docs={self.input_docs} but kept_docs={self.kept_docs} + "
                f"dropped={self.total_dropped()} = {accounted} ({dict(self.dropped)}); this is a pipeline bug, "
                "please report it with the recipe and inputs"
            )

    def to_stats(self) -> dict[str, object]:
        """The stats.json core; reasons sorted so the file is byte-identical across runs."""
        return {
            "input_docs": self.input_docs,
            "kept_docs": self.kept_docs,
            "dropped": dict(sorted(self.dropped.items())),
        }

    @classmethod
    def merged(cls, ledgers: Iterable[Ledger]) -> Ledger:
        """The sum of per-rank ledgers (rank 0 calls this on the gathered list)."""
        total = cls()
        for ledger in ledgers:
            total.input_docs += ledger.input_docs
            total.kept_docs += ledger.kept_docs
            total.dropped.update(ledger.dropped)
        return total
