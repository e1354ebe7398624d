"""`pretrain plot` in a fresh interpreter never imports torch (the plots themselves are tests/unit/test_plot.py)."""

from __future__ import annotations

from pathlib import Path


def test_plot_reads_metrics_without_importing_torch():
    import subprocess
    import sys

    code = "import sys, pretrain.plot; print('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr
