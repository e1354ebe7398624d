"""Each task's documents as the scan pass read them, for the write pass: DIR/dedup/work/t-NNNNN/docs.jsonl.zst.

The scan pass reads a task once (for a web archive that read is the HTML extraction, trafilatura, the costliest
step per page) and writes every document it read here, in input order, one zstd-compressed JSON line each; the
pass that writes kept/ streams this file instead of reading the input again. So each page is extracted once.

It is done for every input format, not only for web archives: one way to feed the write pass, and one that never
reads an input twice (no second download from a bucket; an input replaced between the passes cannot mix into
kept/). What it costs: disk, the documents zstd-compressed (level 3) until the stage completes (finish.py removes
dedup/work/), and on jsonl a little CPU. Measured on the demo corpus (2,988 documents, 2.41 MB of jsonl: 0.49 MB
here), CPU seconds, best of 3: writing this file 0.037, reading it back 0.019, against 0.023 to read and parse
the jsonl again; so jsonl pays ~0.03 s per 2.4 MB (the stage took 10.3 s wall on it), while a web archive
saves its second extraction, half of the stage's CPU (BENCHMARKS.md, "WARC → kept documents per core").

Each line also holds the language the scan identified (label, score), which kept/ records: identified once.
A document a quality filter dropped is stored with the first `EXCERPT_TEXT_CHARS` characters of its text only:
the write pass needs its id, source and the start of its text (the drop log's examples), never the rest.
Lines are UTF-8 with `surrogatepass`, so an id holding a lone surrogate (an escaped one in a jsonl id) round-trips.

Memory stays bounded by the batch: the scan keeps each batch in flight (at most 2 × workers batches of ≤ 4 MB of
text) until its verdicts come back, the write pass holds one decompressed chunk and one line.

The file is one `atomic_write` (HashedFile): it appears under its name only complete, and the scan's task marker,
written after it, records its sha256; a killed scan leaves no file the write pass could take as done.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import zstandard

from data_pipeline import drop_log
from data_pipeline.documents import Document
from data_pipeline.stages.outputs import HashedFile

DOCS = "docs.jsonl.zst"
ZSTD_LEVEL = 3  # zstd's default: 2.41 MB of demo-corpus jsonl into 0.49 MB
EXCERPT_TEXT_CHARS = 2 * drop_log.EXCERPT_CHARS  # what DropLog.add reads of a dropped document's text


def _line(doc: Document, passed: bool, identified: tuple[str, float]) -> bytes:
    text = doc.text if passed else doc.text[:EXCERPT_TEXT_CHARS]
    record = [doc.id, text, doc.source, doc.line, doc.meta, list(identified)]
    return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass")


class TaskDocumentsWriter:
    """Writes one task's documents, batch by batch, compressed and hashed while written."""

    def __init__(self, path: Path) -> None:
        self.file = HashedFile(path)
        self.count = 0

    def __enter__(self) -> TaskDocumentsWriter:
        self.file.__enter__()
        self._zstd = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
        return self

    def add(self, docs: list[Document], passed: list[bool], languages: list[tuple[str, float]]) -> None:
        """A batch of documents in input order, each with whether it passed the quality filters and its language
        (so the write pass does not identify it again)."""
        lines = (_line(d, p, lang) for d, p, lang in zip(docs, passed, languages, strict=True))
        self.file.write(self._zstd.compress(b"".join(lines)))
        self.count += len(docs)

    def __exit__(self, kind: type | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if error is None:
            self.file.write(self._zstd.flush())
        self.file.__exit__(kind, error, tb)

    @property
    def path(self) -> Path:
        return self.file.path

    @property
    def sha256(self) -> str:
        return self.file.sha256


def read_task_documents(path: Path) -> Iterator[Document]:
    """The documents of a TaskDocumentsWriter file in order, streamed: one decompressed chunk and line at a time."""
    with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as stream:
        for line in io.TextIOWrapper(stream, encoding="utf-8", errors="surrogatepass", newline="\n"):
            doc_id, text, source, line_number, meta, (label, score) = json.loads(line)
            yield Document(doc_id, text, source, line_number, meta, (label, score))
