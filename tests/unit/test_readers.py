"""Readers: every format, directories and globs, generated ids, and every bad-input reason with file:line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from data_pipeline.config import ReadConfig
from data_pipeline.documents import Document, Reject
from data_pipeline.readers import InputError, ReadPosition, StrictInputError, read_file, resolve_inputs

RECORDS = [{"id": f"d{i}", "text": f"document number {i}"} for i in range(5)]


def jsonl_bytes(records: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def docs_of(path: Path, cfg: ReadConfig | None = None) -> list[Document | Reject]:
    return list(read_file(str(path), cfg or ReadConfig()))


@pytest.mark.parametrize(
    "name, compress",
    [("a.jsonl", lambda b: b), ("a.jsonl.gz", gzip.compress), ("a.jsonl.zst", zstandard.ZstdCompressor().compress)],
)
def test_jsonl_formats_round_trip(tmp_path: Path, name: str, compress) -> None:
    path = tmp_path / name
    path.write_bytes(compress(jsonl_bytes(RECORDS)))
    docs = docs_of(path)
    assert [(d.id, d.text, d.line) for d in docs] == [(r["id"], r["text"], i + 1) for i, r in enumerate(RECORDS)]
    assert all(d.source == str(path) for d in docs)


def test_zstd_with_several_frames(tmp_path: Path) -> None:
    compressor = zstandard.ZstdCompressor()
    path = tmp_path / "multi.jsonl.zst"
    path.write_bytes(compressor.compress(jsonl_bytes(RECORDS[:2])) + compressor.compress(jsonl_bytes(RECORDS[2:])))
    assert [d.id for d in docs_of(path)] == [r["id"] for r in RECORDS]


def test_parquet_with_custom_fields_and_generated_ids(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"body": ["first text", "second text"], "key": ["k1", None]}), path)
    docs = docs_of(path, ReadConfig(text_field="body", id_field="key"))
    assert [(d.id, d.text) for d in docs] == [("k1", "first text"), (f"{path}:2", "second text")]


def test_jsonl_generated_ids_and_numeric_ids(tmp_path: Path) -> None:
    path = tmp_path / "ids.jsonl"
    path.write_text('{"text": "no id here"}\n\n{"text": "numeric", "id": 7}\n')
    docs = docs_of(path)
    assert [d.id for d in docs] == [f"{path}:1", "7"]
    assert docs[1].line == 3  # blank lines still count for line numbers


def test_text_file_and_block_modes(tmp_path: Path) -> None:
    path = tmp_path / "book.txt"
    path.write_text("first para\nstill first\n\n\nsecond para\n  \nthird\n")
    whole = docs_of(path)
    assert len(whole) == 1 and whole[0].id == f"{path}:1" and "third" in whole[0].text
    blocks = docs_of(path, ReadConfig(txt_mode="blocks"))
    assert [(d.line, d.text) for d in blocks] == [(1, "first para\nstill first"), (5, "second para"), (7, "third")]


def test_text_is_nfc_normalized(tmp_path: Path) -> None:
    path = tmp_path / "nfc.jsonl"
    path.write_text(json.dumps({"text": "cafe\u0301"}) + "\n")
    assert docs_of(path)[0].text == "caf\u00e9"


def test_directories_and_globs_expand_sorted(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("b.jsonl", "a.jsonl.gz", "sub/c.txt", "notes.md", ".hidden.jsonl"):
        (tmp_path / name).write_bytes(b"")
    found = resolve_inputs([str(tmp_path)])
    assert found == [str(tmp_path / n) for n in ("a.jsonl.gz", "b.jsonl", "sub/c.txt")]
    assert resolve_inputs([str(tmp_path / "*.jsonl*"), str(tmp_path / "b.jsonl")]) == found[:2]
    assert resolve_inputs([str(tmp_path / "**" / "*.txt")]) == [str(tmp_path / "sub/c.txt")]


def test_missing_input_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nope.jsonl"):
        resolve_inputs([str(tmp_path / "nope.jsonl")])
    with pytest.raises(InputError, match="no readable files"):
        resolve_inputs([str(tmp_path / "*.parquet")])
    (tmp_path / "data.csv").write_text("x")
    with pytest.raises(InputError, match="unsupported input format"):
        resolve_inputs([str(tmp_path / "data.csv")])


BAD_LINES = [
    (b'{"id": "ok1", "text": "fine"}', None),
    (b'{"id": "x", "text": "unterminated', "malformed_json"),
    (b"[1, 2, 3]", "malformed_json"),
    (b'{"id": "x", "body": "no text field"}', "missing_text"),
    (b'{"id": "x", "text": 42}', "non_string_text"),
    (b'{"id": "x", "text": "bad \xff\xfe bytes"}', "invalid_utf8"),
    (b'{"id": "x", "text": "lone \\ud800 surrogate"}', "invalid_utf8"),
    (b'{"id": "x", "text": "nul \\u0000 inside"}', "nul_bytes"),
    (b'{"id": "x", "text": "   \\n\\t "}', "empty_text"),
    (b'{"id": "x", "text": "' + b"y" * 50 + b'"}', "too_long"),
    (b'{"id": "ok2", "text": "also fine"}', None),
]


def test_each_bad_input_reason_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(line for line, _ in BAD_LINES) + b"\n")
    items = docs_of(path, ReadConfig(max_chars=40))
    assert [(i.line, getattr(i, "reason", None)) for i in items] == [(n + 1, r) for n, (_, r) in enumerate(BAD_LINES)]
    rejects = [i for i in items if isinstance(i, Reject)]
    assert all(r.source == str(path) and r.to_record()["reason"].startswith("bad_input:") for r in rejects)


@pytest.mark.parametrize("suffix, compress", [(".gz", gzip.compress), (".zst", zstandard.ZstdCompressor().compress)])
def test_truncated_stream_keeps_complete_lines_and_rejects_the_rest(tmp_path: Path, suffix: str, compress) -> None:
    records = [{"id": f"d{i}", "text": f"line {i} " + "filler " * 30} for i in range(2000)]
    blob = compress(jsonl_bytes(records))
    path = tmp_path / f"cut.jsonl{suffix}"
    path.write_bytes(blob[: len(blob) // 2])
    items = docs_of(path)
    *docs, last = items
    assert isinstance(last, Reject) and last.reason == f"truncated_{'gzip' if suffix == '.gz' else 'zstd'}"
    assert all(isinstance(d, Document) for d in docs) and last.line == len(docs) + 1
    assert [d.id for d in docs] == [r["id"] for r in records[: len(docs)]]


def test_strict_mode_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text('{"text": "good"}\n{"text": \n')
    with pytest.raises(StrictInputError, match=rf"{path}:2: bad input \(malformed_json\)"):
        list(read_file(str(path), ReadConfig(strict=True)))
    assert len(list(read_file(str(path), ReadConfig()))) == 2


def test_corrupt_parquet_is_a_reject(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    (item,) = docs_of(path)
    assert isinstance(item, Reject) and item.reason == "unreadable_file"


@pytest.mark.parametrize("name, compress", [("p.jsonl", lambda b: b), ("p.jsonl.gz", gzip.compress)])
def test_read_position_follows_the_bytes_consumed(tmp_path: Path, name: str, compress) -> None:
    path = tmp_path / name
    path.write_bytes(compress(jsonl_bytes([{"text": f"doc {i} " + "x" * (i % 50)} for i in range(5000)])))
    position = ReadPosition()
    seen = []
    for n, _ in enumerate(read_file(str(path), ReadConfig(), position)):
        if n % 1000 == 999:
            seen.append(position.bytes_read)
    assert seen == sorted(seen) and 0 < seen[0] < seen[-1] <= path.stat().st_size


def test_every_bad_input_reason_reaches_stats_and_rejects(tmp_path: Path) -> None:
    """Through the stage: each reason counted as bad_input:<reason> and written to rejects/ with file and line."""
    from data_pipeline.comm import LocalComm
    from data_pipeline.config import load_recipe
    from data_pipeline.stages.dedup import run_dedup

    data = tmp_path / "in"
    data.mkdir()
    (data / "a.jsonl").write_bytes(b"\n".join(line for line, _ in BAD_LINES) + b"\n")
    many = jsonl_bytes([{"text": f"record {i} " + "pad " * 40} for i in range(3000)])
    (data / "b.jsonl.gz").write_bytes(gzip.compress(many)[:-5000])
    (data / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(many)[:-100])
    (data / "d.txt").write_bytes(b"not \xff utf-8")
    recipe = load_recipe(overrides=["read.max_chars=40", "filters.enabled=false", "dedup.near=false", "workers=1"])
    stats = run_dedup(LocalComm(), [str(data)], tmp_path / "out", recipe, quiet=True)
    parts = sorted((tmp_path / "out/rejects").glob("part-*.jsonl"))  # one part per task (input file), in order
    rejects = [json.loads(x) for part in parts for x in part.read_text().splitlines()]
    expected = {f"bad_input:{r}" for _, r in BAD_LINES if r} | {"bad_input:truncated_gzip", "bad_input:truncated_zstd"}
    assert {k for k in stats["dropped"] if k.startswith("bad_input:")} == expected
    assert stats["dropped"]["bad_input:invalid_utf8"] == 3  # two jsonl lines and the text file
    by_reason = {}
    for r in rejects:
        by_reason.setdefault(r["reason"], []).append((Path(r["source"]).name, r["line"]))
    assert by_reason["bad_input:malformed_json"] == [("a.jsonl", 2), ("a.jsonl", 3)]
    assert by_reason["bad_input:invalid_utf8"][-1] == ("d.txt", 1)
    assert (
        by_reason["bad_input:truncated_gzip"][0][0] == "b.jsonl.gz" and by_reason["bad_input:truncated_gzip"][0][1] > 1
    )
    assert sum(n for k, n in stats["dropped"].items() if k.startswith("bad_input:")) == len(rejects)
    assert stats["input_docs"] == stats["kept_docs"] + sum(stats["dropped"].values())
