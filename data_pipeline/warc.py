"""Web archives: WARC files (HTML pages in HTTP responses) and WET files (their text), gzip member by member.

Common Crawl writes one gzip member per record, so a member is what we decompress, parse and, when it is
broken, reject: a corrupt or truncated member becomes a `bad_input` Reject naming the file and the member's
byte offset, and reading goes on at the next gzip header after it. Nothing in a record can crash the reader:
a WARC header without its blank line, a block shorter than its Content-Length, an HTTP response without
headers, an empty payload and an undecodable page each have their own reject reason.

A record becomes a document when it is a WARC `response` with HTTP status 200 and an HTML payload (its main
text, data_pipeline/html_text.py) or a WET `conversion` record (its text as it is). Responses that hold no
page (another status, another content type) are counted as `skipped:<why>`; a page with no main text as
`extract:no_main_text`. Requests, metadata, warcinfo and revisit records are not documents and are not
counted. Documents keep `url` (WARC-Target-URI) and `date` (WARC-Date); their id is the WARC-Record-ID.

A gzip file cannot be split at byte offsets, so a WARC file is one task (data_pipeline/tasks.py).
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from data_pipeline.documents import Reject
from data_pipeline.html_text import decode_html, main_text

SUFFIXES = (".warc.gz", ".wet.gz")
_CHUNK = 1 << 16
_GZIP_MAGIC = b"\x1f\x8b\x08"
_HTML_TYPES = ("text/html", "application/xhtml+xml")


@dataclass(frozen=True)
class Member:
    """One gzip member of the file: its decompressed bytes, or why it could not be read (`error`)."""

    offset: int
    data: bytes = b""
    error: str = ""
    reason: str = "corrupt_record"  # the reject reason when `error` is set


@dataclass(frozen=True)
class Record:
    """One WARC record: its header fields (names lower-cased) and its block."""

    offset: int
    headers: dict[str, str]
    block: bytes

    def get(self, name: str) -> str:
        return self.headers.get(name, "")


def is_web_archive(path: str) -> bool:
    return path.lower().endswith(SUFFIXES)


def _next_member_start(f, start: int) -> int | None:
    """Offset of the next gzip header at or after `start`, or None: where reading resumes after a bad member."""
    f.seek(start)
    carry = b""
    while block := f.read(_CHUNK):
        found = (carry + block).find(_GZIP_MAGIC)
        if found >= 0:
            return start - len(carry) + found
        start, carry = start + len(block), block[-(len(_GZIP_MAGIC) - 1) :]
    return None


def _member_at(f, offset: int, max_bytes: int) -> tuple[Member, int]:
    """The member starting at `offset` and the offset after it; raises zlib.error/EOFError when it is broken."""
    f.seek(offset)
    inflate = zlib.decompressobj(wbits=31)
    parts: list[bytes] = []
    size = fed = 0
    while not inflate.eof:
        block = f.read(_CHUNK)
        if not block:
            raise EOFError(f"the member ends after {fed} bytes, before its end-of-stream marker (truncated file)")
        fed += len(block)
        data = inflate.decompress(block)
        size += len(data)
        if size <= max_bytes:
            parts.append(data)
    end = offset + fed - len(inflate.unused_data)
    if size > max_bytes:
        detail = f"record is {size} bytes decompressed, more than {max_bytes} (read.max_chars); not kept"
        return Member(offset, error=detail, reason="too_long"), end
    return Member(offset, b"".join(parts)), end


def gzip_members(path: str, max_bytes: int) -> Iterator[Member]:
    """Every gzip member of `path` in order; a broken one is a Member with `error`, and reading goes on after it.

    After a broken member, reading resumes at the next gzip header; compressed bytes can hold a header's three
    bytes by chance, so a resumed start that does not decompress is passed over silently: one broken member is
    one reject.
    """
    with open(path, "rb") as f:
        offset: int | None = 0
        resuming = False
        while offset is not None:
            f.seek(offset)
            if not f.read(1):
                return
            try:
                member, offset = _member_at(f, offset, max_bytes)
            except (zlib.error, EOFError, gzip.BadGzipFile) as e:
                broken, offset = Member(offset, error=f"corrupt gzip member: {e}"), _next_member_start(f, offset + 1)
                if not resuming:
                    yield broken
                resuming = True
                continue
            resuming = False
            yield member


def _parse_headers(lines: list[bytes]) -> dict[str, str]:
    headers = {}
    for line in lines:
        name, sep, value = line.decode("utf-8", "replace").partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def parse_records(member: Member) -> Iterator[Record | str]:
    """The WARC records of one member's bytes, or a string saying why the rest of it is not a record."""
    data, position = member.data, 0
    while position < len(data):
        while data.startswith(b"\r\n", position):
            position += 2
        if position >= len(data):
            return
        head_end = data.find(b"\r\n\r\n", position)
        if not data.startswith(b"WARC/", position):
            yield f"not a WARC record (starts with {data[position : position + 20]!r})"
            return
        if head_end < 0:
            yield "WARC header has no blank line after it (truncated or corrupt record)"
            return
        headers = _parse_headers(data[position:head_end].split(b"\r\n")[1:])
        length = headers.get("content-length", "")
        if not length.isdigit():
            yield f"WARC header has no valid Content-Length ({length!r})"
            return
        block_start = head_end + 4
        block = data[block_start : block_start + int(length)]
        if len(block) < int(length):
            yield f"record block has {len(block)} of its {length} bytes (truncated)"
            return
        yield Record(member.offset, headers, block)
        position = block_start + int(length)


@dataclass(frozen=True)
class WebPage:
    """The text of one archived page and where it came from; readers.py makes it a Document."""

    line: int  # the record's number in its file (1-based, every record counted)
    offset: int  # byte offset of the record's gzip member
    record_id: str
    url: str
    date: str
    text: str


def _split_head(block: bytes) -> tuple[list[bytes], bytes] | None:
    """An HTTP message's header lines and body, or None when no blank line ends the headers."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        end = block.find(separator)
        if end >= 0:
            return block[:end].replace(b"\r\n", b"\n").split(b"\n"), block[end + len(separator) :]
    return None


def _dechunk(body: bytes) -> bytes:
    """The payload of a `Transfer-Encoding: chunked` body; stops at the last chunk or where the body breaks off."""
    parts, position = [], 0
    while (line_end := body.find(b"\r\n", position)) >= 0:
        try:
            size = int(body[position:line_end].split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        parts.append(body[line_end + 2 : line_end + 2 + size])
        position = line_end + 4 + size
    return b"".join(parts)


def http_response(block: bytes) -> tuple[int, dict[str, str], bytes] | str:
    """(status, headers with lower-cased names, payload) of an HTTP response, or why it is not one."""
    split = _split_head(block)
    if split is None:
        return "HTTP response has no blank line after its headers"
    lines, body = split
    status = lines[0].split(None, 2)
    if len(status) < 2 or not status[0].startswith(b"HTTP/") or not status[1].isdigit():
        return f"no HTTP status line ({lines[0][:40]!r})"
    headers = _parse_headers(lines[1:])
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    encoding = headers.get("content-encoding", "identity").lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        try:
            body = zlib.decompress(body, wbits=47)  # 47: gzip or zlib, told apart by the header
        except zlib.error as e:
            return f"Content-Encoding {encoding} payload does not decompress: {e}"
    elif encoding not in ("", "identity"):
        return f"unsupported Content-Encoding {encoding!r}"
    return int(status[1]), headers, body


def _is_html(content_type: str, payload: bytes) -> bool:
    """By the declared type, or, when none is declared, by how the payload starts."""
    if content_type:
        return content_type.split(";")[0].strip().lower() in _HTML_TYPES
    return payload.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html"))


def _page(record: Record, line: int, text: str) -> WebPage:
    record_id = record.get("warc-record-id").strip("<>") or f"offset:{record.offset}"
    return WebPage(line, record.offset, record_id, record.get("warc-target-uri"), record.get("warc-date"), text)


def _response_page(record: Record, path: str, line: int) -> WebPage | Reject:
    """The main text of an HTML page in a response record, or the Reject that says why there is none."""

    def reject(reason: str, detail: str, kind: str = "bad_input") -> Reject:
        return Reject(
            path, line, reason, f"{detail} ({record.get('warc-target-uri')})", kind=kind, offset=record.offset
        )

    response = http_response(record.block)
    if isinstance(response, str):
        return reject("bad_http_response", response)
    status, headers, payload = response
    if status != 200:
        return reject("http_status", f"HTTP status {status}", kind="skipped")
    content_type = headers.get("content-type") or record.get("warc-identified-payload-type")
    if not _is_html(content_type, payload):
        return reject("not_html", f"Content-Type {content_type or 'missing'}", kind="skipped")
    if not payload.strip():
        return reject("empty_payload", "HTTP 200 response with an empty payload")
    html = decode_html(payload, content_type)
    if html is None:
        return reject("undecodable_html", "no charset declared and none detected decodes the page")
    text = main_text(html)
    if not text.strip():
        return reject("no_main_text", "the extractor found no main text", kind="extract")
    return _page(record, line, text)


def _conversion_page(record: Record, path: str, line: int) -> WebPage | Reject:
    """A WET record's text, as it is (Common Crawl writes it in UTF-8)."""
    try:
        return _page(record, line, record.block.decode("utf-8"))
    except UnicodeDecodeError as e:
        return Reject(path, line, "invalid_utf8", str(e), record.block[:200].decode("utf-8", "replace"),
                      offset=record.offset)  # fmt: skip


def archive_pages(path: str, max_record_bytes: int) -> Iterator[WebPage | Reject]:
    """Pages and rejects of one WARC or WET file, in file order (records that are not documents are skipped)."""
    line = 0
    for member in gzip_members(path, max_record_bytes):
        if member.error:
            line += 1
            yield Reject(path, line, member.reason, member.error, offset=member.offset)
            continue
        for record in parse_records(member):
            line += 1
            if isinstance(record, str):
                yield Reject(path, line, "corrupt_record", record, offset=member.offset)
            elif record.get("warc-type") == "response":
                yield _response_page(record, path, line)
            elif record.get("warc-type") == "conversion":
                yield _conversion_page(record, path, line)
