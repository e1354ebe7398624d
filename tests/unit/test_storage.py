"""data_pipeline/storage.py on fsspec's in-memory file system (a URL, no server, no process): inputs listed and
read by URL, and an output folder published data first and completion files last, pulled back elsewhere."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pytest
import xxhash

from data_pipeline import markers, storage
from data_pipeline.comm import LocalComm
from data_pipeline.config import ReadConfig
from data_pipeline.readers import resolve_inputs
from data_pipeline.stages.execution import identify_inputs
from data_pipeline.tasks import Task, read_task


@pytest.fixture()
def memory() -> fsspec.AbstractFileSystem:
    fs = fsspec.filesystem("memory")
    fs.store.clear()
    fs.pseudo_dirs.clear()
    fs.pseudo_dirs.append("")
    return fs


def write_url(fs: fsspec.AbstractFileSystem, url: str, data: bytes) -> None:
    with fs.open(url, "wb") as f:
        f.write(data)


def test_urls_are_listed_sized_and_read_like_files(memory: fsspec.AbstractFileSystem) -> None:
    lines = b"".join(json.dumps({"id": f"d{i}", "text": f"text {i} " * 20}).encode() + b"\n" for i in range(50))
    for name in ("a.jsonl", "b.jsonl", "notes.md"):
        write_url(memory, f"memory://bucket/crawl/{name}", lines)
    found = resolve_inputs(["memory://bucket/crawl/*.jsonl"])
    assert found == [f"memory:///bucket/crawl/{name}" for name in ("a.jsonl", "b.jsonl")]  # memory:// keys start at /
    assert resolve_inputs(["memory://bucket/crawl"]) == found  # a prefix: every supported object under it
    assert storage.file_size(found[0]) == len(lines)
    half = len(lines) // 2
    ranges = [Task(0, found[0], 0, half, half), Task(1, found[0], half, len(lines), len(lines) - half)]
    ids = [d.id for t in ranges for d in read_task(t, ReadConfig())]
    assert ids == [f"d{i}" for i in range(50)]  # every line in exactly one range, in order


def test_an_objects_identity_is_its_etag_and_it_is_never_read(
    memory: fsspec.AbstractFileSystem, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = "memory://bucket/a.jsonl"
    write_url(memory, url, b'{"text": "x"}\n')
    no_etag = identify_inputs(LocalComm(), tmp_path, [url])  # the memory store reports none: content digested
    assert no_etag == {url: {"size": 14, "xxh3": xxhash.xxh3_128(b'{"text": "x"}\n').hexdigest()}}
    monkeypatch.setattr(storage, "stat", lambda path: {"size": 14, "etag": "abc"})
    monkeypatch.setattr(markers, "file_digest", lambda path: pytest.fail(f"{path} was read"))
    assert identify_inputs(LocalComm(), tmp_path / "other", [url]) == {url: {"size": 14, "xxh3": "etag:abc"}}


def make_output(folder: Path) -> None:
    for rel, text in {"kept/part-00000.jsonl": "k\n", "shards/train.arrow": "s", ".stages/dedup.json": "{}",
                      "manifest.json": "{}", ".stages/input-digests.json": "{}"}.items():  # fmt: skip
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)


def test_publish_uploads_data_first_and_completion_files_last(
    tmp_path: Path, memory: fsspec.AbstractFileSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_output(tmp_path)
    uploads: list[str] = []
    put = type(memory).put_file
    monkeypatch.setattr(type(memory), "put_file", lambda fs, lpath, rpath, **kw: uploads.append(rpath) or put(fs, lpath, rpath, **kw))  # fmt: skip
    assert storage.publish(tmp_path, "memory://out/v1") == 4
    names = [u.split("/v1/", 1)[1] for u in uploads]
    assert sorted(names[:2]) == ["kept/part-00000.jsonl", "shards/train.arrow"]
    assert sorted(names[2:]) == [".stages/dedup.json", "manifest.json"]  # the digest cache stays local
    uploads.clear()
    assert storage.publish(tmp_path, "memory://out/v1") == 0 and uploads == []  # nothing changed


def test_a_removed_marker_is_deleted_before_its_outputs_are_replaced(
    tmp_path: Path, memory: fsspec.AbstractFileSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_output(tmp_path)
    storage.publish(tmp_path, "memory://out/v1")
    (tmp_path / ".stages/dedup.json").unlink()  # a rerun invalidated the stage, then rewrote kept/
    (tmp_path / "kept/part-00000.jsonl").write_text("new\n")
    events: list[str] = []
    rm, put = type(memory).rm, type(memory).put_file
    monkeypatch.setattr(type(memory), "rm", lambda fs, path, *a, **kw: events.append(f"rm {path}") or rm(fs, path, *a, **kw))  # fmt: skip
    monkeypatch.setattr(type(memory), "put_file", lambda fs, lp, rp, **kw: events.append(f"put {rp}") or put(fs, lp, rp, **kw))  # fmt: skip
    storage.publish(tmp_path, "memory://out/v1")
    assert [e.split("/v1/")[1] for e in events] == [".stages/dedup.json", "kept/part-00000.jsonl"]
    assert events[0].startswith("rm ") and events[1].startswith("put ")


def test_pull_brings_the_published_folder_to_another_staging_folder(
    tmp_path: Path, memory: fsspec.AbstractFileSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_output(tmp_path / "a")
    storage.publish(tmp_path / "a", "memory://out/v1")
    monkeypatch.setenv(storage.STAGING_ENV, str(tmp_path / "b"))
    with storage.output_folder(LocalComm(), "memory://out/v1") as folder:
        assert folder.parent == tmp_path / "b"
        assert (folder / "kept/part-00000.jsonl").read_text() == "k\n"
        assert not (folder / ".stages/input-digests.json").exists()
        (folder / "kept/part-00001.jsonl").write_text("more\n")
    assert memory.cat("memory://out/v1/kept/part-00001.jsonl") == b"more\n"  # published when the block ended


def test_pull_replaces_a_local_file_the_bucket_never_got(tmp_path: Path, memory: fsspec.AbstractFileSystem) -> None:
    make_output(tmp_path)
    storage.publish(tmp_path, "memory://out/v1")
    (tmp_path / "kept/part-00000.jsonl").write_text("K\n")  # same size, never published (the job died)
    storage.pull("memory://out/v1", tmp_path)
    assert (tmp_path / "kept/part-00000.jsonl").read_text() == "k\n"
    assert storage.publish(tmp_path, "memory://out/v1") == 0  # the folder and the bucket agree again


def test_a_failed_block_publishes_nothing(tmp_path: Path, memory: fsspec.AbstractFileSystem, monkeypatch) -> None:
    monkeypatch.setenv(storage.STAGING_ENV, str(tmp_path))
    with pytest.raises(RuntimeError), storage.output_folder(LocalComm(), "memory://out/v2") as folder:
        (folder / "kept").mkdir()
        (folder / "kept/part-00000.jsonl").write_text("half\n")
        raise RuntimeError("a stage failed")
    assert not memory.exists("memory://out/v2/kept")


def test_an_unknown_scheme_names_the_url_and_the_fix() -> None:
    with pytest.raises(storage.StorageError, match="nosuch://b/x.*pip install"):
        storage.open_binary("nosuch://b/x.jsonl")
