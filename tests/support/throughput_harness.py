"""benchmarks/train_throughput.py's parent side in the test process: parsing, skipping measured sides, killing a
hung one. Only the sides it measures need processes of their own (they still get them)."""

from __future__ import annotations

import importlib
import signal

import pytest

from support.launch import ROOT

HARNESS = ROOT / "benchmarks" / "train_throughput.py"


def harness_main(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """train_throughput.main(argv) on CPU in this process; the SIGTERM handler it installs is undone after the call."""
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.syspath_prepend(str(HARNESS.parent))
    harness = importlib.import_module("train_throughput")
    pytest_handler = signal.getsignal(signal.SIGTERM)
    try:
        return harness.main(argv)
    finally:
        signal.signal(signal.SIGTERM, pytest_handler)
