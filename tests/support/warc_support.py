"""Web archives for the tests, written with warcio (the reference WARC library): nothing is downloaded.

`PAGE` is a documentation page as sites serve it: a navigation bar, a sidebar menu, a keyboard-help box and a
footer around one article; `ARTICLE` sentences are its main text and `BOILERPLATE` the strings that must not
survive extraction.
"""

from __future__ import annotations

import io
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

ARTICLE = [
    "The list data type has some more methods, and here are all of the methods of list objects.",
    "The method append adds an item to the end of the list, and extend appends every item of an iterable.",
    "The method insert puts an item at a given position; the first argument is the index of the element before "
    "which to insert.",
    "The method remove takes away the first item whose value is equal to x, and raises a ValueError if there "
    "is no such item.",
    "The method pop removes the item at the given position in the list and returns it to the caller.",
    "Lists can be used as stacks, where the last element added is the first element retrieved.",
]
BOILERPLATE = ["Keyboard shortcuts", "Press ? to show this help", "Table of Contents", "Copyright 2001 the authors"]


def page_html(article: list[str] = ARTICLE, title: str = "Data structures", charset: str | None = None) -> str:
    meta = f'<meta charset="{charset}">' if charset else ""
    paragraphs = "".join(f"<p>{sentence}</p>" for sentence in article)
    return (
        f"<!DOCTYPE html><html><head>{meta}<title>{title}</title></head><body>"
        '<nav class="menu"><a href="/">Home</a> | <a href="/docs">Docs</a> | <a href="/blog">Blog</a></nav>'
        '<div id="sidebar"><h2>Table of Contents</h2><ul><li><a href="/a">Introduction</a></li>'
        '<li><a href="/b">Data structures</a></li><li><a href="/c">Modules</a></li></ul></div>'
        '<div id="help" class="modal"><h2>Keyboard shortcuts</h2><p>Press ? to show this help</p>'
        "<p>Press s to search</p></div>"
        f"<main><article><h1>{title}</h1>{paragraphs}</article></main>"
        "<footer><p>Copyright 2001 the authors</p><a href='/privacy'>Privacy</a></footer></body></html>"
    )


class ArchiveWriter:
    """Records into one .warc.gz (each record its own gzip member, as Common Crawl writes them)."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "wb")  # noqa: SIM115 - closed by close()
        self.writer = WARCWriter(self.file, gzip=True)
        self.offsets: list[int] = []

    def _write(self, record) -> int:
        self.offsets.append(self.file.tell())
        self.writer.write_record(record)
        return self.offsets[-1]

    def response(self, url: str, body: bytes, content_type: str | None = "text/html; charset=utf-8",
                 status: str = "200 OK", date: str = "2024-03-01T12:00:00Z") -> int:  # fmt: skip
        headers = [("Content-Type", content_type)] if content_type else []
        http = StatusAndHeaders(status, headers, protocol="HTTP/1.1")
        record = self.writer.create_warc_record(
            url, "response", payload=io.BytesIO(body), http_headers=http, warc_headers_dict={"WARC-Date": date}
        )
        return self._write(record)

    def request(self, url: str) -> int:
        http = StatusAndHeaders("GET / HTTP/1.1", [("Host", "example.com")], is_http_request=True)
        return self._write(self.writer.create_warc_record(url, "request", payload=io.BytesIO(b""), http_headers=http))

    def conversion(self, url: str, text: str, date: str = "2024-03-01T12:00:00Z") -> int:
        record = self.writer.create_warc_record(
            url, "conversion", payload=io.BytesIO(text.encode("utf-8")), warc_content_type="text/plain",
            warc_headers_dict={"WARC-Date": date},
        )  # fmt: skip
        return self._write(record)

    def raw_member(self, data: bytes) -> int:
        """Any bytes as one gzip member: a record no WARC writer would make."""
        import gzip

        self.offsets.append(self.file.tell())
        self.file.write(gzip.compress(data))
        return self.offsets[-1]

    def close(self) -> None:
        self.file.close()
