"""The dedup stage in-process: byte-range tasks of one large file give the same documents, and a run killed after
writing kept/ reruns to the same outputs (the command end to end is tests/integration/test_pipeline_dedup.py).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.corpus import near_copy, story

REPO = Path(__file__).resolve().parents[2]
PIPELINE = REPO / ".venv" / "bin" / "pipeline"


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    data = tmp_path / "corpus"
    data.mkdir()
    texts = [story(i) for i in range(12)]
    a = [{"id": f"doc-{i}", "text": texts[i]} for i in range(6)]
    (data / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in a) + '{"id": "broken", "text": \n')
    b = [{"id": f"doc-{i}", "text": texts[i]} for i in range(6, 10)]
    b += [{"id": "copy-of-3", "text": texts[3]}, {"id": "near-5", "text": near_copy(texts[5])}]
    b += [{"id": "lorem", "text": "Lorem ipsum dolor sit amet. " + texts[11]}, {"text": texts[10]}]
    (data / "b.jsonl.gz").write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in b).encode()))
    pq.write_table(pa.table({"id": ["doc-11", "empty"], "text": [story(111), "   "]}), data / "c.parquet")
    return data


def run_pipeline(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")}
    return subprocess.run([str(PIPELINE), *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def dedup(corpus: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_pipeline(
        "dedup", "--input", str(corpus), "--output", str(out), "--set", "workers=1", *extra, cwd=corpus.parent
    )


def output_hashes(out: Path) -> dict[str, str]:
    files = [p for p in sorted(out.rglob("*")) if p.is_file()]
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def read_parts(folder: Path) -> list[dict]:
    """kept/ or rejects/: the task parts concatenated in task order (= global input order)."""
    return [r for part in sorted(folder.glob("part-*.jsonl")) for r in read_jsonl(part)]


def same_outputs(a: Path, b: Path) -> None:
    """Every output byte-identical except timings.json (wall times) and stats.json's per-rank resources."""
    ha, hb = output_hashes(a), output_hashes(b)
    assert set(ha) == set(hb)
    assert {k for k in ha if ha[k] != hb[k]} - {"timings.json", "stats.json", ".stages/dedup.json"} == set()
    strip = [{k: v for k, v in json.loads((d / "stats.json").read_text()).items() if k != "resources"} for d in (a, b)]
    assert strip[0] == strip[1]


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
