"""The throughput harness refuses bad sizes and unknown levers before it measures anything (its runs are
tests/integration/test_throughput_harness.py)."""

from __future__ import annotations

import pytest
from support.throughput_harness import harness_main


def test_harness_rejects_bad_sizes_and_unknown_levers(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit) as refused:
        harness_main(["--steps", "0"], monkeypatch)
    assert refused.value.code == 2 and "--steps must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:
        harness_main(["--variants", "preset,zero4"], monkeypatch)
    assert refused.value.code == 2 and "unknown variant(s) ['zero4']" in capsys.readouterr().err
