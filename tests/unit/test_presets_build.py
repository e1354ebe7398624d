"""Every preset builds (on the meta device: shapes only, no memory) with the size flops.py and the papers say."""

from __future__ import annotations

import pytest
import torch

from pretrain.config import load_config
from pretrain.flops import count_params
from pretrain.model import GPT
from pretrain.presets import PRESETS, PUBLISHED_PARAMS


@pytest.mark.parametrize("name", PRESETS)
def test_preset_builds_with_counted_params(name: str) -> None:
    cfg = load_config(name).model
    with torch.device("meta"):
        model = GPT(cfg)
    built = sum(p.numel() for p in model.parameters())
    assert built == count_params(cfg)
    assert all(p.is_meta for p in model.parameters())
    if name in PUBLISHED_PARAMS:
        # the README's promise: within 2% of the published size (padded vocabulary included; GPT-3's are rounded)
        assert abs(built - PUBLISHED_PARAMS[name]) <= 0.02 * PUBLISHED_PARAMS[name], (built, PUBLISHED_PARAMS[name])


def test_every_published_size_has_a_preset() -> None:
    assert set(PUBLISHED_PARAMS) <= set(PRESETS)
