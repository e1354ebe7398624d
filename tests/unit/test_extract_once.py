"""Each web page is extracted once: the write pass streams the scan's documents file (stages/task_documents.py).

In-process (LocalComm, workers=1): no process is started; trafilatura is counted by patching its `extract`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import trafilatura
from support.multilingual_docs import PASSAGES
from support.warc_support import ArchiveWriter, page_html

from data_pipeline.comm import LocalComm
from data_pipeline.config import load_recipe
from data_pipeline.documents import Document
from data_pipeline.stages import dedup as dedup_stage
from data_pipeline.stages.task_documents import EXCERPT_TEXT_CHARS, TaskDocumentsWriter, read_task_documents

RECIPE = ["workers=1", "filters.profile=docs", "dedup.num_perm=32"]
NO_TEXT = b"<html><body><img src='a.jpg'></body></html>"


@pytest.fixture()
def crawl(tmp_path: Path) -> tuple[Path, int]:
    """One WARC file: the English passages as pages, a copy of the first, a page with no text and an image;
    returns it and the number of HTML pages in it (what trafilatura must see, each once)."""
    writer = ArchiveWriter(tmp_path / "crawl.warc.gz")
    pages = [page_html([s + "." for s in p.split(". ")]).encode() for p in PASSAGES["en"]]
    for i, page in enumerate(pages):
        writer.response(f"https://docs.example.org/{i}.html", page)
    writer.response("https://mirror.example.net/0.html", pages[0])
    writer.response("https://docs.example.org/gallery", NO_TEXT)
    writer.response("https://docs.example.org/logo.png", b"\x89PNG" + bytes(64), "image/png")
    writer.file.close()
    return tmp_path / "crawl.warc.gz", len(pages) + 2


@pytest.fixture()
def extractions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every HTML string trafilatura.extract is given, in order (the real extraction still runs)."""
    seen: list[str] = []
    real = trafilatura.extract

    def counted(html: str, *args: object, **kwargs: object) -> str | None:
        seen.append(html)
        return real(html, *args, **kwargs)

    monkeypatch.setattr(trafilatura, "extract", counted)
    return seen


def dedup(archive: Path, out: Path) -> dict:
    return dedup_stage.run_dedup(LocalComm(), [str(archive)], out, load_recipe(None, RECIPE), quiet=True)


def test_each_page_is_extracted_once_and_every_page_has_one_fate(
    crawl: tuple[Path, int], extractions: list[str], tmp_path: Path
) -> None:
    archive, html_pages = crawl
    stats = dedup(archive, tmp_path / "out")
    assert len(extractions) == html_pages
    assert len(set(extractions)) == html_pages - 1  # the mirror's copy is the same HTML, extracted for its own record
    assert stats["input_docs"] == stats["kept_docs"] + sum(stats["dropped"].values()) == html_pages + 1
    kept = [json.loads(line) for line in (tmp_path / "out" / "kept" / "part-00000.jsonl").open()]
    assert len(kept) == stats["kept_docs"] == len(PASSAGES["en"])  # the copy removed, the empty page dropped
    assert all(r["url"].startswith("https://docs.example.org/") and r["language"] == "en" for r in kept)


def test_a_rerun_after_a_kill_before_kept_extracts_nothing(
    crawl: tuple[Path, int], extractions: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, html_pages = crawl
    dedup(archive, tmp_path / "whole")
    with monkeypatch.context() as patched:
        patched.setattr(dedup_stage, "write_kept", kill)
        with pytest.raises(KeyboardInterrupt):
            dedup(archive, tmp_path / "killed")
    assert len(extractions) == 2 * html_pages
    dedup(archive, tmp_path / "killed")  # the scan's markers and documents files are reused: kept/ from them
    assert len(extractions) == 2 * html_pages
    kept = [(tmp_path / run / "kept" / "part-00000.jsonl").read_bytes() for run in ("whole", "killed")]
    assert kept[0] == kept[1] and kept[0].count(b"\n") == len(PASSAGES["en"])


def kill(*args: object) -> None:
    raise KeyboardInterrupt


def test_task_documents_round_trip_and_dropped_ones_keep_an_excerpt(tmp_path: Path) -> None:
    docs = [
        Document("a\udc80", "passé " * 200, "in.jsonl", 3, {"url": "https://x/ü", "n": [1, 2.5, None], "d": {"k": 1}}),
        Document("b", "文字" * 500, "in.jsonl", 4),
        Document("c", "line one\nline two\r\n\u2028end", "in.jsonl", 5, {"score": float("nan")}),
    ]
    languages = [("fr", 0.9), ("zh", 0.8), ("en", 0.7)]
    with TaskDocumentsWriter(tmp_path / "docs.jsonl.zst") as writer:
        writer.add(docs[:2], [True, False], languages[:2])
        writer.add(docs[2:], [True], languages[2:])
    back = list(read_task_documents(tmp_path / "docs.jsonl.zst"))
    assert writer.count == len(back) == 3
    assert [d.language for d in back] == languages
    assert (
        back[0] == dataclasses.replace(docs[0], language=languages[0])
        and back[1].text == docs[1].text[:EXCERPT_TEXT_CHARS]
        and back[1].id == "b"
    )
    assert (back[2].id, back[2].text, back[2].line) == ("c", docs[2].text, 5)
    assert back[2].to_record()["language"] == "en"  # the scan's label, not identified again
    want = dataclasses.replace(docs[2], language=languages[2]).to_record()
    assert json.dumps(back[2].to_record()) == json.dumps(want)  # NaN != NaN, its JSON is the same


def test_each_document_is_identified_once(crawl: tuple[Path, int], tmp_path: Path, monkeypatch) -> None:
    """Language ID runs once per document, in the scan: the filters and kept/'s `language` share that label."""
    from data_pipeline import language

    texts: list[str] = []
    real = language.identify

    def counted(text: str) -> tuple[str, float]:
        texts.append(text)
        return real(text)

    monkeypatch.setattr(language, "identify", counted)
    archive, _ = crawl
    stats = dedup(archive, tmp_path / "out")
    assert len(set(texts)) == stats["kept_docs"] == len(PASSAGES["en"])
    assert len(texts) == len(set(texts)) + 1  # the mirror's copy is its own document: identified for itself
