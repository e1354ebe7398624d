"""Run-folder state written by hand: another job's lock, a dataset manifest naming a tokenizer.

Lock staleness is tested with lock files like these (an old mtime, a dead pid), never by waiting.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from pretrain import run_lock

TOKENIZER = {"path": "tokenizer/spm.model", "sha256": "a" * 64, "vocab_size": 256}


def write_lock(run: Path, host: str, pid: int, age_s: float = 0.0, attempt: dict | None = None) -> Path:
    """A lock file as another job would have left it, its heartbeat `age_s` seconds old."""
    run.mkdir(parents=True, exist_ok=True)
    path = run / run_lock.LOCK
    started = "2026-01-01T00:00:00+00:00"
    holder = {"host": host, "pid": pid, "started": started, "token": "theirs", "attempt": attempt}
    path.write_text(json.dumps(holder))
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


def manifest(sha: str = TOKENIZER["sha256"]) -> dict:
    """A dataset manifest's vocab and tokenizer, the tokenizer's sha256 replaced by `sha`."""
    return {"vocab_size": 256, "tokenizer": {**TOKENIZER, "sha256": sha}}
