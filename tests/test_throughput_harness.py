"""The throughput harness runs the real ZeRO-3 bf16 trainer and the plain-PyTorch reference on CPU and prints
fields a script can parse: tokens/s, TFLOP/s consistent with the model's FLOPs per token, memory, the ratio."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "benchmarks" / "train_throughput.py"


def fields(stdout: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+): (\S+)$", stdout, re.MULTILINE))


@pytest.mark.slow
def test_harness_on_debug_preset_prints_parsable_finite_numbers() -> None:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(HARNESS), "--preset", "debug", "--steps", "3", "--warmup", "1", "--seq-len", "64"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = fields(proc.stdout)
    flops_per_token = float(re.search(r"model_flops_per_token: (\S+)", proc.stdout).group(1))
    from pretrain.config import load_config
    from pretrain.flops import flops_per_token as model_flops

    assert flops_per_token == pytest.approx(model_flops(load_config("debug", None, ["model.seq_len=64"]).model), 1e-3)
    for side in ("trainer", "reference"):
        tokens_per_s = float(got[f"{side}_tokens_per_s"])
        assert math.isfinite(tokens_per_s) and tokens_per_s > 0
        assert float(got[f"{side}_tflops"]) == pytest.approx(tokens_per_s * flops_per_token / 1e12, rel=1e-2)
        assert got[f"{side}_mfu"] == "n/a"  # CPU without --peak-tflops
        assert 0 < float(got[f"{side}_peak_mem_gib"]) < 64
        assert math.isfinite(float(got[f"{side}_final_loss"]))
    ratio = float(got["ratio_trainer_over_reference"])
    want = float(got["trainer_tokens_per_s"]) / float(got["reference_tokens_per_s"])
    assert math.isfinite(ratio) and ratio > 0 and ratio == pytest.approx(want, rel=1e-2)


def test_harness_rejects_bad_sizes() -> None:
    proc = subprocess.run(
        [sys.executable, str(HARNESS), "--steps", "0"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and "--steps must be >= 1" in proc.stderr
