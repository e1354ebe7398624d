"""The installed `pretrain` console script: `pretrain plan` refuses a --data folder without a manifest in one line,
exit 2 (everything else `plan` prints is checked in-process in tests/unit/test_plan.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PRETRAIN = shutil.which("pretrain", path=str(Path(sys.executable).parent)) or shutil.which("pretrain")

pytestmark = pytest.mark.skipif(PRETRAIN is None, reason="the `pretrain` console script is not installed")


def test_plan_data_without_manifest_exits_2_naming_it(tmp_path):
    result = subprocess.run(
        [PRETRAIN, "plan", "--preset", "debug", "--data", str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2 and f"--data: {tmp_path}" in result.stderr and "manifest.json" in result.stderr
