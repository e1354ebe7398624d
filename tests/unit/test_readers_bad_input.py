"""Bad input the readers must survive cheaply: a byte-order mark, a 16 MB line, records without the text field."""

from __future__ import annotations

import codecs
import gzip
import json
import random
import tracemalloc
from pathlib import Path

import pytest
import zstandard

from data_pipeline.comm import LocalComm
from data_pipeline.config import ReadConfig, load_recipe
from data_pipeline.documents import Document
from data_pipeline.readers import InputError, LineSplitter, OverlongLine, line_byte_limit, read_file
from data_pipeline.stages.dedup import run_dedup

COMPRESSORS = {
    ".jsonl": lambda b: b,
    ".jsonl.gz": lambda b: gzip.compress(b, compresslevel=1),
    ".jsonl.zst": lambda b: zstandard.ZstdCompressor(level=1).compress(b),
}


def records_bytes(records: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_a_byte_order_mark_does_not_spoil_the_first_record(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"bom{suffix}"
    path.write_bytes(COMPRESSORS[suffix](codecs.BOM_UTF8 + records_bytes([{"text": "first"}, {"text": "second"}])))
    items = list(read_file(str(path), ReadConfig()))
    assert [(type(i), getattr(i, "text", None)) for i in items] == [(Document, "first"), (Document, "second")]


def test_a_byte_order_mark_is_stripped_from_text_files(tmp_path: Path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes(codecs.BOM_UTF8 + "Grüße aus dem Text.".encode())
    (doc,) = read_file(str(path), ReadConfig())
    assert doc.text == "Grüße aus dem Text."


def overlong_corpus(line_bytes: int) -> bytes:
    """A short record, one record whose text is `line_bytes` of hex (compresses only 2:1), another short one."""
    text = random.Random(0).randbytes(line_bytes // 2).hex()
    return records_bytes([{"text": "before"}, {"text": text}, {"text": "after"}])


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_an_overlong_line_is_rejected_in_bounded_memory(tmp_path: Path, suffix: str) -> None:
    """16 MB line, max_chars=1000: rejected as too_long without holding it (peak < 4 MiB of Python allocations)."""
    path = tmp_path / f"long{suffix}"
    path.write_bytes(COMPRESSORS[suffix](overlong_corpus(16 << 20)))
    cfg = ReadConfig(max_chars=1000)
    tracemalloc.start()
    try:
        items = list(read_file(str(path), cfg))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [getattr(i, "text", None) or i.reason for i in items] == ["before", "too_long", "after"]
    line_bytes = len(json.dumps({"text": "x" * (16 << 20)}))
    assert items[1].line == 2 and f"line is {line_bytes} bytes" in items[1].detail
    assert "read.max_chars=1000" in items[1].detail
    assert peak < 4 << 20, f"reading held {peak} bytes at once"


def test_a_long_line_within_the_limit_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl.zst"
    path.write_bytes(COMPRESSORS[".jsonl.zst"](overlong_corpus(3 << 20)))
    items = list(read_file(str(path), ReadConfig(max_chars=4 << 20)))
    assert [len(i.text) for i in items] == [6, 3 << 20, 5]


def test_line_splitting_holds_each_byte_once() -> None:
    """Linear time, checked by counting: bytes buffered for pending lines never exceed the stream's size."""
    rng = random.Random(1)
    stream = b"\n".join(rng.randbytes(rng.choice([0, 5, 300, 70_000])).replace(b"\n", b"x") for _ in range(200))
    chunks = [stream[i : i + 4096] for i in range(0, len(stream), 4096)]
    splitter = LineSplitter(max_line_bytes=1 << 30)
    assert list(splitter.lines(chunks)) == stream.split(b"\n")
    assert splitter.bytes_buffered <= len(stream)
    one_line = [b"y" * 4096] * 1000  # a single 4 MB line in 1000 chunks: quadratic code would move ~2 GB
    splitter = LineSplitter(max_line_bytes=1 << 30)
    assert list(splitter.lines(one_line)) == [b"y" * 4096 * 1000]
    assert splitter.bytes_buffered == 4096 * 1000


def test_line_splitting_counts_an_overlong_line_without_keeping_it() -> None:
    splitter = LineSplitter(max_line_bytes=10_000)
    lines = list(splitter.lines([b"ok\n" + b"z" * 4000] + [b"z" * 4000] * 49 + [b"\nlast"]))
    assert lines == [b"ok", OverlongLine(50 * 4000), b"last"]
    assert splitter.bytes_buffered <= 10_000 + len(b"last")


def test_line_byte_limit_leaves_room_for_escaped_text() -> None:
    cfg = ReadConfig(max_chars=1000)
    worst = json.dumps({"text": "\U0001f600" * 1000, "url": "u" * 100_000})  # 12 bytes per char, plus a field
    assert len(worst) <= line_byte_limit(cfg)


def fields_corpus(tmp_path: Path) -> Path:
    path = tmp_path / "web.jsonl"
    path.write_bytes(records_bytes([{"url": f"https://x/{i}", "content": f"page {i}", "lang": "en"} for i in range(5)]))
    return path


def test_no_record_with_the_text_field_names_the_key_and_the_fields(tmp_path: Path) -> None:
    recipe = load_recipe(overrides=["filters.enabled=false", "dedup.near=false", "workers=1"])
    with pytest.raises(InputError) as err:
        run_dedup(LocalComm(), [str(fields_corpus(tmp_path))], tmp_path / "out", recipe, quiet=True)
    message = str(err.value)
    assert (
        "'text' (read.text_field)" in message
        and "the 5 records without it have the fields: content, lang, url" in message
    )
    assert "--set read.text_field=content" in message


def test_parquet_without_the_text_column_names_its_columns(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"body": ["a", "b"], "id": ["1", "2"]}), path)
    recipe = load_recipe(overrides=["filters.enabled=false", "dedup.near=false", "workers=1"])
    with pytest.raises(
        InputError, match=r"the 2 records without it have the fields: body, id; did you mean --set read.text_field="
    ):
        run_dedup(LocalComm(), [str(path)], tmp_path / "out", recipe, quiet=True)


def test_empty_records_are_rejects_not_a_misnamed_field(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("{}\n{}\nnot json\n")
    recipe = load_recipe(overrides=["filters.enabled=false", "dedup.near=false", "workers=1"])
    stats = run_dedup(LocalComm(), [str(path)], tmp_path / "out", recipe, quiet=True)
    assert stats["dropped"] == {"bad_input:malformed_json": 1, "bad_input:missing_text": 2}


def test_a_misnamed_field_is_named_despite_malformed_lines(tmp_path: Path) -> None:
    path = fields_corpus(tmp_path)
    with open(path, "a") as f:
        f.write("{broken\n")
    recipe = load_recipe(overrides=["filters.enabled=false", "dedup.near=false", "workers=1"])
    with pytest.raises(InputError, match="did you mean --set read.text_field=content"):
        run_dedup(LocalComm(), [str(path)], tmp_path / "out", recipe, quiet=True)


def test_some_records_with_the_text_field_is_not_an_error(tmp_path: Path) -> None:
    path = fields_corpus(tmp_path)
    with open(path, "a") as f:
        f.write(json.dumps({"text": "one good record"}) + "\n")
    recipe = load_recipe(overrides=["filters.enabled=false", "dedup.near=false", "workers=1"])
    stats = run_dedup(LocalComm(), [str(path)], tmp_path / "out", recipe, quiet=True)
    assert stats["kept_docs"] == 1 and stats["dropped"] == {"bad_input:missing_text": 5}


def test_an_oversized_text_file_is_rejected_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_bytes(b"word " * 1000)
    (item,) = read_file(str(path), ReadConfig(max_chars=1000))
    assert (item.reason, item.detail) == ("too_long", "file is 5000 bytes, more than 4 × read.max_chars=1000")
    (doc,) = read_file(str(path), ReadConfig(max_chars=5000))
    assert len(doc.text) == 5000
