"""`pipeline dedup` on unpunctuated Chinese: copies are found only with character shingles (the shingle statistics are
tests/unit/test_shingle_scripts.py).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

SCRIPTS = {  # letters, clause punctuation
    "chinese": (np.arange(0x4E00, 0x4E00 + 3000), "，。、"),
    "japanese": (
        np.r_[np.tile(np.arange(0x3041, 0x3094), 6), np.arange(0x30A1, 0x30F7), np.arange(0x4E00, 0x5600)],
        "、。",
    ),
    "thai": (np.r_[np.arange(0x0E01, 0x0E2F), np.arange(0x0E30, 0x0E3A), np.arange(0x0E40, 0x0E4D)], " "),
}


def script_text(rng: np.random.Generator, script: str, chars: int = 525, punctuate: bool = True) -> str:
    letters, marks = SCRIPTS[script]
    weights = 1.0 / np.arange(1, len(letters) + 1)
    out = [chr(c) for c in rng.choice(letters, chars, p=weights / weights.sum())]
    if punctuate:
        for position in sorted(rng.choice(chars, chars // 13, replace=False), reverse=True):
            out.insert(position, marks[rng.integers(len(marks))])
    return "".join(out)


def plant_edits(rng: np.random.Generator, text: str, script: str, edits: int) -> str:
    """`edits` letters replaced by a different letter of the same script."""
    letters = SCRIPTS[script][0]
    alphabet = set(map(chr, letters))
    chars = list(text)
    for i in rng.choice([i for i, c in enumerate(chars) if c in alphabet], edits, replace=False):
        chars[i] = chr(letters[(np.flatnonzero(letters == ord(chars[i]))[0] + 1 + rng.integers(50)) % len(letters)])
    return "".join(chars)


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
