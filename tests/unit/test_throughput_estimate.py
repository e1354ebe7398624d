"""The throughput harness's memory estimate: the largest preset on one H200 (the harness runs are
tests/integration/test_throughput_harness.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_largest_preset_estimate_on_one_h200() -> None:
    """The guide gpu_run.sh tries first: on 139 GiB and 128 GiB of host RAM, no 13B preset; 7B only on the GPU."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from train_throughput import largest_fitting

    from pretrain.presets import PRESETS

    on_gpu = [row[0] for row in largest_fitting("ds_configs/zero3_bf16.json", 139, 128, list(PRESETS))]
    offload = [row[0] for row in largest_fitting("ds_configs/zero3_offload.json", 139, 128, list(PRESETS))]
    assert on_gpu[0] in ("llama-7b", "gpt3-6.7b") and "gpt3-13b" not in on_gpu
    assert offload[0] == "gpt3-2.7b"  # offloaded states of a 6.7B model need ~120 GiB of host RAM
    assert on_gpu[-1] == offload[-1] == "debug"
