"""`pretrain generate` as a command on a real 2-rank checkpoint (sampling itself is tested in-process in
tests/unit/test_generate.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.greedy_reference import argmax_without_cache

from pretrain.generate import continuation

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_generate_command_on_a_two_rank_checkpoint(tmp_path_factory, tiny_dataset) -> None:
    import sentencepiece as spm
    from support.runs import trained_run

    from pretrain.interop.consolidated import inference_model, load_consolidated

    run_dir = trained_run(tmp_path_factory, tiny_dataset, "debug")
    cmd = [sys.executable, "-m", "pretrain.cli", "generate", str(run_dir), "--prompt", "The model"]
    cmd += ["--temperature", "0", "--max-new-tokens", "12", "--device", "cpu"]
    outs = [subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120) for _ in range(2)]
    assert outs[0].returncode == 0, outs[0].stderr[-2000:]
    assert outs[0].stdout == outs[1].stdout  # greedy: deterministic
    consolidated = load_consolidated(run_dir)
    model = inference_model(consolidated)
    sp = spm.SentencePieceProcessor(model_file=str(tiny_dataset / "tokenizer" / "spm.model"))
    eos = sp.eos_id()
    prompt = [eos, *sp.encode("The model")]
    want = continuation(argmax_without_cache(model, prompt, 12), len(prompt), eos)
    assert outs[0].stdout.rstrip("\n") == "The model" + sp.decode(want)


def test_generate_command_refuses_a_folder_without_checkpoints(tmp_path) -> None:
    cmd = [sys.executable, "-m", "pretrain.cli", "generate", str(tmp_path), "--prompt", "x"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "no complete checkpoint" in proc.stderr and str(tmp_path) in proc.stderr
