"""The built-in corpus: deterministic, a few MB of Python's documentation, with duplicates dedup must find."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from data_pipeline.comm import LocalComm
from data_pipeline.config import load_recipe
from data_pipeline.demo_corpus import recipe_path, write_demo_corpus
from data_pipeline.stages.dedup import run_dedup

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo.jsonl"
    result = subprocess.run(
        [str(REPO / ".venv/bin/pipeline"), "demo-corpus", str(out)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.slow
def test_demo_corpus_shape_and_sources(demo: Path) -> None:
    docs = [json.loads(line) for line in demo.read_text().splitlines()]
    assert 1_000_000 < demo.stat().st_size < 20_000_000
    assert all(set(d) == {"id", "text", "source"} and d["text"].strip() for d in docs)
    assert len({d["id"] for d in docs}) == len(docs)
    kinds = {d["source"].split(":")[0] for d in docs}
    assert kinds == {"pydoc", "docstring"}
    ids = {d["id"] for d in docs}
    assert {
        "pydoc:assert",
        "docstring:collections.abc.MutableMapping",
        "docstring:io",
        "docstring:_pyio.BufferedRWPair",
    } <= ids
    assert not any(i.startswith(("docstring:antigravity", "docstring:this", "docstring:tkinter")) for i in ids)


@pytest.mark.slow
def test_demo_corpus_is_deterministic(demo: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.jsonl"
    write_demo_corpus(again)
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(demo.read_bytes()).digest()
    assert recipe_path(again).read_text() == recipe_path(demo).read_text()


@pytest.mark.slow
def test_dedup_finds_natural_duplicates_and_demo_recipe_keeps_most(demo: Path, tmp_path: Path, capsys) -> None:
    recipe = load_recipe(recipe_path(demo), ["workers=1"])
    stats = run_dedup(LocalComm(), [str(demo)], tmp_path / "out", recipe, quiet=False)
    assert stats["input_docs"] == stats["kept_docs"] + sum(stats["dropped"].values())
    assert stats["dropped"]["exact_dup"] > 50 and stats["dropped"]["near_dup"] > 5
    filtered = sum(n for reason, n in stats["dropped"].items() if reason.startswith("filter:"))
    assert filtered < 0.3 * stats["input_docs"]  # the demo recipe keeps the docstrings for the tokenizer
    clusters = [json.loads(line) for line in (tmp_path / "out/dedup/clusters.jsonl").read_text().splitlines()]
    near = [c for c in clusters if c["kind"] == "near"]
    assert len(near) >= 5 and all(0 <= s <= 1 for c in near for s in c["similarity"])
    assert sum(s >= recipe.dedup.threshold for c in near for s in c["similarity"]) >= 5
    assert any(c["kept"].startswith("docstring:_") or c["removed"][0].startswith("docstring:_") for c in near)
    report = capsys.readouterr().err
    assert report.count("near cluster: kept") == 3 and report.count("exact cluster: kept") == 3
