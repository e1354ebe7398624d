"""`pipeline dedup` on unpunctuated Chinese: copies are found only with character shingles (the shingle statistics are
tests/unit/test_shingle_scripts.py).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from support.corpus import plant_edits, script_text


@pytest.mark.slow
def test_pipeline_dedup_removes_unpunctuated_chinese_copies_only_with_character_shingles(tmp_path):
    """`dedup.shingle` reaches the stage: auto removes every one-letter copy, words (one "word" each) none."""
    rng = np.random.default_rng(3)
    originals = [script_text(rng, "chinese", 400, punctuate=False) for _ in range(8)]
    records = [{"id": f"doc-{i}", "text": t} for i, t in enumerate(originals)]
    records += [{"id": f"copy-{i}", "text": plant_edits(rng, t, "chinese", 1)} for i, t in enumerate(originals)]
    corpus = tmp_path / "zh.jsonl"
    corpus.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    removed = {}
    for mode in ("auto", "words"):
        out = tmp_path / mode
        cmd = [sys.executable, "-m", "data_pipeline.cli", "dedup", "--input", str(corpus), "--output", str(out)]
        cmd += ["--quiet", "--set", "filters.enabled=false", "--set", "workers=1", "--set", f"dedup.shingle={mode}"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        removed[mode] = json.loads((out / "stats.json").read_text())["dropped"].get("near_dup", 0)
    assert removed == {"auto": 8, "words": 0}
