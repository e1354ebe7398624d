"""What flows between stages: a read document, or a rejected input record with where it came from and why."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Document:
    """One input document. `text` is NFC-normalized; `id` is the input's id or `source:line` when it had none."""

    id: str
    text: str
    source: str
    line: int

    def to_record(self) -> dict[str, str]:
        return {"id": self.id, "text": self.text, "source": self.source}


@dataclass(frozen=True)
class Reject:
    """A bad input record: never a crash, never silently lost; it lands in DIR/rejects/ and the ledger."""

    source: str
    line: int
    reason: str  # without the "bad_input:" prefix, e.g. "malformed_json"
    detail: str = ""
    excerpt: str = ""

    @property
    def ledger_reason(self) -> str:
        return f"bad_input:{self.reason}"

    def to_record(self) -> dict[str, object]:
        return {"source": self.source, "line": self.line, "reason": self.ledger_reason, "detail": self.detail,
                "excerpt": self.excerpt}  # fmt: skip
