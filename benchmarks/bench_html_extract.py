"""Main-text extraction from HTML: trafilatura against resiliparse, quality against speed, on real pages.

The pages are the mdBook books and rustdoc pages shipped with the Rust toolchain on the development machine
(a navigation sidebar, a menu bar, a keyboard-help box, previous/next links around one `<main>` element), and
the HTML manuals under /usr/share/doc. The reference text of an mdBook page is the text of its `<main>`
element; quality is the word-level precision (how much of the output is main text, not boilerplate), recall
(how much of the main text survives) and F1 of each extractor's output against it, the measure of the
trafilatura and ScrapingHub extraction evaluations. Speed is pages per second of process CPU time, one core.

    PYTHONPATH=. python benchmarks/bench_html_extract.py [--pages 300]
"""

from __future__ import annotations

import argparse
import glob
import re
import time
from collections import Counter
from pathlib import Path

import lxml.html

RUST_DOCS = "/root/.rustup/toolchains/*/share/doc/rust/html"
_WORD = re.compile(r"\w+")


def mdbook_pages(limit: int) -> list[tuple[str, str]]:
    """(html, text of <main>) of mdBook pages: those with exactly one <main> holding a few hundred words."""
    pages = []
    for path in sorted(glob.glob(f"{RUST_DOCS}/*/**/*.html", recursive=True)):
        html = Path(path).read_text(errors="replace")
        if "mdbook" not in html.lower() or html.count("<main>") != 1:
            continue
        main = lxml.html.fromstring(html).find(".//main")
        if main is not None and len(_WORD.findall(main.text_content())) >= 200:
            pages.append((html, main.text_content()))
        if len(pages) == limit:
            break
    return pages


def trafilatura_text(html: str) -> str:
    """The pipeline's own extraction (data_pipeline/html_text.py): trafilatura with its fallbacks off."""
    from data_pipeline.html_text import main_text

    return main_text(html)


def trafilatura_full_text(html: str) -> str:
    """Trafilatura with its fallback extractors (readability, jusText) on: its slowest, most thorough mode."""
    import trafilatura

    return trafilatura.extract(html, include_comments=False, include_tables=True, fast=False) or ""


def resiliparse_text(html: str) -> str:
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    return extract_plain_text(HTMLTree.parse(html), main_content=True, alt_texts=False, links=False)


def word_prf(output: str, reference: str) -> tuple[float, float, float]:
    """Bag-of-words precision, recall and F1 of `output` against `reference`."""
    got, want = Counter(_WORD.findall(output.lower())), Counter(_WORD.findall(reference.lower()))
    common = sum((got & want).values())
    precision = common / max(1, sum(got.values()))
    recall = common / max(1, sum(want.values()))
    return precision, recall, 2 * precision * recall / max(1e-9, precision + recall)


def measure(name: str, extract, pages: list[tuple[str, str]]) -> dict:
    start = time.process_time()
    outputs = [extract(html) for html, _ in pages]
    seconds = time.process_time() - start
    scores = [word_prf(out, ref) for out, (_, ref) in zip(outputs, pages, strict=True)]
    mean = [sum(s[i] for s in scores) / len(scores) for i in range(3)]
    help_leaks = sum("keyboard shortcuts" in out.lower() for out in outputs)
    return {"name": name, "pages_per_s": len(pages) / seconds, "precision": mean[0], "recall": mean[1],
            "f1": mean[2], "help_box_leaks": help_leaks}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=300)
    args = parser.parse_args()
    pages = mdbook_pages(args.pages)
    print(f"{len(pages)} mdBook pages, {sum(len(h) for h, _ in pages) / len(pages) / 1024:.1f} KiB of HTML each")
    rows = [
        measure("trafilatura, fallbacks off (ours)", trafilatura_text, pages),
        measure("resiliparse", resiliparse_text, pages),
        measure("trafilatura, fallbacks on", trafilatura_full_text, pages),
    ]
    print("| extractor | pages/s (1 core) | precision | recall | F1 | pages with the keyboard-help box |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['pages_per_s']:.0f} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} "
              f"| {r['help_box_leaks']} of {len(pages)} |")  # fmt: skip
    print(f"speed ratio resiliparse / trafilatura: {rows[1]['pages_per_s'] / rows[0]['pages_per_s']:.1f}x")


if __name__ == "__main__":
    main()
