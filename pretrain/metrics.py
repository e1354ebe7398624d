"""Training metrics: throughput, TFLOP/s and MFU per GPU, memory; written to RUN/metrics.csv and tensorboard.

MFU = achieved model FLOP/s per GPU / the GPU's peak dense bf16 FLOP/s. The model FLOPs per token come from
pretrain/flops.py (6N + attention, PaLM convention), so activation-checkpoint recomputation is *not* counted:
MFU measures useful work.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

import torch

# Peak dense bf16 tensor-core TFLOP/s per device (vendor datasheets, no sparsity).
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,
    "H800": 989.0,
    "GH200": 989.0,
    "A100": 312.0,
    "A800": 312.0,
    "A10G": 70.0,
    "L40S": 362.0,
    "L4": 121.0,
    "V100": 125.0,
    "MI300X": 1307.0,
    "MI250X": 383.0,
    "B200": 2250.0,
}

CSV_COLUMNS = [
    "step",
    "consumed_tokens",
    "loss",
    "perplexity",
    "lr",
    "grad_norm",
    "tokens_per_s",
    "tflops_per_gpu",
    "mfu",
    "mem_gib",
    "skipped_steps",
    "loss_spikes",
    "val_loss",
    "val_perplexity",
]


def peak_tflops(override: float | None = None) -> float | None:
    """The local device's peak bf16 TFLOP/s: `log.peak_tflops` if set, else looked up by name; None on CPU."""
    if override:
        return float(override)
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name().upper()
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if key in name:
            return PEAK_TFLOPS[key]
    return None


def perplexity(loss: float) -> float:
    """exp(loss), saturating instead of overflowing for diverged runs."""
    return math.exp(min(loss, 80.0)) if math.isfinite(loss) else float("nan")


def memory_gib() -> float:
    """Peak accelerator memory this process allocated (GiB); resident set size on CPU."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss / 2**30


def throughput(tokens: int, seconds: float, flops_per_token: float, world_size: int, peak: float | None) -> dict:
    """tokens/s (all ranks), model TFLOP/s per GPU and MFU (None without a peak)."""
    tokens_per_s = tokens / max(seconds, 1e-9)
    tflops = tokens_per_s * flops_per_token / world_size / 1e12
    return {"tokens_per_s": tokens_per_s, "tflops_per_gpu": tflops, "mfu": tflops / peak if peak else None}


class MetricsWriter:
    """Rank 0's sink: RUN/metrics.csv (appended across resumes) and DeepSpeed's monitor (tensorboard/csv)."""

    def __init__(self, run_dir: str | os.PathLike, monitor: Any = None, enabled: bool = True) -> None:
        self.enabled = enabled
        self.monitor = monitor
        self.path = Path(run_dir) / "metrics.csv"
        if enabled and not self.path.exists():
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(CSV_COLUMNS)

    def write(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([_fmt(values.get(c, step if c == "step" else None)) for c in CSV_COLUMNS])
        if self.monitor is not None and getattr(self.monitor, "enabled", False):
            events = [(f"Train/{k}", float(v), step) for k, v in values.items() if _is_number(v) and k != "step"]
            self.monitor.write_events(events)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.9g}"
    return str(v)


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, str]]:
    """RUN/metrics.csv as rows of strings (plotting and tests)."""
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))
