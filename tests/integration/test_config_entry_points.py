"""The config modules and example YAMLs through fresh interpreters and the real entry point (the in-process config tests
are tests/unit/test_config.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pretrain.config import load_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "pretrain" / "configs" / "example.yaml"


# The one config mechanism (infra/config_schema.py): both halves read and check values alike.


def test_example_yaml_loads_through_the_real_entry_point():
    cfg = load_config(None, EXAMPLE)
    written = yaml.safe_load(EXAMPLE.read_text())
    assert cfg.preset == written["preset"]
    assert cfg.train.max_steps == written["train"]["max_steps"]
    assert cfg.log.peak_tflops == written["log"]["peak_tflops"]
    result = subprocess.run(
        [sys.executable, "-m", "pretrain.cli", "plan", "--config", str(EXAMPLE), "--world-size", "32"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert f"tokens per run   {cfg.train.tokens_per_run:,} ({written['train']['max_steps']:,} steps" in result.stdout


@pytest.mark.parametrize(
    "module, absent",
    [
        ("pretrain.presets", ["pretrain.config", "torch"]),
        ("pretrain.config", ["torch"]),  # `pretrain plan` reports a bad config before the slow imports
        ("data_pipeline.config", ["torch", "pretrain"]),  # the pipeline never imports the trainer
    ],
)
def test_config_modules_import_alone_without_a_cycle(module, absent):
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] in {absent!r} or m in {absent!r}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]"]
