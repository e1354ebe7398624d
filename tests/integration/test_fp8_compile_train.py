"""train.precision: fp8 and train.compile under the real trainer: 2 CPU ranks, ZeRO-3, activation checkpointing.

fp8 runs torchao's emulation (train.fp8_emulate: true; this CPU has no float8 matmuls): the same casts and scales
as on an H100, so the loss it reaches is the one a GPU run would. Compile goes through inductor on CPU; its cache
(pretrain/compile.py) makes every run after the first start faster.

Every launch takes its rank's share of the global batch as one micro-batch (support/batches.py): the same samples
and losses as the preset's 8 micro-batches of 2, with the same ZeRO-3 gathers and recomputation per pass, at an
eighth of the passes.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from support.batches import one_micro_batch
from support.launch import ROOT, run_train, step_losses

pytestmark = pytest.mark.slow
pytest.importorskip("torchao")


def _labelled(stdout: str, name: str) -> float:
    match = re.search(rf"^{name}: (\S+)$", stdout, re.MULTILINE)
    assert match, f"no '{name}: ...' line in {stdout[-2000:]!r}"
    return float(match.group(1))


# --------------------------------------------------------------------------- fp8

FP8_STEPS = 50


@pytest.fixture(scope="module")
def bf16_and_fp8_runs(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """The same 50 steps on the same data in bf16 and in emulated fp8: {precision: (run folder, stdout)}."""
    folder = tmp_path_factory.mktemp("fp8")
    runs = {}
    for name, sets in (("bf16", ()), ("fp8", ("train.precision=fp8", "train.fp8_emulate=true"))):
        base = ("train.precision=bf16", f"train.max_steps={FP8_STEPS}", one_micro_batch(2))
        proc = run_train(2, tiny_dataset, folder / name, (*base, *sets), timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = (folder / name, proc.stdout)
    return runs


def test_fp8_reaches_the_bf16_loss_within_one_and_a_half_percent(bf16_and_fp8_runs) -> None:
    bf16, fp8 = (step_losses(bf16_and_fp8_runs[name][0]) for name in ("bf16", "fp8"))
    assert bf16[FP8_STEPS] < bf16[1] - 0.8, f"bf16 went {bf16[1]} -> {bf16[FP8_STEPS]}: it did not train"
    assert fp8[FP8_STEPS] == pytest.approx(bf16[FP8_STEPS], rel=0.015)
    assert fp8 != bf16, "identical losses: the float8 casts did not run"
    val = {name: _labelled(stdout, "loss") for name, (_, stdout) in bf16_and_fp8_runs.items()}
    assert val["fp8"] == pytest.approx(val["bf16"], rel=0.015)


def test_fp8_run_names_its_float8_and_high_precision_layers(bf16_and_fp8_runs) -> None:
    stdout = bf16_and_fp8_runs["fp8"][1]
    line = next(line for line in stdout.splitlines() if line.startswith("fp8: "))
    assert line.startswith("fp8: 8 linear layers compute in float8 (blocks.0.attn.qkv, blocks.0.attn.proj,")
    assert line.endswith("high precision: wte, wpe, lm_head")


def test_fp8_checkpoint_serves_in_plain_precision(bf16_and_fp8_runs, tiny_dataset: Path) -> None:
    """`pretrain evaluate` rebuilds the model in fp32 without float8 from the fp8 run's checkpoint: its validation
    loss is the trainer's, so the checkpoint holds ordinary weights."""
    run_dir, stdout = bf16_and_fp8_runs["fp8"]
    cmd = [sys.executable, "-m", "pretrain.cli", "evaluate", str(run_dir), "--data", str(tiny_dataset)]
    proc = subprocess.run([*cmd, "--device", "cpu"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _labelled(proc.stdout, "loss") == pytest.approx(_labelled(stdout, "loss"), rel=0.02)


# --------------------------------------------------------------------------- compile

COMPILE_SETS = ("train.max_steps=20", "train.save_interval=10", "train.keep_last=5", one_micro_batch(2))


@pytest.fixture(scope="module")
def eager_and_compiled_runs(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("compile")
    for name, sets in (("eager", ()), ("compiled", ("train.compile=true",))):
        proc = run_train(2, tiny_dataset, folder / name, (*COMPILE_SETS, *sets), timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return {"eager": folder / "eager", "compiled": folder / "compiled"}


def test_compiled_blocks_give_the_eager_losses(eager_and_compiled_runs) -> None:
    eager, compiled = (step_losses(eager_and_compiled_runs[name]) for name in ("eager", "compiled"))
    assert sorted(compiled) == list(range(1, 21))
    for step in range(1, 21):
        assert compiled[step] == pytest.approx(eager[step], rel=1e-4), step


def test_resumed_compiled_run_continues_exactly(eager_and_compiled_runs, tiny_dataset: Path, tmp_path: Path) -> None:
    straight = eager_and_compiled_runs["compiled"]
    ckpt = straight / "checkpoints" / "step00000010"
    sets = (*COMPILE_SETS, "train.compile=true")
    # the fixtures' limit: it bounds a hang, and a launch that finds the JIT op cache stale rebuilds it for minutes
    proc = run_train(2, tiny_dataset, tmp_path / "resumed", sets, extra=("--resume", str(ckpt)), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resumed from {ckpt}" in proc.stdout
    want, got = step_losses(straight), step_losses(tmp_path / "resumed")
    assert sorted(got) == list(range(11, 21))
    assert [got[s] for s in range(11, 21)] == [want[s] for s in range(11, 21)]
