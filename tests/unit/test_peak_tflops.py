"""MFU's peak is read from the device name: an H100 PCIe (756 bf16 TFLOP/s dense) is not an SXM (989)."""

from __future__ import annotations

import pytest
import torch

from pretrain.metrics import peak_tflops


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
    ],
)
def test_peak_by_device_name(monkeypatch, name: str, peak: float) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: name)
    assert peak_tflops() == peak
    assert peak_tflops(500.0) == 500.0  # log.peak_tflops / --peak-tflops wins
