"""The config modules each import alone in a fresh interpreter, without a cycle and without the slow imports (the
in-process config tests, the example YAML through `pretrain plan` among them, are tests/unit/test_config.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "pretrain" / "configs" / "example.yaml"


@pytest.mark.parametrize(
    "module, absent",
    [
        ("pretrain.presets", ["pretrain.config", "torch"]),
        ("pretrain.config", ["torch"]),  # `pretrain plan` reports a bad config before the slow imports
        ("data_pipeline.config", ["torch", "pretrain"]),  # the pipeline never imports the trainer
    ],
)
def test_config_modules_import_alone_without_a_cycle(module, absent):
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] in {absent!r} or m in {absent!r}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]"]
