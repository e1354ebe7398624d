"""What flows between stages: a read document, or a rejected input record with where it came from and why."""

from __future__ import annotations

from dataclasses import dataclass, field

from data_pipeline import language

# Fields the pipeline writes into every kept record itself; an input field of the same name is not kept.
PIPELINE_FIELDS = ("id", "text", "source", "language", "language_score")


@dataclass(frozen=True)
class Document:
    """One input document. `text` is NFC-normalized; `id` is the input's id or `source:line` when it had none.

    `meta` is what survives next to the text into kept/: a web page's `url` and `date` (WARC-Target-URI,
    WARC-Date), or a jsonl/parquet record's fields named by read.keep_fields.
    """

    id: str
    text: str
    source: str
    line: int
    meta: dict[str, object] = field(default_factory=dict)
    language: tuple[str, float] | None = None  # (label, score) when the scan identified it already

    def to_record(self) -> dict[str, object]:
        """The kept/ record: id, text, source, the kept metadata, and the text's language and its score.

        The language is the one the scan identified for the filters (steps.py, kept with the document in
        stages/task_documents.py), else identified here with the same model and input (data_pipeline/language.py):
        either way the label written is the one the filters decided on, and a text is identified once.
        """
        label, score = self.language or language.identify(self.text)
        return {"id": self.id, "text": self.text, "source": self.source, **self.meta, "language": label,
                "language_score": round(score, 4)}  # fmt: skip


@dataclass(frozen=True)
class Reject:
    """An input record that is not a document: never a crash, never silently lost; DIR/rejects/ and the ledger.

    `kind` is the ledger reason's prefix: `bad_input` (broken, truncated or undecodable; an error under
    read.strict), `skipped` (a web archive record that holds no page: not HTML, not HTTP 200) or `extract` (an
    HTML page with no main text). `offset` is the record's byte offset in a web archive (None elsewhere).
    """

    source: str
    line: int
    reason: str  # without the prefix, e.g. "malformed_json"
    detail: str = ""
    excerpt: str = ""
    kind: str = "bad_input"
    offset: int | None = None

    @property
    def ledger_reason(self) -> str:
        return f"{self.kind}:{self.reason}"

    def to_record(self) -> dict[str, object]:
        where = {} if self.offset is None else {"offset": self.offset}
        return {"source": self.source, "line": self.line, **where, "reason": self.ledger_reason,
                "detail": self.detail, "excerpt": self.excerpt}  # fmt: skip
