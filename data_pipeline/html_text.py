"""An HTML page's main text: its bytes decoded with the declared or detected charset, then trafilatura.

Trafilatura (the extractor of FineWeb and datatrove) keeps the article and drops navigation, menus, sidebars,
keyboard-help boxes and footers; resiliparse is 13x faster but kept the keyboard-help box of all 200 pages
measured (BENCHMARKS.md, "Main text from HTML"). Its fallback extractors (readability, jusText) are off: they
cost 23% more time and changed no score there.
"""

from __future__ import annotations

import codecs
import re

# Browsers decode these labels as windows-1252 (the WHATWG Encoding Standard); so do we.
_WINDOWS_1252_LABELS = {"iso-8859-1", "iso8859-1", "latin1", "latin-1", "us-ascii", "ascii", "l1", "cp819"}
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE)
_HEADER_CHARSET = re.compile(r"""charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE)
_SNIFF_BYTES = 4096  # the HTML standard looks for <meta charset> in the first 1024 bytes; pages run longer
_DETECT_BYTES = 32768  # chardet costs ~10 ms per 10 kB: enough of a page to tell its charset


def _codec(label: str | None) -> str | None:
    """A Python codec name for a charset label, or None for a label Python does not know."""
    if not label:
        return None
    label = label.strip().lower()
    label = "cp1252" if label in _WINDOWS_1252_LABELS else label
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def declared_charset(payload: bytes, content_type: str) -> str | None:
    """The charset of the HTTP Content-Type header, else of a <meta> tag near the top of the page."""
    if found := _HEADER_CHARSET.search(content_type):
        return found.group(1)
    found = _META_CHARSET.search(payload[:_SNIFF_BYTES])
    return found.group(1).decode("ascii") if found else None


def decode_html(payload: bytes, content_type: str = "") -> str | None:
    """The page as text: its declared charset, else UTF-8, else what chardet detects; None if none decodes it.

    chardet, not charset_normalizer: on a Western page with a few accented letters in ASCII markup,
    charset_normalizer picked hp_roman8 and chardet windows-1252 (tests/unit/test_warc.py).

    A declared charset that does not decode the bytes is ignored (pages lie about their charset), never
    decoded with replacement characters.
    """
    payload = payload.removeprefix(codecs.BOM_UTF8)
    for codec in dict.fromkeys(filter(None, (_codec(declared_charset(payload, content_type)), "utf-8"))):
        try:
            return payload.decode(codec)
        except UnicodeDecodeError:
            continue
    import chardet

    detected = _codec(chardet.detect(payload[:_DETECT_BYTES])["encoding"])
    try:
        return None if detected is None else payload.decode(detected)
    except UnicodeDecodeError:
        return None


def main_text(html: str) -> str:
    """The main text of a page ('' when trafilatura finds none): paragraphs on their own lines, no markup."""
    import trafilatura

    return trafilatura.extract(html, fast=True, include_comments=False, include_tables=True) or ""
