"""What an exit-code test checks (one `error:` line, status 2) and the checkpoint tags it feeds the commands.

A corrupt checkpoint here is a tag folder with a COMPLETE marker and a MANIFEST.sha256.json that no longer matches
its one file: no DeepSpeed training needed to make one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from infra.errors import EXIT_USER_ERROR


def assert_one_error_line(prefix: str, status: int, stderr: str, *named: str) -> None:
    """Exit 2, stderr is exactly one line `<prefix>...error: ...` naming every fragment in `named`."""
    lines = stderr.strip().splitlines()
    assert status == EXIT_USER_ERROR, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith(prefix) and "error: " in lines[0], stderr[-3000:]
    for fragment in named:
        assert fragment in lines[0], lines[0]


def saved_tag(run_dir: Path) -> Path:
    """RUN/checkpoints/step00000002 with a COMPLETE marker and a manifest that matches its one file."""
    tag = run_dir / "checkpoints" / "step00000002"
    tag.mkdir(parents=True)
    shard = tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    shard.write_bytes(b"saved bytes")
    recorded = {"size": shard.stat().st_size, "sha256": hashlib.sha256(b"saved bytes").hexdigest()}
    (tag / "MANIFEST.sha256.json").write_text(json.dumps({"files": {shard.name: recorded}}))
    (tag / "COMPLETE").write_text(json.dumps({"world_size": 1}))
    return tag


def corrupted_tag(run_dir: Path) -> Path:
    """A saved tag whose optimizer file no longer matches the sha256 its manifest recorded."""
    tag = saved_tag(run_dir)
    (tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"SAVED bytes")  # same size, one byte changed
    return tag
