"""`pipeline dedup` and `pipeline inspect` from web archives to kept/, through the CLI in a subprocess.

Two WARC files hold the tutorial's pages in English, German and Chinese (tests/support/multilingual_docs.py) inside
a site's menus and footer, a copy of one page, an image, a redirect, a page with no text at all, a page on
a blocked domain and a broken gzip member. Every record's fate is checked in stats.json, kept/ and rejects/.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.multilingual_docs import PASSAGES
from support.warc_support import ArchiveWriter, page_html

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
NO_TEXT = b"<html><head><script>var images = [];</script></head><body><img src='a.jpg'><img src='b.jpg'></body></html>"


def sentences(text: str) -> list[str]:
    """A passage as paragraphs of a page (its sentences, split after each full stop)."""
    marks = "。" if "。" in text else ". "
    return [s + marks.strip() for s in text.split(marks) if s.strip()]


def write_crawl(folder: Path) -> dict[str, int]:
    folder.mkdir()
    first, second = ArchiveWriter(folder / "a.warc.gz"), ArchiveWriter(folder / "b.warc.gz")
    for lang in ("en", "de", "zh"):
        for i, passage in enumerate(PASSAGES[lang]):
            first.request(f"https://docs.python.example/{lang}/{i}")
            first.response(f"https://{lang}.docs.example.org/tutorial/{i}.html", page_html(sentences(passage)).encode())
    offsets = {
        "copy": second.response("https://mirror.example.net/en/0.html", page_html(sentences(PASSAGES["en"][0])).encode()),
        "image": second.response("https://en.docs.example.org/logo.png", b"\x89PNG" + bytes(100), "image/png"),
        "redirect": second.response("https://en.docs.example.org/old", b"", "text/html", status="302 Found"),
        "no_text": second.response("https://en.docs.example.org/gallery", NO_TEXT),
        "blocked": second.response("https://ads.spam.example/x", page_html(sentences(PASSAGES["de"][1])).encode()),
        "broken": second.response("https://en.docs.example.org/broken", page_html(sentences(PASSAGES["en"][1])).encode()),
    }  # fmt: skip
    second.response("https://ja.docs.example.org/0.html", page_html(sentences(PASSAGES["ja"][0])).encode())
    first.close(), second.close()
    data = bytearray((folder / "b.warc.gz").read_bytes())
    data[offsets["broken"] + 200 : offsets["broken"] + 240] = bytes(40)
    (folder / "b.warc.gz").write_bytes(bytes(data))
    return offsets


def pipeline(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "data_pipeline.cli", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def test_web_archives_to_kept_documents_with_their_metadata(tmp_path: Path) -> None:
    offsets = write_crawl(tmp_path / "crawl")
    (tmp_path / "block.txt").write_text("spam.example\n")
    result = pipeline(
        "dedup", "--input", "crawl/*.warc.gz", "--output", "out", "--quiet",
        "--set", "filters.profile=docs", "--set", "filters.url_blocklist=block.txt",
        "--set", "filters.languages=[en, de, zh]", "--set", "workers=1", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    stats = json.loads((out / "stats.json").read_text())
    assert stats["dropped"] == {
        "bad_input:corrupt_record": 1, "exact_dup": 1, "extract:no_main_text": 1, "filter:language": 1,
        "filter:url_blocklist": 1, "skipped:http_status": 1, "skipped:not_html": 1,
    }  # fmt: skip
    assert stats["input_docs"] == stats["kept_docs"] + sum(stats["dropped"].values()) == 6 + 7
    kept = [json.loads(line) for part in sorted((out / "kept").glob("*.jsonl")) for line in part.open()]
    assert [(r["url"].split("/")[2].split(".")[0], r["language"]) for r in kept] == [
        ("en", "en"), ("en", "en"), ("de", "de"), ("de", "de"), ("zh", "zh"), ("zh", "zh")
    ]  # fmt: skip
    assert all(r["date"] == "2024-03-01T12:00:00Z" and r["language_score"] > 0.8 for r in kept)
    assert all("Keyboard shortcuts" not in r["text"] and "Copyright" not in r["text"] for r in kept)
    rejects = [json.loads(line) for part in sorted((out / "rejects").glob("*.jsonl")) for line in part.open()]
    assert {(r["reason"], r["offset"]) for r in rejects} == {
        ("skipped:not_html", offsets["image"]), ("skipped:http_status", offsets["redirect"]),
        ("extract:no_main_text", offsets["no_text"]), ("bad_input:corrupt_record", offsets["broken"]),
    }  # fmt: skip

    shown = pipeline("inspect", "out", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "web archive records dropped before the filters" in shown.stdout
    assert "extract:no_main_text" in shown.stdout
    languages = shown.stdout.split("languages (6 kept documents")[1].split("domains")[0]
    assert [line.split()[:2] for line in languages.strip().splitlines()[1:]] == [["de", "2"], ["en", "2"], ["zh", "2"]]
    assert "en.docs.example.org" in shown.stdout.split("domains (6 kept documents, 3 distinct)")[1]
