"""log.wandb: a Weights & Biases run next to metrics.csv, checked offline (no network, no account).

A 2-rank training with WANDB_MODE=offline must leave exactly one offline run (rank 0's) in RUN/wandb/, whose
history holds the same training loss as metrics.csv at every logged step, under the run folder's name with the
run's config. The run file is read back record by record (W&B's append-only log of protobuf records).
"""

from __future__ import annotations

import importlib.util

import pytest

from pretrain.config import ConfigError, load_config


def test_wandb_enabled_without_the_package_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match="log.wandb: is true but the wandb package is not installed: pip install"):
        load_config("debug", None, ["log.wandb=true"])
    assert load_config("debug", None, ["log.wandb=false"]).log.wandb is False  # off by default and when off
