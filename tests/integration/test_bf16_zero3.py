"""A Llama-style model trained in bf16 under 2-rank ZeRO-3 is the model that `pretrain evaluate` serves.

The trainer builds the model under `deepspeed.zero.Init` in bf16; `pretrain evaluate` (like export and generate)
rebuilds it in fp32 outside it from the checkpoint. Anything that zero.Init or the engine silently changes at
build time (position tables computed in bf16 were such a thing) makes the two disagree, which the validation loss
of the same weights on the same windows shows.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support.datasets import TINY_VOCAB
from support.launch import ROOT, run_train

pytestmark = pytest.mark.slow

STEPS = 20


def bf16_json(folder: Path) -> Path:
    """The shipped CPU JSON with bf16 on, as a GPU run has it."""
    template = json.loads((ROOT / "ds_configs" / "zero3_cpu.json").read_text())
    template["bf16"] = {"enabled": True}
    path = folder / "bf16.json"
    path.write_text(json.dumps(template))
    return path


@pytest.fixture(scope="module")
def llama_bf16_run(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> tuple[Path, str]:
    """llama-debug (RoPE) at its own seq_len 128, bf16, 2 ranks, trained until positions matter; (run, stdout)."""
    folder = tmp_path_factory.mktemp("llama-bf16")
    sets = (
        "model.seq_len=128",
        f"train.max_steps={STEPS}",
        "train.micro_batch_size=2",
        "train.global_batch_tokens=1024",
        "optim.lr=3e-3",
        f"train.ds_config={bf16_json(folder)}",
    )
    proc = run_train(2, tiny_dataset, folder / "run", sets, extra=("--preset", "llama-debug"), timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder / "run", proc.stdout


def labelled(stdout: str, name: str) -> float:
    match = re.search(rf"^{name}: (\S+)$", stdout, re.MULTILINE)
    assert match, f"no '{name}: ...' line in {stdout[-2000:]!r}"
    return float(match.group(1))


def test_evaluate_reproduces_the_bf16_trainers_last_validation_loss(llama_bf16_run, tiny_dataset: Path) -> None:
    run_dir, train_stdout = llama_bf16_run
    trained = labelled(train_stdout, "loss")  # the trainer's end-of-run evaluation, bf16 under the engine
    cmd = [sys.executable, "-m", "pretrain.cli", "evaluate", str(run_dir), "--data", str(tiny_dataset)]
    proc = subprocess.run([*cmd, "--device", "cpu"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    served = labelled(proc.stdout, "loss")  # fp32, outside zero.Init, same 8 windows
    assert served == pytest.approx(trained, rel=0.02), f"trainer {trained}, pretrain evaluate {served}"
    assert trained < math.log(TINY_VOCAB) - 1.0, f"loss {trained}: it did not train, so the match proves little"


def test_bf16_run_reduces_and_accumulates_gradients_in_fp32(llama_bf16_run) -> None:
    """The shipped JSON's "auto" becomes fp32 in RUN/ds_config.json, and the running engine reports fp32 too."""
    run_dir, train_stdout = llama_bf16_run
    resolved = json.loads((run_dir / "ds_config.json").read_text())
    assert resolved["bf16"]["enabled"] is True
    assert resolved["communication_data_type"] == resolved["data_types"]["grad_accum_dtype"] == "fp32"
    assert "gradients: reduced across ranks in fp32, accumulated over micro-batches in fp32" in train_stdout
