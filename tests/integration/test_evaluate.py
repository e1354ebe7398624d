"""`pretrain evaluate`: validation loss/perplexity of a 2-rank ZeRO-3 checkpoint, checked against an independent
computation (DeepSpeed's own consolidation, windows cut by hand, the model's own loss) and the trainer's log."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def evaluate_cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pretrain.cli", "evaluate", *args, "--device", "cpu"]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)


def labelled(stdout: str, name: str) -> float:
    match = re.search(rf"^{name}: (\S+)$", stdout, re.MULTILINE)
    assert match, f"no '{name}: ...' line in {stdout!r}"
    return float(match.group(1))


@torch.no_grad()
def independent_loss(run_dir: Path, data: Path, samples: int) -> float:
    """Weights via DeepSpeed's API directly, windows [i*T, i*T+T+1) at evenly spaced i, mean of per-window loss."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from data_pipeline.shards import TokenStream
    from pretrain.interop.consolidated import run_config
    from pretrain.model import GPT

    cfg = run_config(run_dir)
    model = GPT(cfg.model)
    model.load_state_dict(get_fp32_state_dict_from_zero_checkpoint(str(run_dir / "checkpoints")), strict=False)
    model.eval()
    stream, T = TokenStream(data, "validation"), cfg.model.seq_len
    last = (stream.num_tokens - 1) // T - 1
    starts = np.linspace(0, last, min(samples, last + 1)).round().astype(int)
    losses = []
    for i in starts:
        window = torch.from_numpy(stream.window(int(i) * T, T + 1).astype(np.int64))[None]
        _, loss = model(window[:, :-1], window[:, 1:])
        losses.append(loss.item())
    return sum(losses) / len(losses)


def evaluate_in_process(capsys, *args: str) -> tuple[int, str, str]:
    from pretrain import cli

    rc = cli.main(["evaluate", *args, "--device", "cpu"])  # the entry point: errors become exit 2 there
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_evaluate_matches_independent_computation_and_training_log(tmp_path_factory, tiny_dataset, capsys) -> None:
    from support.runs import trained_run

    run_dir = trained_run(tmp_path_factory, tiny_dataset, "debug")
    proc = evaluate_cli(str(run_dir), "--data", str(tiny_dataset), "--samples", "6")  # the command as users run it
    assert proc.returncode == 0, proc.stderr[-2000:]
    loss, ppl = labelled(proc.stdout, "loss"), labelled(proc.stdout, "perplexity")
    assert labelled(proc.stdout, "samples") == 6
    assert loss == pytest.approx(independent_loss(run_dir, tiny_dataset, 6), abs=1e-4)
    assert ppl == pytest.approx(math.exp(loss), rel=1e-3)
    # defaults (data.path, data.val_samples=8) reproduce the trainer's end-of-run ZeRO-3 2-rank evaluation
    rc, out, err = evaluate_in_process(capsys, str(run_dir))
    assert rc == 0, err
    assert labelled(out, "samples") == 8
    assert f"{labelled(out, 'loss'):.3f}" in _val_losses(run_dir)


def _val_losses(run_dir: Path) -> set[str]:
    from pretrain.metrics import read_metrics

    return {f"{float(r['val_loss']):.3f}" for r in read_metrics(run_dir) if "val_loss" in r}


def test_evaluate_errors_are_one_line_and_actionable(tmp_path_factory, tiny_dataset, tmp_path, capsys) -> None:
    from support.runs import trained_run

    run_dir = trained_run(tmp_path_factory, tiny_dataset, "debug")
    rc, _, err = evaluate_in_process(capsys, str(run_dir), "--samples", "0")
    assert rc == 2 and "--samples must be >= 1" in err
    rc, _, err = evaluate_in_process(capsys, str(run_dir), "--data", str(tmp_path))
    assert rc == 2 and "manifest" in err and str(tmp_path) in err
