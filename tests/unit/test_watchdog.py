"""The collective watchdog's pieces in-process: heartbeat ages and the innermost collective frame it names (the real
hang is tests/integration/test_fault_collective.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pretrain.watchdog import blocked_operation, silent_ranks


def test_silent_ranks_reads_heartbeat_ages(tmp_path: Path) -> None:
    beats = tmp_path / "heartbeat"
    beats.mkdir()
    for rank in (0, 2):
        (beats / f"rank{rank}").touch()
    old = time.time() - 100
    os.utime(beats / "rank2", (old, old))
    assert silent_ranks(tmp_path, 3, older_than_s=10) == [1, 2]


def test_blocked_operation_names_the_innermost_collective_frame() -> None:
    """A frame stack that goes through torch.distributed is reported by that function's name."""
    import torch.distributed.distributed_c10d as c10d

    namespace: dict = {}
    exec(compile("import sys\ndef all_reduce():\n    return sys._getframe()\n", c10d.__file__, "exec"), namespace)
    frame = namespace["all_reduce"]()
    assert blocked_operation(frame).startswith("all_reduce (torch/distributed/distributed_c10d.py:3) called from ")
