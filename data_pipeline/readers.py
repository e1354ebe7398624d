"""Readers: jsonl (plain, .gz, .zst), parquet, plain text and web archives (WARC/WET), from files, dirs and globs.

A reader yields `Document`s and `Reject`s, never raises on bad input: a malformed line, a missing or non-string
text field, invalid UTF-8, NUL bytes, an empty document, one over `read.max_chars` and a truncated gzip/zstd
stream each become a `Reject` naming file, line and reason, which the stage writes to DIR/rejects/ and counts
in the ledger. `read.strict` turns the first reject into an error naming file:line instead. A UTF-8 byte-order
mark at the start of a file is skipped.

Every compressed or plain stream is read in bounded chunks and split into lines in linear time. A line too long
to hold a text within `read.max_chars` (more than `line_byte_limit` bytes) is rejected as `too_long` before it
is decoded or parsed, and its bytes are counted, not kept: a 100 MB line costs one chunk of memory.

Metadata survives next to the text (`Document.meta`): a web page's url and date (data_pipeline/warc.py), and a
jsonl or parquet record's fields named by `read.keep_fields` (by default all of them, as a user who wrote them
expects; the fields the pipeline writes itself, `documents.PIPELINE_FIELDS`, are its own).
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import glob
import gzip
import json
import os
import unicodedata
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from data_pipeline import retries, storage, warc
from data_pipeline.config import ReadConfig
from data_pipeline.documents import PIPELINE_FIELDS, Document, Reject
from data_pipeline.errors import PipelineError

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz", ".jsonl.zst", ".jsonl.zstd", ".ndjson.zst")
SUFFIXES = (*JSONL_SUFFIXES, ".parquet", ".txt", *warc.SUFFIXES)
_CHUNK = 1 << 16  # bytes per read (compressed bytes per zstd decompress call: bounds what one call returns)
_EXCERPT_CHARS = 200
_MAX_ESCAPED_CHAR_BYTES = 12  # a JSON-escaped character outside the BMP ("\\ud83d\\ude00") is 12 bytes
_OTHER_FIELDS_BYTES = 1 << 20


class InputError(PipelineError):
    """An input path is missing, matches nothing, or has a format the pipeline cannot read."""


class StrictInputError(PipelineError):
    """A bad record under read.strict; the message starts with file:line."""


class TruncatedStream(PipelineError):
    """A compressed stream ended before its end-of-stream marker.

    Control flow inside this module: read_jsonl turns it into a `truncated_*` Reject and goes on with the next
    file. It is a PipelineError all the same, so a reader that forgot to catch it reports the file in one line.
    """


def is_supported(path: str) -> bool:
    return path.lower().endswith(SUFFIXES)


def _expand(pattern: str) -> list[str]:
    if storage.is_url(pattern):
        return [url for url in storage.expand_url(pattern) if is_supported(url)]
    if os.path.isfile(pattern):
        if not is_supported(pattern):
            raise InputError(f"{pattern}: unsupported input format; expected one of {', '.join(SUFFIXES)}")
        return [pattern]
    if os.path.isdir(pattern):
        found = (str(p) for p in Path(pattern).rglob("*") if p.is_file() and not p.name.startswith("."))
        return sorted(p for p in found if is_supported(p))
    matches = sorted(glob.glob(pattern, recursive=True))
    return [f for m in matches for f in (_expand(m) if os.path.isdir(m) else [m] if is_supported(m) else [])]


def resolve_inputs(patterns: list[str]) -> list[str]:
    """Expand files, directories and globs, in --input order, each sorted; a file named twice is read once.

    Every pattern is checked before any work starts: a typo in the fifth --input fails in the first second.
    """
    if not patterns:
        raise InputError("no --input given; pass a file, directory or glob (e.g. --input 'data/*.jsonl.gz')")
    files: dict[str, None] = {}  # insertion-ordered set
    for pattern in patterns:
        expanded = _expand(pattern)
        if not expanded:
            raise InputError(
                f"input not found or holds no readable files: {pattern} (supported: {', '.join(SUFFIXES)})"
            )
        files.update(dict.fromkeys(expanded))
    return list(files)


def line_byte_limit(cfg: ReadConfig) -> int:
    """Bytes beyond which a jsonl line cannot hold a text within read.max_chars, with room for other fields."""
    return _MAX_ESCAPED_CHAR_BYTES * cfg.max_chars + _OTHER_FIELDS_BYTES


def _zstd_chunks(raw: BinaryIO) -> Iterator[bytes]:
    """Decompressed bytes of every frame; raises TruncatedStream if the last frame never ends."""
    import zstandard

    decompressor = zstandard.ZstdDecompressor()
    dobj, finished = decompressor.decompressobj(), True
    while block := raw.read(_CHUNK):
        while block:
            finished = False
            yield dobj.decompress(block)
            block = dobj.unused_data if dobj.eof else b""
            if dobj.eof:
                dobj, finished = decompressor.decompressobj(), True
    if not finished:
        raise TruncatedStream("zstd stream ended before its end-of-frame marker")


def _file_chunks(stream: BinaryIO) -> Iterator[bytes]:
    while chunk := stream.read(_CHUNK):
        yield chunk


@dataclass(frozen=True)
class OverlongLine:
    """A line longer than the limit: only its size was kept, never its bytes."""

    nbytes: int


@dataclass
class LineSplitter:
    """Lines of a stream that arrives in chunks, each byte handled a bounded number of times.

    A line that spans chunks is gathered as a list of pieces and joined once when it ends (never re-copied per
    chunk), and once it passes `max_line_bytes` its pieces are dropped and only its length is counted.
    `bytes_buffered` (bytes ever held for a pending line) is at most the stream's size: the linear-time check.
    """

    max_line_bytes: int
    bytes_buffered: int = 0

    def lines(self, chunks: Iterable[bytes]) -> Iterator[bytes | OverlongLine]:
        pending: list[bytes] = []
        pending_bytes = 0  # the pending line's length, counted on when it is over the limit and not kept
        for chunk in chunks:
            *complete, tail = chunk.split(b"\n")
            for piece in complete:
                if pending_bytes:
                    yield self._line([*pending, piece], pending_bytes + len(piece))
                    pending, pending_bytes = [], 0
                else:
                    yield self._line([piece], len(piece))
            if tail:
                pending_bytes += len(tail)
                if pending_bytes <= self.max_line_bytes:
                    pending.append(tail)
                    self.bytes_buffered += len(tail)
                else:
                    pending = []
        if pending_bytes:
            yield self._line(pending, pending_bytes)

    def _line(self, pieces: list[bytes], nbytes: int) -> bytes | OverlongLine:
        if nbytes > self.max_line_bytes:
            return OverlongLine(nbytes)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)


@dataclass
class ReadPosition:
    """What a reader learned about a file while reading it.

    `bytes_read`: bytes of the (possibly compressed) file consumed, what progress bars show as MB/s.
    `fields_without_text`: field names of records that lack read.text_field, for the error when none has it.
    """

    bytes_read: int = 0
    fields_without_text: set[str] = field(default_factory=set)


_MAX_FIELD_NAMES = 50


def _tracked(
    lines: Iterable[bytes | OverlongLine], raw: BinaryIO, position: ReadPosition | None
) -> Iterator[bytes | OverlongLine]:
    for number, line in enumerate(lines):
        if position is not None and number % 1024 == 0:
            position.bytes_read = raw.tell()
        yield line


def _raw_lines(
    path: str, position: ReadPosition | None = None, max_line_bytes: int = 1 << 62
) -> Iterator[bytes | OverlongLine]:
    """Byte lines without their newline (or OverlongLine), for plain, gzip or zstd files."""
    lower = path.lower()
    splitter = LineSplitter(max_line_bytes)
    with storage.open_binary(path) as raw:
        if lower.endswith(".gz"):
            try:
                stream = gzip.GzipFile(fileobj=raw, mode="rb")
                yield from _tracked(splitter.lines(_file_chunks(stream)), raw, position)
            except (EOFError, zlib.error, gzip.BadGzipFile) as e:
                raise TruncatedStream(f"gzip stream is truncated or corrupt: {e}") from e
        elif lower.endswith((".zst", ".zstd")):
            import zstandard

            try:
                yield from _tracked(splitter.lines(_zstd_chunks(raw)), raw, position)
            except zstandard.ZstdError as e:
                raise TruncatedStream(f"zstd stream is corrupt: {e}") from e
        else:
            yield from _tracked(splitter.lines(_file_chunks(raw)), raw, position)


def _excerpt(raw: bytes | str) -> str:
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    return text[:_EXCERPT_CHARS]


def make_document(
    text: object, doc_id: object, source: str, line: int, cfg: ReadConfig, meta: dict | None = None
) -> Document | Reject:
    """Validate and NFC-normalize one text; every way it can be unusable has its own reject reason."""
    if text is None:
        return Reject(source, line, "missing_text", f"no '{cfg.text_field}' field (read.text_field)")
    if not isinstance(text, str):
        return Reject(
            source, line, "non_string_text", f"'{cfg.text_field}' is {type(text).__name__}", _excerpt(str(text))
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return Reject(
            source, line, "invalid_utf8", "text holds unpaired surrogates", _excerpt(text.encode("utf-8", "replace"))
        )
    if "\x00" in text:
        return Reject(source, line, "nul_bytes", "text holds NUL bytes", _excerpt(text))
    if not text.strip():
        return Reject(source, line, "empty_text", "text is empty or whitespace only")
    if len(text) > cfg.max_chars:
        return Reject(source, line, "too_long", f"{len(text)} chars > read.max_chars={cfg.max_chars}", _excerpt(text))
    text = unicodedata.normalize("NFC", text)
    return Document(str(doc_id) if doc_id is not None else f"{source}:{line}", text, source, line, meta or {})


def kept_fields(record: dict, cfg: ReadConfig) -> dict[str, object]:
    """The fields of an input record that read.keep_fields names (all, none, or a list), less the pipeline's own."""
    if cfg.keep_fields == "none":
        return {}
    names = record if cfg.keep_fields == "all" else [n for n in cfg.keep_fields if n in record]
    return {n: record[n] for n in names if n not in PIPELINE_FIELDS and n != cfg.text_field and n != cfg.id_field}


def _too_long_line(overlong: OverlongLine, source: str, line: int, cfg: ReadConfig) -> Reject:
    return Reject(
        source,
        line,
        "too_long",
        f"line is {overlong.nbytes} bytes, more than any record whose text fits read.max_chars={cfg.max_chars} "
        f"(limit {line_byte_limit(cfg)} bytes); not decoded",
    )


def _note_fields(record: dict, cfg: ReadConfig, position: ReadPosition | None) -> None:
    """Remember the fields of a record without the text field (a bounded number of names)."""
    if position is not None and cfg.text_field not in record:
        seen = position.fields_without_text
        seen.update(list(map(str, record))[: max(0, _MAX_FIELD_NAMES - len(seen))])


def _parse_json_line(
    raw: bytes, source: str, line: int, cfg: ReadConfig, position: ReadPosition | None = None
) -> Document | Reject:
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return Reject(source, line, "invalid_utf8", str(e), _excerpt(raw))
    try:
        record = json.loads(decoded)
    except (json.JSONDecodeError, RecursionError) as e:
        return Reject(source, line, "malformed_json", str(e)[:200], _excerpt(decoded))
    if not isinstance(record, dict):
        return Reject(
            source, line, "malformed_json", f"line is a JSON {type(record).__name__}, not an object", _excerpt(decoded)
        )
    _note_fields(record, cfg, position)
    return make_document(
        record.get(cfg.text_field), record.get(cfg.id_field), source, line, cfg, kept_fields(record, cfg)
    )


def jsonl_line_item(
    raw: bytes | OverlongLine, path: str, line: int, cfg: ReadConfig, position: ReadPosition | None = None
) -> Document | Reject | None:
    """One jsonl line (without its newline) as a document or a reject; None for a blank line.

    The one line handling of whole files and of byte ranges (data_pipeline/tasks.py), so both have the
    long-line guard: their lines come from a `LineSplitter`.
    """
    if isinstance(raw, OverlongLine):
        return _too_long_line(raw, path, line, cfg)
    if line == 1:  # a UTF-8 byte-order mark is not part of the first record
        raw = raw.removeprefix(codecs.BOM_UTF8)
    if not raw.strip():  # a blank line separates nothing and holds no record, but counts as a line
        return None
    return _parse_json_line(raw.rstrip(b"\r"), path, line, cfg, position)


def read_jsonl(path: str, cfg: ReadConfig, position: ReadPosition | None = None) -> Iterator[Document | Reject]:
    line = 0
    try:
        for line, raw in enumerate(_raw_lines(path, position, line_byte_limit(cfg)), start=1):
            if (item := jsonl_line_item(raw, path, line, cfg, position)) is not None:
                yield item
    except TruncatedStream as e:
        reason = "truncated_gzip" if path.lower().endswith(".gz") else "truncated_zstd"
        yield Reject(path, line + 1, reason, f"{e}; the records after line {line} are lost")


def read_parquet(path: str, cfg: ReadConfig, position: ReadPosition | None = None) -> Iterator[Document | Reject]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(storage.open_binary(path))
        names = set(parquet.schema_arrow.names)
        if position is not None and cfg.text_field not in names:
            position.fields_without_text.update(sorted(names)[:_MAX_FIELD_NAMES])
        wanted = [cfg.text_field, cfg.id_field, *kept_fields(dict.fromkeys(names), cfg)]
        columns = [c for c in dict.fromkeys(wanted) if c in names]
        line = 0
        for batch in parquet.iter_batches(columns=columns or None, batch_size=8192):
            for record in batch.to_pylist():
                line += 1
                yield make_document(
                    record.get(cfg.text_field), record.get(cfg.id_field), path, line, cfg, kept_fields(record, cfg)
                )
    except (OSError, ValueError) as e:  # pyarrow.ArrowInvalid is a ValueError
        if retries.is_transient(e):  # the file system or store failed, not the file: the task is retried
            raise
        yield Reject(path, 0, "unreadable_file", f"not a readable parquet file: {e}"[:300])


def _text_blocks(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(first line number, bytes) of each blank-line separated block."""
    block: list[bytes] = []
    first = 0
    for number, line in enumerate(data.split(b"\n"), start=1):
        if line.strip():
            first = first or number
            block.append(line)
        elif block:
            yield first, b"\n".join(block)
            block, first = [], 0
    if block:
        yield first, b"\n".join(block)


def _text_document(raw: bytes, source: str, line: int, cfg: ReadConfig) -> Document | Reject:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return Reject(source, line, "invalid_utf8", str(e), _excerpt(raw))
    return make_document(text, None, source, line, cfg)


def read_text(path: str, cfg: ReadConfig) -> Iterator[Document | Reject]:
    if cfg.txt_mode == "file" and (size := storage.file_size(path)) > 4 * cfg.max_chars + len(codecs.BOM_UTF8):
        yield Reject(path, 1, "too_long", f"file is {size} bytes, more than 4 × read.max_chars={cfg.max_chars}")
        return
    with storage.open_binary(path) as raw:
        data = raw.read().removeprefix(codecs.BOM_UTF8)
    if cfg.txt_mode == "file":
        yield _text_document(data, path, 1, cfg)
        return
    for line, block in _text_blocks(data):
        yield _text_document(block, path, line, cfg)


def read_web_archive(path: str, cfg: ReadConfig) -> Iterator[Document | Reject]:
    """The pages of a WARC or WET file as documents with their url and date (data_pipeline/warc.py)."""
    for page in warc.archive_pages(path, line_byte_limit(cfg)):
        if isinstance(page, Reject):
            yield page
            continue
        doc = make_document(page.text, page.record_id, path, page.line, cfg, {"url": page.url, "date": page.date})
        yield dataclasses.replace(doc, offset=page.offset) if isinstance(doc, Reject) else doc


def read_file(path: str, cfg: ReadConfig, position: ReadPosition | None = None) -> Iterator[Document | Reject]:
    """Documents and rejects of one input file, in file order; `position` follows the bytes consumed (jsonl).

    Under read.strict the first reject raises StrictInputError naming file:line.
    """
    lower = path.lower()
    if lower.endswith(JSONL_SUFFIXES):
        items = read_jsonl(path, cfg, position)
    elif lower.endswith(".parquet"):
        items = read_parquet(path, cfg, position)
    elif warc.is_web_archive(path):
        items = read_web_archive(path, cfg)
    else:
        items = read_text(path, cfg)
    yield from strict_items(items, cfg)


def strict_items(items: Iterator[Document | Reject], cfg: ReadConfig) -> Iterator[Document | Reject]:
    """The items as they are; under read.strict the first reject raises StrictInputError naming file:line."""
    for item in items:
        if cfg.strict and isinstance(item, Reject) and item.kind == "bad_input":
            at = "" if item.offset is None else f" (byte offset {item.offset})"
            raise StrictInputError(
                f"{item.source}:{item.line}{at}: bad input ({item.reason}): {item.detail}; "
                "fix the record or run without --strict to skip and count bad records in DIR/rejects/"
            )
        yield item


def text_field_error(docs: int, missing_text: int, fields: list[str], cfg: ReadConfig) -> InputError | None:
    """The error when no record has read.text_field but records have other fields: the key is likely misnamed."""
    if docs or not missing_text or not fields:
        return None
    close = difflib.get_close_matches(cfg.text_field, fields, n=1)
    guess = (
        close[0] if close else next((f for f in fields if f in ("content", "body", "contents", "raw_content")), None)
    )
    hint = f"; did you mean --set read.text_field={guess}?" if guess else ""
    return InputError(
        f"no input record has the text field '{cfg.text_field}' (read.text_field); the {missing_text} records "
        f"without it have the fields: {', '.join(fields)}{hint}"
    )
