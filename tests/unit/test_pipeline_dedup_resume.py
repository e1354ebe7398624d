"""The dedup stage in-process: byte-range tasks of one large file give the same documents, and a run killed after
writing kept/ reruns to the same outputs (the command end to end is tests/integration/test_pipeline_dedup.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.corpus import story
from support.pipeline_runs import planted_corpus, read_parts, same_outputs


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return planted_corpus(tmp_path)


def test_a_run_killed_after_writing_kept_reruns_to_the_same_outputs(corpus: Path, tmp_path: Path, monkeypatch) -> None:
    from data_pipeline.comm import LocalComm
    from data_pipeline.config import load_recipe
    from data_pipeline.stages import finish
    from data_pipeline.stages.dedup import run_dedup

    recipe = load_recipe(overrides=["workers=1"])
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    run_dedup(LocalComm(), [str(corpus)], clean, recipe, quiet=True)
    with monkeypatch.context() as patch:
        patch.setattr(finish, "write_stats", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt("killed")))
        with pytest.raises(KeyboardInterrupt):
            run_dedup(LocalComm(), [str(corpus)], crashed, recipe, quiet=True)
    assert (crashed / "kept" / "part-00000.jsonl").exists() and not (crashed / ".stages" / "dedup.json").exists()
    run_dedup(LocalComm(), [str(corpus)], crashed, recipe, quiet=True)
    same_outputs(clean, crashed)


def test_a_large_file_split_into_byte_ranges_gives_the_same_documents(tmp_path: Path) -> None:
    """Ranges cut mid-line: every line read once, ids and reject lines as if the file were read whole."""
    from data_pipeline.comm import LocalComm
    from data_pipeline.config import load_recipe
    from data_pipeline.stages.dedup import run_dedup

    data = tmp_path / "in"
    data.mkdir()
    texts = [story(i) for i in range(40)]
    lines = [json.dumps({"text": t}) for t in texts[:20]] + ["", "{broken"] + [json.dumps({"text": t}) for t in texts]
    (data / "big.jsonl").write_text("\n".join(lines) + "\n")
    whole, split = tmp_path / "whole", tmp_path / "split"
    base = ["workers=1", "dedup.num_perm=32"]
    run_dedup(LocalComm(), [str(data)], whole, load_recipe(overrides=base), quiet=True)
    stats = run_dedup(LocalComm(), [str(data)], split, load_recipe(overrides=[*base, "read.task_bytes=3000"]), True)
    assert stats["tasks"] > 10
    assert read_parts(split / "kept") == read_parts(whole / "kept") and len(read_parts(whole / "kept")) == 40
    assert read_parts(split / "rejects") == read_parts(whole / "rejects")
    assert [r["line"] for r in read_parts(whole / "rejects")] == [22]
    assert stats["dropped"] == {"bad_input:malformed_json": 1, "exact_dup": 20}
    assert (split / "dedup/clusters.jsonl").read_bytes() == (whole / "dedup/clusters.jsonl").read_bytes()
