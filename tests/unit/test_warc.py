"""Web archives in, documents out: pages with their url, date and main text; every other record counted.

The archives are written by warcio (tests/support/warc_support.py); the record offsets our reader reports are checked
against warcio's own reader, and each kind of bad input is planted in a file with good records around it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.warc_support import ARTICLE, BOILERPLATE, ArchiveWriter, page_html
from warcio.archiveiterator import ArchiveIterator

from data_pipeline.config import ReadConfig
from data_pipeline.documents import Document, Reject
from data_pipeline.html_text import decode_html
from data_pipeline.readers import StrictInputError, read_file, resolve_inputs
from data_pipeline.warc import gzip_members, http_response

CFG = ReadConfig()


def read(path: Path, cfg: ReadConfig = CFG) -> tuple[list[Document], list[Reject]]:
    items = list(read_file(str(path), cfg))
    return [i for i in items if isinstance(i, Document)], [i for i in items if isinstance(i, Reject)]


def test_a_page_keeps_its_main_text_url_and_date_and_loses_menus_help_and_footer(tmp_path: Path) -> None:
    path = tmp_path / "crawl.warc.gz"
    archive = ArchiveWriter(path)
    archive.request("https://docs.example.org/tutorial/datastructures.html")
    archive.response("https://docs.example.org/tutorial/datastructures.html", page_html().encode())
    archive.close()
    (doc,), rejects = read(path)
    assert rejects == []
    assert all(sentence in doc.text for sentence in ARTICLE)
    assert not any(text in doc.text for text in BOILERPLATE)
    assert doc.meta == {"url": "https://docs.example.org/tutorial/datastructures.html", "date": "2024-03-01T12:00:00Z"}
    assert doc.id.startswith("urn:uuid:") and doc.line == 2
    record = doc.to_record()
    assert (record["url"], record["language"]) == (doc.meta["url"], "en") and record["language_score"] > 0.9


def test_records_that_hold_no_page_are_skipped_with_their_own_reason(tmp_path: Path) -> None:
    path = tmp_path / "crawl.warc.gz"
    archive = ArchiveWriter(path)
    image = archive.response("https://example.org/logo.png", b"\x89PNG\r\n\x1a\n" + bytes(200), "image/png")
    moved = archive.response("https://example.org/old", b"", "text/html", status="301 Moved Permanently")
    archive.response("https://example.org/a", page_html().encode())
    archive.close()
    docs, rejects = read(path)
    assert len(docs) == 1
    assert [(r.ledger_reason, r.offset) for r in rejects] == [
        ("skipped:not_html", image),
        ("skipped:http_status", moved),
    ]
    assert "301" in rejects[1].detail and "https://example.org/old" in rejects[1].detail
    # --strict stops at bad input only: a redirect is not bad input
    assert len(read(path, ReadConfig(strict=True))[0]) == 1


def test_offsets_match_warcio_and_every_record_is_numbered(tmp_path: Path) -> None:
    path = tmp_path / "crawl.warc.gz"
    archive = ArchiveWriter(path)
    for i in range(5):
        archive.request(f"https://example.org/{i}")
        archive.response(f"https://example.org/{i}", page_html(title=f"Page {i}").encode())
    archive.close()
    with open(path, "rb") as f:
        iterator = ArchiveIterator(f)
        reference = [iterator.get_record_offset() for _ in iterator]
    assert [m.offset for m in gzip_members(str(path), 1 << 20)] == reference == archive.offsets
    docs, _ = read(path)
    assert [d.line for d in docs] == [2, 4, 6, 8, 10]


def test_wet_records_are_read_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "crawl.warc.wet.gz"
    archive = ArchiveWriter(path)
    archive.conversion("https://example.org/a", "First page.\nIts second line.", date="2024-02-02T00:00:00Z")
    archive.conversion("https://example.org/b", "Zweite Seite über Größe.")
    archive.close()
    assert resolve_inputs([str(tmp_path / "*.wet.gz")]) == [str(path)]
    docs, rejects = read(path)
    assert rejects == []
    assert [d.text for d in docs] == ["First page.\nIts second line.", "Zweite Seite über Größe."]
    assert docs[0].meta == {"url": "https://example.org/a", "date": "2024-02-02T00:00:00Z"}


@pytest.mark.parametrize(
    ("content_type", "html"),
    [
        ("text/html; charset=windows-1252", page_html(title="Größe")),  # declared in the HTTP header
        ("text/html", page_html(title="Größe", charset="iso-8859-1")),  # declared in a <meta> tag
        ("text/html", page_html(title="Größe")),  # declared nowhere: detected
    ],
)
def test_pages_are_decoded_with_the_declared_or_detected_charset(content_type: str, html: str) -> None:
    payload = html.replace("Data structures", "Über die Größe der Straße").encode("cp1252")
    text = decode_html(payload, content_type)
    assert text is not None and "Über die Größe der Straße" in text


def test_bad_records_are_rejected_with_file_and_offset_and_reading_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "crawl.warc.gz"
    archive = ArchiveWriter(path)
    archive.response("https://example.org/1", page_html().encode())
    broken = archive.response("https://example.org/2", page_html(title="Broken member").encode())
    no_blank = archive.raw_member(b"WARC/1.0\r\nWARC-Type: response\r\nContent-Length: 10\r\n")
    undecodable = archive.response("https://example.org/3", bytes(range(256)) * 4, "text/html")
    empty = archive.response("https://example.org/4", b"", "text/html")
    short = archive.raw_member(b"WARC/1.0\r\nWARC-Type: response\r\nContent-Length: 500\r\n\r\nHTTP/1.1 200 OK\r\n")
    archive.response("https://example.org/5", page_html(title="Last good page").encode())
    truncated = archive.response("https://example.org/6", page_html(title="Cut off").encode())
    archive.close()
    data = bytearray(path.read_bytes())
    middle = (broken + no_blank) // 2
    data[middle : middle + 40] = bytes(40)  # deflate data of the second member overwritten
    path.write_bytes(bytes(data[: truncated + 60]))  # the last member cut short

    docs, rejects = read(path)
    assert [d.meta["url"] for d in docs] == ["https://example.org/1", "https://example.org/5"]
    assert [(r.ledger_reason, r.offset) for r in rejects] == [
        ("bad_input:corrupt_record", broken),
        ("bad_input:corrupt_record", no_blank),
        ("bad_input:undecodable_html", undecodable),
        ("bad_input:empty_payload", empty),
        ("bad_input:corrupt_record", short),
        ("bad_input:corrupt_record", truncated),
    ]
    assert "no blank line" in rejects[1].detail and "truncated" in rejects[4].detail
    assert all(r.source == str(path) and r.to_record()["offset"] == r.offset for r in rejects)
    with pytest.raises(StrictInputError, match=rf"crawl.warc.gz:2 \(byte offset {broken}\): bad input"):
        read(path, ReadConfig(strict=True))


def test_a_record_larger_than_the_limit_is_rejected_without_being_kept(tmp_path: Path) -> None:
    path = tmp_path / "crawl.warc.gz"
    archive = ArchiveWriter(path)
    big = archive.response("https://example.org/big", page_html(ARTICLE * 3000).encode())
    archive.response("https://example.org/small", page_html().encode())
    archive.close()
    docs, rejects = read(path, ReadConfig(max_chars=1000))
    assert [(r.ledger_reason, r.offset) for r in rejects] == [("bad_input:too_long", big)]
    assert [d.meta["url"] for d in docs] == ["https://example.org/small"]


def test_http_payloads_are_unchunked_and_decompressed() -> None:
    import gzip

    body = b"<html><body><p>hello</p></body></html>"
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n" + body[:16] + b"\r\n"
    chunked += f"{len(body) - 16:x}".encode() + b"\r\n" + body[16:] + b"\r\n0\r\n\r\n"
    assert http_response(chunked) == (200, {"transfer-encoding": "chunked"}, body)
    zipped = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n" + gzip.compress(body)
    assert http_response(zipped)[2] == body
    assert "no HTTP status line" in http_response(b"garbage\r\n\r\nbody")


def test_a_warc_file_is_one_task_and_a_crawl_balances_by_count() -> None:
    """Common Crawl's ~1 GB files are never cut (gzip has no byte ranges); many alike files balance anyway."""
    import numpy as np

    from data_pipeline.tasks import assign_tasks, load_balance, plan_tasks

    sizes = [int(s) for s in np.random.default_rng(0).uniform(0.9e9, 1.1e9, 9000)]
    tasks = plan_tasks([f"CC-MAIN-{i:05d}.warc.gz" for i in range(len(sizes))], sizes, task_bytes=128 << 20)
    assert [(t.start, t.end) for t in tasks] == [(0, None)] * len(sizes)
    assert load_balance(sizes, assign_tasks(sizes, 64), 64) < 1.005
    assert load_balance(sizes[:100], assign_tasks(sizes[:100], 64), 64) > 1.2  # 1 or 2 files a rank


def test_a_false_gzip_header_inside_a_broken_member_is_not_a_second_reject(tmp_path: Path) -> None:
    path = tmp_path / "crawl.warc.gz"
    archive = ArchiveWriter(path)
    archive.response("https://example.org/1", page_html().encode())
    broken = archive.response("https://example.org/2", page_html(title="Broken").encode())
    archive.response("https://example.org/3", page_html(title="Last").encode())
    archive.close()
    data = bytearray(path.read_bytes())
    data[broken + 30 : broken + 60] = b"\x1f\x8b\x08" + bytes(27)  # garbage holding a gzip header's bytes
    path.write_bytes(bytes(data))
    docs, rejects = read(path)
    assert [d.meta["url"] for d in docs] == ["https://example.org/1", "https://example.org/3"]
    assert [(r.reason, r.offset) for r in rejects] == [("corrupt_record", broken)]
