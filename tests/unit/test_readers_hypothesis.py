"""Property tests: random bytes and random JSON never crash a reader or the stage, and the ledger adds up."""

from __future__ import annotations

import codecs
import gzip
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_pipeline.comm import LocalComm
from data_pipeline.config import ReadConfig, load_recipe
from data_pipeline.documents import Document, Reject
from data_pipeline.readers import InputError, LineSplitter, OverlongLine, read_file
from data_pipeline.stages.dedup import run_dedup

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
records = st.one_of(
    st.fixed_dictionaries({"text": st.text(max_size=80)}, optional={"id": json_values}),
    st.dictionaries(st.sampled_from(["text", "id", "body"]), json_values, max_size=3),
    json_values,
)
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def write(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


def nonblank_lines(data: bytes) -> int:
    """Lines that hold a record (a byte-order mark at the very start is not one)."""
    return sum(1 for line in data.removeprefix(codecs.BOM_UTF8).split(b"\n") if line.strip())


@SETTINGS
@given(data=st.binary(max_size=400), name=st.sampled_from(["r.jsonl", "r.jsonl.gz", "r.txt"]))
def test_random_bytes_become_documents_or_rejects(data: bytes, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        items = list(read_file(str(write(Path(tmp), name, data)), ReadConfig(max_chars=100, txt_mode="blocks")))
    assert all(isinstance(i, (Document, Reject)) for i in items)
    assert all(i.line >= 1 and i.source.endswith(name) for i in items)
    if name.endswith(".jsonl"):
        assert len(items) == nonblank_lines(data)  # one fate per non-blank line
    for doc in (i for i in items if isinstance(i, Document)):
        assert doc.text.strip() and "\x00" not in doc.text and len(doc.text) <= 100
        doc.text.encode("utf-8")


@SETTINGS
@given(lines=st.lists(records, max_size=12), garbage=st.lists(st.binary(max_size=30), max_size=3))
def test_stage_ledger_adds_up_on_random_json(lines: list, garbage: list[bytes]) -> None:
    body = b"".join(json.dumps(r).encode() + b"\n" for r in lines) + b"\n".join(garbage)
    recipe = load_recipe(overrides=["workers=1", "dedup.num_perm=16", "dedup.ngram=2", "filters.min_words=3"])
    with tempfile.TemporaryDirectory() as tmp:
        corpus = write(Path(tmp), "c.jsonl", body)
        try:
            stats = run_dedup(LocalComm(), [str(corpus)], Path(tmp) / "out", recipe, quiet=True)
        except InputError as err:  # only when no record yields a document and some have other fields than text
            assert "(read.text_field)" in str(err)
            assert not any(isinstance(i, Document) for i in read_file(str(corpus), recipe.read))
            assert any(isinstance(r, dict) and r and "text" not in r for r in lines)
            return
        rejects = (Path(tmp) / "out" / "rejects" / "part-00000.jsonl").read_text().splitlines()
        kept = (Path(tmp) / "out" / "kept" / "part-00000.jsonl").read_text().splitlines()
    assert stats["input_docs"] == nonblank_lines(body)
    assert stats["input_docs"] == stats["kept_docs"] + sum(stats["dropped"].values())
    assert len(rejects) == sum(n for reason, n in stats["dropped"].items() if reason.startswith("bad_input:"))
    assert len(kept) == stats["kept_docs"]


@SETTINGS
@given(
    stream=st.binary(max_size=3000).map(lambda b: b.replace(b"\r", b"")),
    cuts=st.lists(st.integers(0, 3000), max_size=12),
    limit=st.integers(1, 400),
)
def test_line_splitting_matches_split_on_any_chunking(stream: bytes, cuts: list[int], limit: int) -> None:
    """Any chunking gives the lines of bytes.split, with each line over the limit replaced by its length."""
    bounds = sorted({0, len(stream), *(c for c in cuts if c <= len(stream))})
    chunks = [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    lines = stream.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    expected = [line if len(line) <= limit else OverlongLine(len(line)) for line in lines]
    splitter = LineSplitter(max_line_bytes=limit)
    assert list(splitter.lines(chunks)) == expected
    assert splitter.bytes_buffered <= len(stream)
