"""The throughput harness and the one-command GPU run, on CPU.

benchmarks/train_throughput.py runs the real ZeRO-3 bf16 trainer lever by lever and the plain-PyTorch reference
and prints/writes fields a script can parse; benchmarks/gpu_run.sh strings every GPU measurement together. A GPU
session has minutes for it, so its rehearsal here must catch every typo: `--rehearse --check-only` runs each stage's
exact command line on CPU with the debug presets (configurations resolved, nothing measured).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from support.throughput_harness import HARNESS, harness_main

ROOT = Path(__file__).resolve().parents[2]
GPU_RUN = ROOT / "benchmarks" / "gpu_run.sh"
STAGES = {  # GPU_RUN_ONLY: the stages of that call, in order
    "first": ("env", "cuda_tests", "mfu", "fp8_compile", "llama", "largest_zero3"),
    "second": ("env", "two_gpu", "levers_mb2", "checkpointing_mb4", "largest_offload", "zero3_abort"),
}


def fields(stdout: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+): (\S+)$", stdout, re.MULTILINE))


@pytest.mark.slow
def test_harness_measures_a_lever_against_the_reference_and_writes_one_json_each(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each side in its own process, one JSON each, the lever's ratio to the reference; the lever (chunked CE on
    the preset's ZeRO-3 bf16 engine) does not change step 1's loss against plain PyTorch. One lever is enough:
    every lever is measured by the same code (measure_variant), and gpu_run's rehearsal resolves all of them."""
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    argv = ["--preset", "debug", "--steps", "3", "--warmup", "1", "--seq-len", "64"]
    argv += ["--variants", "chunked_ce", "--json-dir", str(tmp_path)]
    proc = subprocess.run(
        [sys.executable, str(HARNESS), *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = fields(proc.stdout)
    flops_per_token = float(re.search(r"model_flops_per_token: (\S+)", proc.stdout).group(1))
    from pretrain.config import load_config
    from pretrain.flops import flops_per_token as model_flops

    assert flops_per_token == pytest.approx(model_flops(load_config("debug", None, ["model.seq_len=64"]).model), 1e-3)
    sides = ("reference", "chunked_ce")
    for side in sides:
        assert got[f"{side}_status"] == "ok", proc.stdout[-3000:]
        tokens_per_s = float(got[f"{side}_tokens_per_s"])
        assert math.isfinite(tokens_per_s) and tokens_per_s > 0
        assert float(got[f"{side}_tflops"]) == pytest.approx(tokens_per_s * flops_per_token / 1e12, rel=1e-2)
        assert got[f"{side}_mfu"] == "n/a"  # CPU without --peak-tflops
        assert 0 < float(got[f"{side}_peak_mem_gib"]) < 64
        saved = json.loads((tmp_path / f"debug_s64_mb2__{side}.json").read_text())
        assert saved["status"] == "ok" and saved["tokens_per_s"] == pytest.approx(tokens_per_s, rel=1e-3)
        assert len(saved["step_seconds"]) == 3
    # The lever is numerics-neutral at step 1: same weights, same batch, bf16 everywhere (the reference autocasts)
    assert float(got["chunked_ce_first_loss"]) == pytest.approx(float(got["reference_first_loss"]), rel=1e-3), got
    chunked = json.loads((tmp_path / "debug_s64_mb2__chunked_ce.json").read_text())["context"]
    assert chunked["loss_chunk_tokens"] > 0 and chunked["zero_stage"] == 3
    assert chunked["environment"]["deepspeed"] and chunked["ratio_over_reference"] > 0
    want = float(got["chunked_ce_tokens_per_s"]) / float(got["reference_tokens_per_s"])
    assert float(got["ratio_chunked_ce_over_reference"]) == pytest.approx(want, rel=1e-2)

    # A rerun (what gpu_run.sh does after a side timed out) measures nothing that already has its JSON.
    capsys.readouterr()
    assert harness_main(argv, monkeypatch) == 0
    again = capsys.readouterr().out
    assert "== debug" not in again and fields(again)["chunked_ce_tokens_per_s"] == got["chunked_ce_tokens_per_s"]


@pytest.mark.parametrize("call", ["first", "second"])
def test_gpu_run_rehearsal_runs_every_stage_command(call: str, tmp_path: Path) -> None:
    """Each stage of gpu_run.sh's two calls, with its real arguments, on CPU: finished, a record per stage, the
    export bundle; a stage named in GPU_RUN_SKIP (what a rerun uses for stages that already came back) is skipped."""
    out, export = tmp_path / "gpu", tmp_path / "export"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "GPU_RUN_SKIP": "compile_mb2"}
    proc = subprocess.run(
        ["bash", str(GPU_RUN), "--rehearse", "--check-only", str(out), str(export)],
        cwd=ROOT,
        env={**env, "GPU_RUN_ONLY": call},
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = (out / "gpu_run.log").read_text()
    assert proc.returncode == 0, log[-4000:]
    records = {p.name.removeprefix("stage__").removesuffix(".json") for p in (out / "results").glob("stage__*.json")}
    assert records == set(STAGES[call])
    for stage in STAGES[call]:
        record = json.loads((out / "results" / f"stage__{stage}.json").read_text())
        assert (record["status"], record["rc"]) == ("finished", 0), (stage, log[-4000:])
    resolved = re.findall(r"^check-only: (.*) configurations resolve$", log, re.MULTILINE)
    if call == "first":
        assert resolved[:3] == [
            "debug ['reference', 'preset']",
            "debug ['reference', 'fp8', 'block_compile']",
            "llama-debug ['reference', 'preset', 'fp8', 'block_compile']",
        ]
        candidates = (out / "results" / "largest_zero3_candidates.txt").read_text().split()
        assert candidates[0] == "llama-debug" and "gpt2-124m" not in candidates  # largest first; 0.5 GiB excludes 124M
    else:
        assert "SKIP compile_mb2: named in GPU_RUN_SKIP" in log
        assert resolved[0].startswith("debug ['reference', 'ckpt_off', 'zero2'") and len(resolved) == 3
    assert sorted(p.name for p in export.iterdir()) == ["gpu_run.log", "results.tar.gz", "summary.json", "summary.md"]
    with tarfile.open(export / "results.tar.gz") as bundle:
        assert f"results/stage__{STAGES[call][-1]}.json" in bundle.getnames()
    assert "done in" in log and (out / "summary.md").read_text().startswith("| group | side |")


def test_a_side_past_its_time_limit_is_killed_and_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hung side costs its limit, not the run: killed, recorded as 'timeout', the harness returns 0."""
    argv = ["--preset", "debug", "--reference", "off", "--variants", "preset"]
    argv += ["--variant-timeout-s", "0.5", "--json-dir", str(tmp_path)]
    assert harness_main(argv, monkeypatch) == 0
    assert fields(capsys.readouterr().out)["preset_status"] == "timeout"
    saved = json.loads((tmp_path / "debug_s128_mb2__preset.json").read_text())
    assert saved["status"] == "timeout" and "killed" in saved["error"] and saved["tokens_per_s"] is None
