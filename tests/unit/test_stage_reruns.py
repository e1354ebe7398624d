"""Reruns of `pipeline run` in the same output folder: a byte-identical corpus is a skip, a changed recipe key or
input is refused naming it; input digests are cached; the dedup algorithms never import the orchestration.

In-process (LocalComm, workers=1): no process is started.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
from pathlib import Path

import pytest
from support.documents import stdlib_docs

from data_pipeline import markers
from data_pipeline.comm import LocalComm
from data_pipeline.markers import StageMismatch
from data_pipeline.stages import run as run_command
from data_pipeline.stages.execution import identify_inputs

REPO = Path(__file__).resolve().parents[1]
RECIPE = [
    "workers=1",
    "filters.profile=docs",
    "dedup.num_perm=32",
    "tokenizer.vocab_size=600",
    "shards.validation_fraction=0.1",
]


def pipeline_run(inputs: list[Path], out: Path, *overrides: str) -> None:
    """`pipeline run --input ... --output out --set ...` through the subcommand's own parser and run()."""
    parser = argparse.ArgumentParser()
    run_command.add_arguments(parser)
    argv = [a for p in inputs for a in ("--input", str(p))] + ["--output", str(out), "--quiet"]
    args = parser.parse_args(argv + [a for o in [*RECIPE, *overrides] for a in ("--set", o)])
    assert run_command.run(args) == 0


def rewrite(path: Path, data: bytes) -> None:
    """Write a new file under the same name (a new inode and a later mtime), as `pipeline demo-corpus` does."""
    stat = path.stat()
    path.unlink()
    path.write_bytes(data)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))


def outputs_state(out: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every output file outside .stages/: equal only if nothing was rewritten."""
    files = [p for p in out.rglob("*") if p.is_file() and ".stages" not in p.parts and p.name != "manifest.json"]
    return {str(p.relative_to(out)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in files}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two jsonl inputs of standard-library docstrings, with an exact copy across them."""
    folder = tmp_path_factory.mktemp("corpus")
    docs = stdlib_docs(60)
    halves = [docs[:30], docs[30:] + docs[:1]]
    paths = [folder / f"part{k}.jsonl" for k in range(2)]
    for path, half in zip(paths, halves, strict=True):
        path.write_text("".join(json.dumps({"id": f"{path.stem}-{i}", "text": t}) + "\n" for i, t in enumerate(half)))
    return paths


@pytest.fixture()
def done(corpus: list[Path], tmp_path: Path) -> tuple[list[Path], Path]:
    """A complete `pipeline run` output over copies of the corpus (the tests change the copies)."""
    inputs = []
    for path in corpus:
        inputs.append(tmp_path / path.name)
        inputs[-1].write_bytes(path.read_bytes())
    pipeline_run(inputs, tmp_path / "out")
    return inputs, tmp_path / "out"


def test_a_corpus_rewritten_byte_for_byte_is_a_skip(done: tuple[list[Path], Path]) -> None:
    inputs, out = done
    before = outputs_state(out)
    marker = markers.marker_path(out, "dedup").read_bytes()
    stats = json.loads((out / "stats.json").read_text())
    for path in inputs:
        rewrite(path, path.read_bytes())
    pipeline_run(inputs, out)
    assert outputs_state(out) == before  # no kept part, shard, tokenizer or stats file was written again
    assert markers.marker_path(out, "dedup").read_bytes() == marker
    assert json.loads((out / "stats.json").read_text()) == stats and stats["input_docs"] == 61


def test_changing_one_recipe_key_is_refused_naming_it(done: tuple[list[Path], Path]) -> None:
    inputs, out = done
    before = outputs_state(out)
    with pytest.raises(StageMismatch) as refused:
        pipeline_run(inputs, out, "filters.stop_words=false")
    message = str(refused.value)
    assert "(filters.stop_words: True -> False)" in message and "use a new --output folder" in message
    assert outputs_state(out) == before


def test_changing_one_inputs_content_is_refused_naming_it(done: tuple[list[Path], Path]) -> None:
    inputs, out = done
    data = bytearray(inputs[1].read_bytes())
    data[data.index(b"the")] = ord("T")  # the same size, other content
    rewrite(inputs[1], bytes(data))
    with pytest.raises(StageMismatch) as refused:
        pipeline_run(inputs, out)
    message = str(refused.value)
    assert f"(input {inputs[1]}: content changed at the same size (modified " in message
    assert str(inputs[0]) not in message  # the unchanged input is not named
    rewrite(inputs[1], bytes(data) + b"\n")
    with pytest.raises(StageMismatch, match=rf"input {inputs[1]}: size {len(data)} -> {len(data) + 1} bytes"):
        pipeline_run(inputs, out)


def test_an_unchanged_file_is_never_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = [tmp_path / f"f{i}.jsonl" for i in range(3)]
    for i, path in enumerate(paths):
        path.write_bytes(b"x" * (100 + i))
    read: list[str] = []
    digest = markers.file_digest
    monkeypatch.setattr(markers, "file_digest", lambda p: read.append(p) or digest(p))
    out, files = tmp_path / "out", [str(p) for p in paths]
    first = identify_inputs(LocalComm(), out, files)  # caches the digests in out/.stages/
    assert read == files and [first[f]["size"] for f in files] == [100, 101, 102]
    read.clear()
    assert identify_inputs(LocalComm(), out, files) == first and read == []
    rewrite(paths[1], paths[1].read_bytes())
    again = identify_inputs(LocalComm(), out, files)
    assert read == [str(paths[1])] and again[str(paths[1])]["xxh3"] == first[str(paths[1])]["xxh3"]


def test_a_refusal_lists_every_changed_key_and_input_and_nothing_else() -> None:
    entry = {"size": 10, "xxh3": "a", "mtime_ns": 0}
    old = markers.stage_identity("s", {"dedup": {"threshold": 0.8, "ngram": 5}}, {"a": entry, "b": entry})
    new = markers.stage_identity(
        "s", {"dedup": {"threshold": 0.7, "ngram": 5}}, {"a": {**entry, "mtime_ns": 5}, "c": entry}
    )
    assert markers.describe_changes(old, new) == [
        "dedup.threshold: 0.8 -> 0.7",
        "input b: not an input any more",
        "input c: new",
    ]
    assert markers.fingerprint(markers.stage_identity("s", {}, {"a": {**entry, "mtime_ns": 9}})) == (
        markers.fingerprint(markers.stage_identity("s", {}, {"a": entry}))
    )


def test_the_dedup_algorithms_never_import_the_orchestration() -> None:
    orchestration = ("data_pipeline.readers", "data_pipeline.tasks", "data_pipeline.stages", "data_pipeline.markers")
    for path in sorted((REPO / "data_pipeline" / "dedup").glob("*.py")):
        tree = ast.parse(path.read_text())
        imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in imported if m.startswith(orchestration)], path
